"""`source auto_convert.sh mm [SRC ...]` in a clean bash: exports, pre-conversion,
converted copies beside the sources, idempotence, and errors that return instead of
killing the shell."""
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One hook cache for the module: pre-converting msmm.models is the slow part."""
    return tmp_path_factory.mktemp("auto_convert_cache")


def _bash(script: str, tmp_path: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {"HOME": str(tmp_path / "home"), "PATH": f"{VENV_BIN}:/usr/bin:/bin",
           "PYTHONPATH": str(REPO), "MSMM_AUTO_CONVERT_CACHE": str(cache),
           "MSMM_DEVICE": "CPU"}
    return subprocess.run(["bash", "--norc", "--noprofile", "-c", script], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)


def test_source_prepares_the_environment(tmp_path, cache):
    src = tmp_path / "my_model"
    src.mkdir()
    (src / "net.py").write_text("import torch\n\ny = torch.ones(2).size(0)\n")
    (src / "train.sh").write_text("torchrun --nproc_per_node=2 net.py\n")
    done = _bash(f'''
        source {REPO}/auto_convert.sh mm my_model; echo "rc=$?"
        echo "flag=$MSMM_AUTO_CONVERT glog=$GLOG_v"
        echo "pythonpath=$PYTHONPATH"
        source {REPO}/auto_convert.sh mm my_model; echo "rc=$?"
        echo "pythonpath=$PYTHONPATH"
        source {REPO}/auto_convert.sh mm missing_dir; echo "rc=$?"
        source {REPO}/auto_convert.sh train; echo "rc=$?"
        echo "still alive"
    ''', tmp_path, cache)
    out = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert [l for l in out if l.startswith("rc=")] == ["rc=0", "rc=0", "rc=1", "rc=2"]
    assert "flag=1 glog=2" in out
    assert out.count(f"pythonpath={REPO}") == 2  # not prepended twice
    assert out[-1] == "still alive"
    assert "missing_dir: no such file or directory" in done.stderr
    assert "usage: source auto_convert.sh mm" in done.stderr
    assert (tmp_path / "my_model_ms" / "net.py").read_text() == \
        "import adapters.torch as torch\n\ny = torch.ones(2).shape[0]\n"
    assert (tmp_path / "my_model_ms" / "train.sh").read_text().startswith("msrun ")
    assert (tmp_path / "my_model_ms" / "auto_convert_report.json").exists()
    cached = list(cache.glob("msmm.models*.py"))
    assert cached, "msmm.models was not pre-converted"


def test_partial_conversion_returns_nonzero(tmp_path, cache):
    (tmp_path / "opt.py").write_text("import torch\n\nopt = torch.optim.SGD([], lr=1)\n")
    done = _bash(f"source {REPO}/auto_convert.sh mm opt.py; echo rc=$?", tmp_path, cache)
    assert done.stdout.splitlines()[-1] == "rc=1"
    assert "opt_ms.py: constructs left unconverted" in done.stderr
    assert (tmp_path / "opt_ms.py").exists()
