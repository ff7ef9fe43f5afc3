"""`python -m auto_convert SRC DST`: tree conversion, copied files, the report, exit codes."""
import json
import subprocess
import sys
import textwrap

from auto_convert.__main__ import main
from auto_convert.report import REPORT_NAME, SUMMARY_NAME

CLEAN = textwrap.dedent('''\
    import torch


    def scores(q, k):
        return q @ k.transpose(-2, -1) / q.size(-1) ** 0.5
''')
PARTIAL = textwrap.dedent('''\
    import torch


    def step(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return opt
''')


def _tree(root, partial=False):
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "attention.py").write_text(CLEAN)
    if partial:
        (root / "pkg" / "train.py").write_text(PARTIAL)
    (root / "run.sh").write_text("torchrun --nproc_per_node=2 pkg/attention.py\n")
    (root / "config.json").write_text('{"hidden": 8}\n')
    return root


def test_tree_conversion_and_report(tmp_path, capsys):
    src, dst = _tree(tmp_path / "src"), tmp_path / "dst"
    assert main([str(src), str(dst)]) == 0
    assert (dst / "config.json").read_text() == '{"hidden": 8}\n'
    assert (dst / "pkg" / "attention.py").read_text().splitlines()[4] == \
        "    return q @ torch.transpose(k, -2, -1) / q.shape[-1] ** 0.5"
    assert (dst / "run.sh").read_text().startswith("msrun --local_worker_num=2")
    report = json.loads((dst / REPORT_NAME).read_text())
    assert report["complete"] is True
    assert report["totals"] == {"files": 3, "converted_files": 2, "changes": 6,
                                "unconverted": 0, "errors": 0}
    by_path = {f["path"]: f for f in report["files"]}
    assert by_path["config.json"]["kind"] == "copied"
    assert [(c["line"], c["rule"]) for c in by_path["pkg/attention.py"]["changes"]] == [
        (1, "import"), (5, "method.transpose"), (5, "method.size")]
    assert all(c["why"] for c in by_path["pkg/attention.py"]["changes"])
    summary = (dst / SUMMARY_NAME).read_text()
    assert "pkg/attention.py:5: method.transpose: k.transpose(-2, -1) -> " \
           "torch.transpose(k, -2, -1)" in summary
    assert summary == capsys.readouterr().out.split("auto_convert: report")[0]


def test_unconverted_constructs_fail_unless_allowed(tmp_path):
    src = _tree(tmp_path / "src", partial=True)
    assert main([str(src), str(tmp_path / "strict")]) == 1
    report = json.loads((tmp_path / "strict" / REPORT_NAME).read_text())
    (train,) = [f for f in report["files"] if f["path"] == "pkg/train.py"]
    assert train["unconverted"] == [{
        "line": 5, "construct": "torch.optim.SGD",
        "reason": "`torch.optim.SGD`: optimizers are MindSpore-native (msmm.train), "
                  "not part of the shim"}]
    assert report["complete"] is False
    assert main([str(src), str(tmp_path / "partial"), "--allow-partial"]) == 0
    assert (tmp_path / "partial" / "pkg" / "train.py").exists()


def test_module_entry_point_exit_code_and_single_file(tmp_path):
    src = _tree(tmp_path / "src", partial=True)
    cmd = [sys.executable, "-m", "auto_convert", str(src / "pkg" / "train.py"),
           str(tmp_path / "out.py")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "train.py:5: UNCONVERTED torch.optim.SGD" in done.stdout
    assert (tmp_path / "out.py").read_text().startswith("import adapters.torch as torch\n")
    assert (tmp_path / REPORT_NAME).exists()
    missing = subprocess.run([sys.executable, "-m", "auto_convert", str(tmp_path / "nope"),
                              str(tmp_path / "x")], capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
