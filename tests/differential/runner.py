"""Run sampled torch calls through auto_convert on MindSpore CPU and compare with torch.

For one API, its cases (tests/differential/sampling.py) are written as a torch-style module,
converted by ``auto_convert.convert_python`` and imported on adapters; each case runs in
PyNative and under ``mindspore.jit``, and, when torch's output carries a gradient, the
gradient of a random weighted sum of the outputs w.r.t. every float input (and a layer's
parameters) is compared too, in both modes. Values compare at rtol 1e-5 (absolute floor
1e-5 x the largest reference magnitude), integers and bools exactly, dtypes and shapes
exactly; random cases by shape and dtype only.

Each mode of each API ends in one word: ``ok``, ``differs`` (values, dtype or shape),
``kernel`` (no CPU kernel), ``error`` (any other exception, e.g. a TypeError), or
``reported`` (auto_convert reports the call at conversion time); the first failure's
message is kept. The case on a view (a slice as receiver; for an in-place method, a view
taken before the write, which torch's write reaches) is kept apart, in ``views``.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
import torch

from auto_convert import convert_python
from auto_convert.rules import API_STATUS_WHY
from tests.differential.sampling import INPUTS, Case, cases

MODES = ("pynative", "jit", "grad")
RTOL = 1e-5
_KERNEL = re.compile(r"unregistered|not supported on this device|support Ascend only|SetOperatorInfo|"
                     r"no kernel|kernel.*not (found|support)|Unsupported op|CPU.*not support", re.I)
# MindSpore caches compiled graphs by id() of the callable: compiled callables live on.
_COMPILED: list = []
_HEADER = "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"


@dataclasses.dataclass
class Outcome:
    """What the tester saw for one API: per mode a word and the first failure's message."""

    api: str
    cases: int = 0
    modes: Dict[str, str] = dataclasses.field(default_factory=lambda: {m: "ok" for m in MODES})
    message: str = ""
    rewritten: bool = False
    views: str = "n/a"  # the view case, in every mode: ok, or the first failure's word

    @property
    def works(self) -> bool:
        return self.cases > 0 and all(v in ("ok", "n/a") for v in self.modes.values())

    def fail(self, mode: str, word: str, message: str) -> None:
        if self.modes[mode] in ("ok", "n/a"):
            self.modes[mode] = word
            if not self.message:
                self.message = f"{mode}: {_short(message)}"

    def to_json(self) -> dict:
        return {"cases": self.cases, **self.modes, "views": self.views, "rewritten": self.rewritten,
                "message": self.message}


def _short(message: str) -> str:
    line = next((ln.strip() for ln in str(message).splitlines() if ln.strip()), "")
    return line if len(line) <= 160 else line[:157] + "..."


def _classify(error: BaseException) -> Tuple[str, str]:
    """(word, message): the word from the whole error text, the message from its first line."""
    text = str(error)
    if isinstance(error, AssertionError):
        return "differs", text
    first = next((line.strip() for line in text.splitlines() if line.strip().lstrip("-")), "")
    return ("kernel" if _KERNEL.search(text) else "error"), f"{type(error).__name__}: {first}"


def module_source(api_cases: Sequence[Case]) -> Tuple[str, List[Tuple[int, int]]]:
    """The torch-style module of the cases, and each case's (first, last) line."""
    lines = _HEADER.splitlines()
    spans = []
    for k, case in enumerate(api_cases):
        lines += ["", ""]
        if case.prelude:
            lines += [*case.prelude, "", ""]
        if case.ctor:
            lines += [f"def build_{k}():", f"    return {case.ctor}", "", ""]
        params = (["layer"] if case.ctor else []) + list(case.inputs)
        first = len(lines) + 1
        lines += [f"def case_{k}({', '.join(params)}):"] + [f"    {line}" for line in case.body]
        spans.append((first, len(lines)))
    return "\n".join(lines) + "\n", spans


def _load(path: Path, source: str, name: str):
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the graph compiler resolves globals through sys.modules
    spec.loader.exec_module(module)
    return module


