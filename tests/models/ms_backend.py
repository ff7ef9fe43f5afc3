"""Running ``msmm.models`` on MindSpore for the parity tests.

The model files are imported through the ``auto_convert`` import hook (``import torch``
bound to ``adapters.torch``) into a per-process cache directory. The real-torch modules of
the same names, which the torch tests import, are set aside while the hook imports and put
back afterwards, so both stacks live side by side in one pytest session:
``converted_models()`` hands back the MindSpore-bound modules by short name
(``ms.qwen2_vl.Qwen2VL``, ``ms.pretrained.from_pretrained``, ...). MindSpore's graph compiler
finds a function's globals through ``sys.modules[fn.__module__]``, so ``run`` puts the
converted modules back in ``sys.modules`` while it runs (``converted_in_sys_modules``).

``run(model, inputs, mode)`` computes loss, logits and the gradient of the loss w.r.t.
every trainable parameter with ``mindspore.value_and_grad``, in PyNative or compiled with
``mindspore.jit``, and returns numpy in the ``RunResult`` the torch side uses.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import mindspore
import numpy as np

from parity_utils import RunResult

MODES = ("pynative", "graph")
PACKAGE = "msmm.models"
MODULES = (
    "internvl", "llava", "lora", "pretrained", "quant", "qwen2_vl", "text",
    "text.decoder", "text.internlm2", "text.llama", "text.qwen2",
)

_converted: SimpleNamespace | None = None
_converted_sys_modules: Dict[str, object] = {}
# MindSpore caches parsed graphs by id() of the Python callable: a freed step function lets
# a later one at the same address pick up its stale graph, so compiled steps live on.
_COMPILED: list = []


def _package_modules() -> Dict[str, object]:
    return {k: m for k, m in sys.modules.items() if k == PACKAGE or k.startswith(PACKAGE + ".")}


@contextlib.contextmanager
def _swapped(modules: Dict[str, object]) -> Iterator[None]:
    """``modules`` in sys.modules (and as the parent package's attribute) for the block."""
    parent = sys.modules.get(PACKAGE.rpartition(".")[0])
    saved = _package_modules()
    for name in saved:
        del sys.modules[name]
    sys.modules.update(modules)
    if parent is not None and PACKAGE in modules:
        setattr(parent, PACKAGE.rpartition(".")[2], modules[PACKAGE])
    try:
        yield
    finally:
        for name in _package_modules():
            del sys.modules[name]
        sys.modules.update(saved)
        if parent is not None and PACKAGE in saved:
            setattr(parent, PACKAGE.rpartition(".")[2], saved[PACKAGE])


@contextlib.contextmanager
def converted_in_sys_modules() -> Iterator[None]:
    """The converted ``msmm.models`` modules in sys.modules for the block (graph compilation)."""
    converted_models()
    with _swapped(_converted_sys_modules):
        yield


def converted_models() -> SimpleNamespace:
    """The ``msmm.models`` modules converted onto adapters.torch (imported once per process).

    Attributes are the names of ``MODULES`` with dots as underscores (``text_decoder``),
    plus ``torch`` (the adapters.torch module the converted files bound)."""
    global _converted
    if _converted is not None:
        return _converted
    from auto_convert import hook

    cache = tempfile.mkdtemp(prefix="msmm_ms_models_")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    # a hook msmm.runtime installed earlier in this process (an earlier test started the
    # trainer) is set aside for the block: ours converts into its own cache, then it comes back
    finders = list(sys.meta_path)
    with _swapped({}):
        hook.uninstall()
        hook.install([PACKAGE], cache_dir=cache)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", hook.AutoConvertWarning)  # nothing may stay unconverted
                modules = {name: importlib.import_module(f"{PACKAGE}.{name}") for name in MODULES}
            _converted_sys_modules.update(_package_modules())
        finally:
            sys.meta_path[:] = finders
    bound = modules["text.decoder"].torch
    if not bound.__name__.startswith("adapters.torch"):
        raise RuntimeError(f"converted msmm.models bound {bound.__name__}, not adapters.torch")
    _converted = SimpleNamespace(torch=bound, **{k.replace(".", "_"): m for k, m in modules.items()})
    return _converted


def to_ms(batch: Mapping[str, np.ndarray]) -> Dict[str, mindspore.Tensor]:
    """numpy inputs -> MindSpore tensors with torch.tensor's dtypes (int64 ids, float32 pixels)."""
    return {k: converted_models().torch.tensor(v) for k, v in batch.items()}


def trainable(model) -> Tuple[Tuple[str, ...], Tuple[mindspore.Parameter, ...]]:
    names, params = zip(*((n, p) for n, p in model.named_parameters() if p.requires_grad))
    return names, params


def step_fn(model, keys: Sequence[str], mode: str) -> Callable:
    """(loss, logits), grads = step(*tensors in ``keys`` order): value_and_grad over every
    trainable parameter, compiled with mindspore.jit in graph mode."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    keys = tuple(keys)

    def forward(*tensors):
        kwargs = {}
        for key, tensor in zip(keys, tensors):
            kwargs[key] = tensor
        return model(**kwargs)

    _, params = trainable(model)
    step = mindspore.value_and_grad(forward, None, list(params), has_aux=True)
    if mode == "graph":
        step = mindspore.jit(step)
    _COMPILED.extend((forward, step))
    return step


def run(model, inputs: Mapping[str, np.ndarray], mode: str) -> RunResult:
    """Loss, logits and {parameter name: gradient} of ``model(**inputs)`` (which returns
    (loss, logits)) on MindSpore in ``mode``."""
    model.train()
    keys = tuple(inputs)
    tensors = to_ms(inputs)
    with converted_in_sys_modules():
        (loss, logits), grads = step_fn(model, keys, mode)(*(tensors[k] for k in keys))
    names, _ = trainable(model)
    return RunResult(
        logits.asnumpy(), float(loss.asnumpy()), {n: g.asnumpy() for n, g in zip(names, grads)}
    )


@dataclass
class Case:
    """One parity case: our MindSpore-bound ``model`` with its numpy ``inputs``, the HF
    reference and the real-torch run of the same model file. ``ms(mode)`` runs once per mode."""

    name: str
    model: object
    inputs: Dict[str, np.ndarray]
    hf: RunResult
    torch: Optional[RunResult] = None
    valid: Optional[np.ndarray] = None
    _runs: Dict[str, RunResult] = field(default_factory=dict, repr=False)

    def ms(self, mode: str) -> RunResult:
        if mode not in self._runs:
            self._runs[mode] = run(self.model, self.inputs, mode)
        return self._runs[mode]
