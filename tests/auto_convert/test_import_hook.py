"""The import hook: converts a registered package on first import into the disk cache,
loads modules from the converted files (what MindSpore's graph compiler reads), keeps
relative imports working, reuses the cache, and leaves real-torch imports untouched."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from auto_convert import hook

REPO = Path(__file__).resolve().parents[2]

PACKAGE = {
    "__init__.py": "from .layers import Net\n",
    "layers.py": textwrap.dedent('''\
        import torch
        from torch import nn

        from . import shapes


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                return shapes.swap(self.fc(x))
    '''),
    "shapes.py": textwrap.dedent('''\
        import torch


        def swap(x):
            return x.transpose(0, 1).contiguous()
    '''),
}

PROBE = textwrap.dedent('''\
    import inspect, json, os, sys
    if os.environ.get("USE_HOOK") == "1":
        from auto_convert import hook
        hook.install_from_env()
    import tinypkg
    from tinypkg import layers, shapes
    net = tinypkg.Net()
    y = net(layers.torch.ones(3, 4))
    print(json.dumps({
        "torch": layers.torch.__name__,
        "files": {m.__name__: m.__file__ for m in (tinypkg, layers, shapes)},
        "co_filename": shapes.swap.__code__.co_filename,
        "source": inspect.getsource(shapes.swap),
        "path": list(tinypkg.__path__),
        "shape": list(y.shape),
    }))
''')


def _write_package(root: Path) -> Path:
    pkg = root / "tinypkg"
    pkg.mkdir(parents=True)
    for name, text in PACKAGE.items():
        (pkg / name).write_text(text)
    (root / "probe.py").write_text(PROBE)
    return pkg


def _probe(root: Path, cache: Path, use_hook: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{root}:{REPO}", "USE_HOOK": "1" if use_hook else "0",
           hook.ENABLE_ENV: "1", hook.PACKAGES_ENV: "tinypkg", hook.CACHE_ENV: str(cache),
           "MSMM_DEVICE": "CPU", "GLOG_v": "3"}
    done = subprocess.run([sys.executable, str(root / "probe.py")], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _entries(cache: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in cache.glob("*.py")}


def test_hook_converts_caches_and_keeps_torch_imports(tmp_path):
    pkg = _write_package(tmp_path)
    cache = tmp_path / "cache"

    first = _probe(tmp_path, cache, use_hook=True)
    assert first["torch"] == "adapters.torch" and first["shape"] == [2, 3]
    for name, file in first["files"].items():
        assert Path(file).parent == cache and Path(file).name.startswith(name + ".")
    assert first["co_filename"] == first["files"]["tinypkg.shapes"]
    assert "torch.transpose(x, 0, 1)" in first["source"]  # what inspect (and jit) reads
    assert first["path"] == [str(pkg)]  # submodules still come from the source tree
    assert json.loads(Path(first["files"]["tinypkg.shapes"]).with_suffix(".json").read_text()
                      )["changes"][1]["rule"] == "method.transpose"
    entries = _entries(cache)
    assert len(entries) == 3

    (pkg / "shapes.py").write_text(PACKAGE["shapes.py"] + "# edited\n")
    second = _probe(tmp_path, cache, use_hook=True)
    after = _entries(cache)
    assert second["files"]["tinypkg.layers"] == first["files"]["tinypkg.layers"]
    assert second["files"]["tinypkg.shapes"] != first["files"]["tinypkg.shapes"]
    assert {k: v for k, v in after.items() if k in entries} == entries  # hits: not rewritten
    assert len(after) == 4

    plain = _probe(tmp_path, cache, use_hook=False)
    assert plain["torch"] == "torch" and plain["shape"] == [2, 3]
    assert plain["files"]["tinypkg.shapes"] == str(pkg / "shapes.py")


def test_preconvert_fills_the_cache(tmp_path, monkeypatch):
    _write_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    cache = tmp_path / "cache"
    run = hook.preconvert("tinypkg", cache)
    assert sorted(Path(f.path).name for f in run.files) == ["__init__.py", "layers.py",
                                                            "shapes.py"]
    assert run.complete and "tinypkg" not in sys.modules
    names = sorted(p.name.split(".")[:-2][-1] for p in cache.glob("*.py"))
    assert names == ["layers", "shapes", "tinypkg"]
    again = hook.preconvert("tinypkg", cache)
    assert [f.to_json() for f in again.files] == [f.to_json() for f in run.files]
    converted, report = hook.ConvertedCache(cache).get(
        "tinypkg.shapes", tmp_path / "tinypkg" / "shapes.py")
    assert report is None and converted.exists()  # a hit converts nothing


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(hook.CACHE_ENV, str(tmp_path / "c"))
    assert hook.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(hook.CACHE_ENV)
    assert hook.default_cache_dir() == Path.home() / ".cache" / "msmm" / "auto_convert"