# ---- values --------------------------------------------------------------------------------
def _flat(value) -> list:
    return list(value) if isinstance(value, (tuple, list)) else [value]


def _dtype(value) -> str:
    return str(value).replace("torch.", "").lower().replace("bool_", "bool")


def _compare(what: str, got, want, random: bool) -> None:
    if isinstance(want, torch.Tensor):
        assert isinstance(got, ms.Tensor), f"{what}: {type(got).__name__}, torch gives a Tensor"
        assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} != torch {tuple(want.shape)}"
        assert _dtype(got.dtype) == _dtype(want.dtype), f"{what}: dtype {got.dtype} != torch {want.dtype}"
        if random:
            return
        got_np = (got.astype(ms.float32) if got.dtype == ms.bfloat16 else got).asnumpy()
        want_np = want.detach().float().numpy() if want.dtype == torch.bfloat16 else want.detach().numpy()
        if want_np.dtype.kind in "biu":
            assert np.array_equal(got_np, want_np), f"{what}: values differ from torch's"
        else:
            floor = RTOL * float(np.abs(want_np).max()) if want_np.size else 0.0
            assert np.allclose(got_np, want_np, rtol=RTOL, atol=max(floor, 1e-6)), \
                f"{what}: values differ from torch's (max abs diff {np.abs(got_np - want_np).max():.3g})"
    elif isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), \
            f"{what}: {type(got).__name__} of {len(got) if isinstance(got, (tuple, list)) else 1}, torch gives {len(want)}"
        for k, (g, w) in enumerate(zip(got, want)):
            _compare(f"{what}[{k}]", g, w, random)
    elif isinstance(want, torch.dtype):
        assert _dtype(got) == _dtype(want), f"{what}: {got} != torch {want}"
    else:
        if isinstance(got, ms.Tensor) and got.ndim == 0:
            got = got.item()
        assert isinstance(got, (bool, int, float)) and np.isclose(got, want, rtol=RTOL), f"{what}: {got!r} != torch {want!r}"


# ---- running -------------------------------------------------------------------------------
def _torch_run(case: Case, fn, build) -> Tuple[object, Optional[list], list]:
    """torch's outputs, the gradients of the weighted output sum (inputs, then parameters),
    and the cotangents, for `case` (a layer built with seed 0)."""
    torch.manual_seed(0)
    layer = build() if build is not None else None
    args = [torch.tensor(INPUTS[n], requires_grad=case.grad and INPUTS[n].dtype == np.float32)
            for n in case.inputs]
    torch.manual_seed(0)
    out = fn(layer, *args) if layer is not None else fn(*args)
    if not case.grad:
        return out, None, []
    floats = [o for o in _flat(out) if isinstance(o, torch.Tensor) and o.is_floating_point()]
    rng = np.random.default_rng(1)
    cots = [rng.standard_normal(tuple(o.shape)).astype(np.float32) for o in floats]
    loss = sum((o.float() * torch.tensor(c)).sum() for o, c in zip(floats, cots))
    wrt = [a for a in args if a.requires_grad] + ([p for p in layer.parameters() if p.requires_grad]
                                                   if layer is not None else [])
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
    return out, grads, cots


def _ms_layer(build_ms, build_torch):
    torch.manual_seed(0)
    ref = build_torch()
    layer = build_ms()
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    return layer


def _check_case(outcome: Outcome, case: Case, k: int, ref_mod, ms_mod) -> None:
    ref_fn, ms_fn = getattr(ref_mod, f"case_{k}"), getattr(ms_mod, f"case_{k}")
    build = getattr(ref_mod, f"build_{k}", None)
    want, ref_grads, cots = _torch_run(case, ref_fn, build)
    inputs = [ms.Tensor(INPUTS[n]) for n in case.inputs]
    try:
        layer = _ms_layer(getattr(ms_mod, f"build_{k}"), build) if build is not None else None
    except Exception as error:  # noqa: BLE001 - the layer cannot be built: every mode fails
        for mode in MODES:
            outcome.fail(mode, *_classify(error))
        return

    def call(*args):
        return ms_fn(layer, *args) if layer is not None else ms_fn(*args)

    for mode in ("pynative", "jit"):
        run = ms.jit(call) if mode == "jit" else call
        _COMPILED.append(run)
        try:
            _compare(f"`{case.body[-1]}` output ({mode})", run(*inputs), want, case.random)
        except Exception as error:  # noqa: BLE001 - every failure is a finding
            outcome.fail(mode, *_classify(error))
            _reset_pynative()
    if ref_grads is None:
        if outcome.modes["grad"] == "ok" and outcome.cases == 0:
            outcome.modes["grad"] = "n/a"
        return
    if outcome.modes["grad"] == "n/a":
        outcome.modes["grad"] = "ok"
    _check_grads(outcome, case, call, inputs, layer, want, ref_grads, cots)


