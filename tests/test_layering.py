"""The import rules of docs/architecture.md: the framework-free layers (``msmm.checkpoint``,
``msmm.registry``, ``msmm.convert``, ``msmm.config``) load neither torch nor MindSpore (nor
the model files or the trainer), and no model file imports MindSpore or the adapters."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORK_FREE = ("msmm.checkpoint", "msmm.registry", "msmm.convert", "msmm.config")
FORBIDDEN = ("torch", "mindspore", "adapters", "auto_convert", "transformers", "msmm.models", "msmm.train",
             "msmm.runtime")

_PROBE = """
import importlib, pkgutil, sys
for name in {names!r}:
    module = importlib.import_module(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        importlib.import_module(name + "." + info.name)
loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in {forbidden!r}))
print(" ".join(loaded))
"""


def test_framework_free_layers_load_no_framework():
    """Every module of these packages imported in a fresh interpreter (the test session has
    MindSpore and torch loaded already)."""
    probe = _PROBE.format(names=FRAMEWORK_FREE, forbidden=FORBIDDEN)
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []


def _imports(path: str):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node.lineno, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            yield node.lineno, [node.module]


def _files(folder: str):
    for root, _, names in os.walk(os.path.join(REPO, folder)):
        yield from (os.path.join(root, n) for n in sorted(names) if n.endswith(".py"))


def test_model_files_import_no_mindspore():
    """msmm/models is torch-style code: ``torch`` (real, or adapters.torch through the hook),
    never mindspore or the adapters by name, not even lazily."""
    bad = [f"{os.path.relpath(path, REPO)}:{line}: {name}" for path in _files("msmm/models")
           for line, names in _imports(path) for name in names
           if name.split(".")[0] in ("mindspore", "adapters", "auto_convert")]
    assert bad == []


def test_checkpoint_registry_convert_import_no_framework_even_lazily():
    """Not even inside a function: torch checkpoints are read by ``checkpoint/torch_pickle.py``
    (a restricted unpickler of their zip), without torch."""
    files = [*_files("msmm/checkpoint"), *_files("msmm/convert"), os.path.join(REPO, "msmm", "registry.py")]
    bad = [f"{os.path.relpath(path, REPO)}:{line}: {name}" for path in files for line, names in _imports(path)
           for name in names if name.split(".")[0] in ("torch", "mindspore", "adapters", "transformers")]
    assert bad == []
