"""Contract-test harness: the same torch-style case on real torch and on adapters.torch.

Case files in ``tests/adapters/cases/`` are written in torch style against a global
name ``torch`` that they do not import: :func:`load_cases` executes each file twice,
once with ``torch`` bound to real PyTorch and once to ``adapters.torch``. The adapters
copy keeps the file's path, so ``mindspore.jit`` can read its source.

:func:`check` runs a function case, :func:`check_module` a module case, each in
PyNative or graph mode, and compares values, dtypes, shapes and gradients (of a random
weighted sum of the outputs) against torch. Every call is recorded in ``RECORDS`` for
the coverage table of ``docs/adapters.md``.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import mindspore as ms
import numpy as np
import torch as torch_ref

import adapters.torch as torch_ms

CASES_DIR = Path(__file__).parent / "cases"
MODES = ("pynative", "graph")
RECORDS: List[dict] = []
# MindSpore caches parsed graphs by id() of the Python object: a function compiled once and
# freed lets a later object at the same address pick up its stale graph (wrong arities,
# other functions' bodies after a few hundred compiles). Compiled callables live for the session.
_COMPILED: List[Callable] = []
_loaded: Dict[str, tuple] = {}


def load_cases(name: str) -> tuple:
    """``(reference_module, adapters_module)`` for ``cases/<name>.py``."""
    if name not in _loaded:
        path = CASES_DIR / f"{name}.py"
        code = compile(path.read_text(), str(path), "exec")
        pair = []
        for backend, tag in ((torch_ref, "ref"), (torch_ms, "ms")):
            module = types.ModuleType(f"adapters_cases_{name}_{tag}")
            module.__file__ = str(path)
            module.torch = backend
            sys.modules[module.__name__] = module  # the graph compiler resolves globals by module
            exec(code, module.__dict__)
            pair.append(module)
        _loaded[name] = tuple(pair)
    return _loaded[name]


def _is_float(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating)


def _flat(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _to_numpy(t) -> np.ndarray:
    if isinstance(t, torch_ref.Tensor):
        t = t.detach()
        return (t.float() if t.dtype == torch_ref.bfloat16 else t).numpy()
    if t.dtype == ms.bfloat16:
        t = t.astype(ms.float32)
    return t.asnumpy()


def _dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "").lower().replace("bool_", "bool")


def _compare(what: str, got, want, rtol: float, atol: float) -> None:
    got_np, want_np = _to_numpy(got), _to_numpy(want)
    assert got_np.shape == want_np.shape, f"{what}: shape {got_np.shape} != torch {want_np.shape}"
    if want_np.dtype == np.bool_ or np.issubdtype(want_np.dtype, np.integer):
        np.testing.assert_array_equal(got_np, want_np, err_msg=what)
    else:
        np.testing.assert_allclose(got_np, want_np, rtol=rtol, atol=atol, err_msg=what)


def _weighted_loss(fn: Callable, n_inputs: int) -> Callable:
    """``loss(*inputs, *cotangents) = sum_i sum(out_i * cot_i)`` (the VJP with ``cot``)."""

    def loss(*args):
        outs = fn(*args[:n_inputs])
        if not isinstance(outs, tuple):
            outs = (outs,)
        total = 0.0
        for out, cot in zip(outs, args[n_inputs:]):
            total = total + (out.astype(ms.float32) * cot).sum()
        return total

    return loss


def _cotangents(outs: list, seed: int) -> list:
    rng = np.random.default_rng(seed + 1000)
    return [rng.standard_normal(tuple(o.shape)).astype(np.float32) for o in outs]


def check(cases: str, name: str, inputs: Sequence, *, mode: str, grad: bool = True,
          rtol: float = 1e-5, atol: float = 1e-6, api: Optional[str] = None, seed: int = 0,
          check_dtype: bool = True, nondiff: Sequence[int] = ()) -> None:
    """Run function ``name`` of ``cases`` on both backends and compare.

    ``inputs``: numpy arrays (tensors) or Python values (passed as they are).
    Gradients are taken w.r.t. every floating-point array input when ``grad``, except the
    positions in ``nondiff`` (inputs torch cannot differentiate, e.g. a loss's class weight).
    """
    ref_mod, ms_mod = load_cases(cases)
    ref_fn, ms_fn = getattr(ref_mod, name), getattr(ms_mod, name)
    arrays = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray)]
    grad_pos = [i for i in arrays if _is_float(inputs[i]) and i not in nondiff] if grad else []

    ref_in = [torch_ref.tensor(x, requires_grad=i in grad_pos) if i in arrays else x
              for i, x in enumerate(inputs)]
    ref_out = _flat(ref_fn(*ref_in))
    ms_in = [ms.Tensor(x) if i in arrays else x for i, x in enumerate(inputs)]
    run = ms.jit(ms_fn) if mode == "graph" else ms_fn
    _COMPILED.append(run)
    ms_out = _flat(run(*ms_in))

    assert len(ms_out) == len(ref_out), f"{name}: {len(ms_out)} outputs, torch gives {len(ref_out)}"
    for k, (got, want) in enumerate(zip(ms_out, ref_out)):
        if check_dtype:
            assert _dtype_name(got) == _dtype_name(want), \
                f"{name} output {k}: dtype {got.dtype} != torch {want.dtype}"
        _compare(f"{name} output {k} ({mode})", got, want, rtol, atol)

    if grad_pos:
        cots = _cotangents(ref_out, seed)
        ref_loss = sum((o.float() * torch_ref.tensor(c)).sum() for o, c in zip(ref_out, cots))
        ref_grads = torch_ref.autograd.grad(ref_loss, [ref_in[i] for i in grad_pos], allow_unused=True)
        loss = _weighted_loss(ms_fn, len(inputs))
        grad_fn = ms.grad(loss, grad_position=tuple(grad_pos))
        if mode == "graph":
            grad_fn = ms.jit(grad_fn)
        _COMPILED.extend((loss, grad_fn))
        ms_grads = _flat(grad_fn(*ms_in, *[ms.Tensor(c) for c in cots]))
        for i, got, want in zip(grad_pos, ms_grads, ref_grads):
            want = torch_ref.zeros_like(ref_in[i]) if want is None else want
            _compare(f"{name} grad of input {i} ({mode})", got, want, rtol, atol)
    _record(api or f"{cases}.{name}", mode)


def check_function(fn: Callable, torch_fn: Callable, inputs: Sequence, mode: str, *,
                   wrt: Optional[Sequence[int]] = None, rtol: float = 1e-5, atol: float = 1e-5,
                   check_dtype: bool = True, seed: int = 7) -> None:
    """``fn`` (MindSpore / adapters) against ``torch_fn`` (real torch) on the same inputs.

    For a function that is not a case file's (a fused kernel, an adapters-only op beside its
    torch formula). ``inputs``: numpy arrays (tensors) or Python values passed as they are.
    Compares the value (shape, dtype unless ``check_dtype=False``, numbers in float64) and the
    gradients of ``sum(out * w)``, ``w`` random with ``seed``, w.r.t. the inputs at ``wrt``
    (default: every floating array; ``()``: value only). ``mode``: "pynative", or "graph" /
    "jit" for one ``mindspore.jit`` call of the value and gradients.
    """
    arrays = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray)]
    wrt = [i for i in arrays if _is_float(inputs[i])] if wrt is None else list(wrt)
    ref_in = [torch_ref.tensor(x, requires_grad=i in wrt) if i in arrays else x for i, x in enumerate(inputs)]
    want = torch_fn(*ref_in)
    want_np = _to_numpy(want)
    weight = np.random.default_rng(seed).standard_normal(want_np.shape)
    weight = weight.astype(np.float64 if want_np.dtype == np.float64 else np.float32)
    want_grads = []
    if wrt:
        ref_loss = (want.to(torch_ref.from_numpy(weight).dtype) * torch_ref.from_numpy(weight)).sum()
        grads = torch_ref.autograd.grad(ref_loss, [ref_in[i] for i in wrt], allow_unused=True)
        want_grads = [np.zeros_like(inputs[i]) if g is None else _to_numpy(g) for i, g in zip(wrt, grads)]

    ms_in = [ms.Tensor(x) if i in arrays else x for i, x in enumerate(inputs)]
    compiled = mode in ("graph", "jit")
    got_grads = []
    if wrt:
        w = ms.Tensor(weight)

        def loss(*args):
            out = fn(*args)
            return (out.astype(w.dtype) * w).sum(), out

        step = ms.value_and_grad(loss, grad_position=tuple(wrt), has_aux=True)
        step = ms.jit(step) if compiled else step
        _COMPILED.extend((loss, step))
        (_, got), grads = step(*ms_in)
        got = got[0] if isinstance(got, tuple) else got
        got_grads = [_to_numpy(g) for g in (grads if isinstance(grads, tuple) else (grads,))]
    else:
        run = ms.jit(fn) if compiled else fn
        _COMPILED.append(run)
        got = run(*ms_in)

    got_np = _to_numpy(got)
    assert got_np.shape == want_np.shape, f"output ({mode}): shape {got_np.shape} != torch {want_np.shape}"
    if check_dtype:
        assert got_np.dtype == want_np.dtype, f"output ({mode}): dtype {got_np.dtype} != torch {want_np.dtype}"
    np.testing.assert_allclose(got_np.astype(np.float64), want_np.astype(np.float64), rtol=rtol, atol=atol,
                               err_msg=f"output ({mode})")
    for i, g, w_ in zip(wrt, got_grads, want_grads):
        assert g.shape == w_.shape, f"gradient of input {i} ({mode}): shape {g.shape} != torch {w_.shape}"
        np.testing.assert_allclose(g.astype(np.float64), w_.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i} ({mode})")


def check_module(cases: str, builder: str, inputs: Sequence, *, mode: str, train: bool = False,
                 rtol: float = 1e-5, atol: float = 1e-6, api: Optional[str] = None,
                 seed: int = 0) -> None:
    """Build module ``builder()`` on both backends, copy torch's weights into the adapters
    module by name, and compare outputs and gradients w.r.t. inputs and parameters."""
    ref_mod, ms_mod = load_cases(cases)
    torch_ref.manual_seed(seed)
    ref_net = getattr(ref_mod, builder)().train(train)
    ms_net = getattr(ms_mod, builder)().train(train)

    ref_names = [n for n, _ in ref_net.named_parameters()]
    ms_names = [n for n, _ in ms_net.named_parameters()]
    assert ms_names == ref_names, f"{builder}: parameter names {ms_names} != torch {ref_names}"
    assert list(ms_net.state_dict()) == list(ref_net.state_dict()), f"{builder}: state_dict keys differ"
    ms_net.load_state_dict({k: v.detach().numpy() for k, v in ref_net.state_dict().items()})

    arrays = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray)]
    grad_pos = [i for i in arrays if _is_float(inputs[i])]
    ref_in = [torch_ref.tensor(x, requires_grad=i in grad_pos) if i in arrays else x
              for i, x in enumerate(inputs)]
    ref_out = _flat(ref_net(*ref_in))
    ms_in = [ms.Tensor(x) if i in arrays else x for i, x in enumerate(inputs)]
    run = ms.jit(ms_net) if mode == "graph" else ms_net
    _COMPILED.append(run)
    ms_out = _flat(run(*ms_in))
    for k, (got, want) in enumerate(zip(ms_out, ref_out)):
        assert _dtype_name(got) == _dtype_name(want), f"{builder} output {k}: dtype {got.dtype} != {want.dtype}"
        _compare(f"{builder} output {k} ({mode})", got, want, rtol, atol)

    ref_params = [p for p in ref_net.parameters() if p.requires_grad]
    ms_params = [p for p in ms_net.parameters() if p.requires_grad]
    if ref_params or grad_pos:
        cots = _cotangents(ref_out, seed)
        ref_loss = sum((o.float() * torch_ref.tensor(c)).sum() for o, c in zip(ref_out, cots))
        wrt = [ref_in[i] for i in grad_pos] + ref_params
        ref_grads = torch_ref.autograd.grad(ref_loss, wrt, allow_unused=True)
        loss = _weighted_loss(ms_net, len(inputs))
        grad_fn = ms.grad(loss, grad_position=tuple(grad_pos) if grad_pos else None,
                          weights=ms_params if ms_params else None)
        if mode == "graph":
            grad_fn = ms.jit(grad_fn)
        _COMPILED.extend((loss, grad_fn))
        got = grad_fn(*ms_in, *[ms.Tensor(c) for c in cots])
        if grad_pos and ms_params:
            ms_grads = _flat(got[0]) + _flat(got[1])
        else:
            ms_grads = _flat(got)
        names = [f"input {i}" for i in grad_pos] + [n for n, p in ref_net.named_parameters() if p.requires_grad]
        for label, g, want in zip(names, ms_grads, ref_grads):
            want = torch_ref.zeros_like(wrt[names.index(label)]) if want is None else want
            _compare(f"{builder} grad of {label} ({mode})", g, want, rtol, atol)
    _record(api or f"{cases}.{builder}", mode)


def _record(api: str, mode: str) -> None:
    RECORDS.append({"api": api, "mode": mode})


def record(api: str, mode: str) -> None:
    """Record an API compared against torch by a test of its own (not via check/check_module),
    e.g. eager-only ``nn.init`` functions."""
    _record(api, mode)


def dump_records(path: str) -> None:
    Path(path).write_text(json.dumps(RECORDS, indent=1))


def randn(*shape: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)