def _reset_pynative() -> None:
    """A gradient that fails half-way leaves PyNative's grad executor inside its graph, and
    every later op fails ("A leaf tensor that requires grad ... inplace"): close it."""
    from mindspore.graph.api import _pynative_executor

    _pynative_executor.clear_res()


def _check_grads(outcome, case, call, inputs, layer, want, ref_grads, cots) -> None:
    positions = tuple(i for i, n in enumerate(case.inputs) if INPUTS[n].dtype == np.float32)
    float_outs = [i for i, o in enumerate(_flat(want)) if isinstance(o, torch.Tensor) and o.is_floating_point()]
    n = len(inputs)

    def loss(*args):
        outs = call(*args[:n])
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        total = 0.0
        for j, cot in zip(float_outs, args[n:]):
            total = total + (outs[j].astype(ms.float32) * cot).sum()
        return total

    params = [p for p in layer.get_parameters() if p.requires_grad] if layer is not None else []
    grad_fn = ms.grad(loss, grad_position=positions if positions else None, weights=params or None)
    for mode in ("pynative", "jit"):
        run = ms.jit(grad_fn) if mode == "jit" else grad_fn
        _COMPILED.extend((loss, run))
        try:
            got = run(*inputs, *[ms.Tensor(c) for c in cots])
            if positions and params:
                got = _flat(got[0]) + _flat(got[1])
            got = _flat(got)
            assert len(got) == len(ref_grads), f"{len(got)} gradients, torch gives {len(ref_grads)}"
            for g, w in zip(got, ref_grads):
                _compare(f"gradient of `{case.body[-1]}` ({mode})", g, w, case.random)
        except Exception as error:  # noqa: BLE001
            outcome.fail("grad", *_classify(error))
            _reset_pynative()


def run_api(api: str, workdir: Path) -> Outcome:
    """Sample, convert and run `api`; the Outcome says what happened in each mode."""
    outcome = Outcome(api)
    api_cases = cases(api)
    outcome.cases = len(api_cases)
    if not api_cases:
        outcome.modes = {m: "n/a" for m in MODES}
        outcome.message = "not sampled: torch accepted none of the candidate calls"
        return outcome
    outcome.modes["grad"] = "n/a"
    source, spans = module_source(api_cases)
    converted, report = convert_python(source, f"{api}.py")
    outcome.rewritten = any(c.rule not in ("import",) for c in report.changes)
    blocking = [u for u in report.unconverted if not u.reason.startswith(API_STATUS_WHY)]
    slug = re.sub(r"\W", "_", api)
    ref_mod = _load(workdir / f"ref_{slug}.py", source, f"_differential_ref_{slug}")
    ms_mod = _load(workdir / f"ms_{slug}.py", converted, f"_differential_ms_{slug}")
    for k, case in enumerate(api_cases):
        first, last = spans[k]
        reported = [u for u in blocking if first <= u.line <= last]
        if reported:
            for mode in MODES:
                outcome.fail(mode, "reported", reported[0].reason)
            continue
        if case.view:
            seen = Outcome(api)
            _check_case(seen, case, k, ref_mod, ms_mod)
            failed = [w for w in seen.modes.values() if w not in ("ok", "n/a")]
            outcome.views = failed[0] if failed else "ok"
        else:
            _check_case(outcome, case, k, ref_mod, ms_mod)
    return outcome
