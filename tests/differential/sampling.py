"""Sampled calls of each torch API, found by asking torch itself which spellings it accepts.

For an API, candidate calls are built from a pool of receivers/first arguments (float,
positive, int64, bool, square, image-shaped tensors) and of argument spellings (none,
positional and keyword dims, negative dims, a same-shape or broadcast second tensor,
masks, index tensors, shapes, weights); every candidate runs on real torch and the
first few that return comparable values (tensors, numbers, shapes, dtypes; no NaN) become
the API's cases. A case is random when two seeds give different values (compared by shape
and dtype only), and differentiable when torch's output carries a gradient. In-place
methods run on a copy (`out = x * 1; out.add_(y); return out`) and, as a second case,
with a view of it returned too (torch's view sees the write).
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from tests.differential.apis import resolve

MAX_CASES = 4


def _inputs() -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    f32 = np.float32
    return {
        "x": rng.standard_normal((2, 3, 4)).astype(f32),
        "y": rng.standard_normal((2, 3, 4)).astype(f32),
        "v": rng.standard_normal((4,)).astype(f32),  # broadcasts against x
        "p": (np.abs(rng.standard_normal((2, 3, 4))) + 0.5).astype(f32),  # > 0
        "u": rng.uniform(0.1, 0.9, (2, 3, 4)).astype(f32),  # in (0, 1)
        "i": rng.integers(0, 3, (2, 3, 4)).astype(np.int64),  # index into any dim of x
        "m": rng.random((2, 3, 4)) > 0.5,
        "s": (rng.standard_normal((3, 3)) + 3 * np.eye(3)).astype(f32),  # well conditioned
        "img": rng.standard_normal((1, 2, 5, 5)).astype(f32),  # N, C, H, W
        "w": rng.standard_normal((5, 4)).astype(f32),  # a Linear weight for x
        "b": rng.standard_normal((5,)).astype(f32),
        "k": rng.standard_normal((3, 2, 3, 3)).astype(f32),  # a Conv2d weight for img
        "t": rng.integers(0, 3, (2, 4)).astype(np.int64),  # class targets of x (classes on dim 1)
        "vol": rng.standard_normal((1, 2, 2, 4, 4)).astype(f32),  # N, C, D, H, W
        "j": np.array([1, 0], np.int64),  # a 1-D index into any dim of x
    }


INPUTS = _inputs()
RECEIVERS = ("x", "p", "u", "i", "m", "s", "img")
ARGS = ("", "y", "-1", "dim=-1", "v", "1", "0", "2", "0.5", "-2, -1", "0, 1", "-1, keepdim=True",
        "dim=1, keepdim=True", "1, i", "-1, i", "m, 0.0", "m", "i", "y, y", "y, v", "2, -1",
        "6, 4", "(4, 6)", "-1, 2, 2", "(2, 1, 1)", "w", "w, b", "k", "k, padding=1", "2, 2", "(4,)",
        "(4,), v, v", "t", "y, 0.5", "(0, 1)", "p=2, dim=-1", "2, dim=-1", "y, dim=-1", "1, 2",
        "dtype=torch.float64", "torch.int64", "1, 0, 2", "(1, 0, 2)", "y, alpha=2", "0.5, 2.0",
        "v, v", "m, y", "1, j", "-1, j", "2, 2, 3, 4", "(2, 2, 3, 4)", "2, -1, -1, -1")
NO_RECEIVER = ("2, 3", "(2, 3)", "4", "0, 5", "0, 1, 0.25", "[1.0, 2.0]", "(2, 3), 1.5", "[x, y]",
               "[x, y], -1", "[x, y], dim=1", "(x, y)", "x, y", "x, 2", "m, x, y", "s", "w", "v, v", "0, 1, 5",
               "x, y.transpose(1, 2)", "x @ y.transpose(1, 2), x, y.transpose(1, 2)")
LAYER_ARGS = ("", "4", "4, 5", "2, 3, 3", "2", "(4,)", "3", "dim=-1", "4, 2", "10, 4",
              "2, 3, 3, padding=1", "4, 4", "0.5", "1", "(2, 2)", "2, 3, 2")
LAYER_INPUTS = ("x", "img", "i", "x, y", "x, t", "p, u", "vol", "x, x, x")
# torch functions that change global state or need what the pool lacks: never probed
_SKIP = re.compile(r"^(set_|use_|manual_seed|seed|initial_seed|save|load|compile|export|autocast|"
                   r"vmap|cond|while_loop|from_file|fork|wait|get_|is_|register|enable|disable|"
                   r"import|sym_|cuda|xpu|mps|init_num_threads|typename|can_cast|promote_types|"
                   r"result_type|empty_strided|frombuffer|from_dlpack|asarray|chain_matmul)")


@dataclasses.dataclass(frozen=True)
class Case:
    """One sampled call. `body`: the lines of a torch-style function of `inputs`;
    `ctor`: for a layer, the expression that builds it (the body calls `layer`)."""

    api: str
    body: Tuple[str, ...]
    inputs: Tuple[str, ...]
    ctor: str = ""
    random: bool = False
    grad: bool = False
    view: bool = False  # the case runs on a view (see _with_view)
    prelude: Tuple[str, ...] = ()  # module-level lines before the case (a class it uses)


# Corpus APIs that the pools cannot reach (no tensor argument, a context manager, a base
# class): their spellings, as (body, prelude, ctor).
_DOUBLE = ("class Double(torch.nn.Module):", "    def forward(self, a):", "        return a * 2")
_SCALED = ("class Scaled(torch.nn.Module):", "    def __init__(self):", "        super().__init__()",
           "        self.scale = torch.nn.Parameter(torch.ones(4) * 0.5)", "    def forward(self, a):",
           "        return a * self.scale")
_SCALE_FUNCTION = ("class Scale(torch.autograd.Function):", "    @staticmethod", "    def forward(ctx, a, k):",
                   "        ctx.save_for_backward(a)", "        ctx.k = k", "        return a * a * k",
                   "    @staticmethod", "    def backward(ctx, grad):", "        (a,) = ctx.saved_tensors",
                   "        return grad * 2 * a * ctx.k, None")
EXTRA: Dict[str, Tuple[Tuple[Tuple[str, ...], Tuple[str, ...], str], ...]] = {
    "Tensor.device": ((("return torch.zeros(3, 4, device=x.device) + x[0]",), (), ""),),
    "Tensor.item": ((("return x[0, 1, 2].item()",), (), ""), (("return i.sum().item()",), (), "")),
    "torch.nn.Module": ((("return layer(x)",), _DOUBLE, "Double()"),),
    "torch.nn.Parameter": ((("return layer(x)",), _SCALED, "Scaled()"),),
    "torch.nn.parameter.Parameter": ((("return layer(x)",), tuple(
        line.replace("torch.nn.Parameter", "torch.nn.parameter.Parameter") for line in _SCALED), "Scaled()"),),
    "torch.nn.ModuleDict": ((("return layer['a'](x)",), (), "torch.nn.ModuleDict({'a': torch.nn.Linear(4, 5)})"),),
    "torch.autograd.Function": ((("return Scale.apply(x, 2.0)",), _SCALE_FUNCTION, ""),),
    "torch.utils.checkpoint.checkpoint": ((("return torch.utils.checkpoint.checkpoint(sined, x, use_reentrant=False)",),
                                           ("def sined(a):", "    return a.sin() * 2"), ""),),
    "torch.enable_grad": ((("with torch.no_grad():", "    with torch.enable_grad():", "        z = x * 2",
                            "return z * y"), (), ""),),
    "torch.is_grad_enabled": ((("return x * 2 if torch.is_grad_enabled() else x",), (), ""),),
    "torch.is_inference_mode_enabled": ((("return x if torch.is_inference_mode_enabled() else x * 2",), (), ""),),
    "torch.is_tensor": ((("return x * 2 if torch.is_tensor(x) else x",), (), ""),),
    "torch.get_default_dtype": ((("return x.to(torch.get_default_dtype())",), (), ""),),
    "torch.device": ((("return torch.zeros(3, 4, device=torch.device('cpu')) + x[0]",), (), ""),),
    "torch.einsum": ((("return torch.einsum('bij,bkj->bik', x, y)",), (), ""),
                     (("return torch.einsum('...j,j->...', x, v)",), (), "")),
    "torch.multinomial": ((("return torch.multinomial(u[0], 2)",), (), ""),),
    "torch.Tensor": ((("return x * 2 if isinstance(x, torch.Tensor) else x",), (), ""),),
    "torch.nn.ModuleList": ((("return layer[1](layer[0](x))",), (),
                             "torch.nn.ModuleList([torch.nn.Linear(4, 5), torch.nn.Linear(5, 3)])"),),
    "torch.no_grad": ((("with torch.no_grad():", "    z = x * 2", "return z * y"), (), ""),
                      (("return doubled(x) * y",),
                       ("@torch.no_grad()", "def doubled(a):", "    return a * 2"), "")),
    "torch.autocast": ((("with torch.autocast(device_type='cpu', enabled=False):", "    z = x * 2",
                         "return z"), (), ""),),
    "torch.finfo": ((("return torch.finfo(x.dtype).min",), (), ""),
                    (("return x.clamp(min=torch.finfo(x.dtype).min / 2)",), (), "")),
}


def _comparable(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dtype not in (torch.complex64, torch.complex128) and not value.is_sparse \
            and not (value.is_floating_point() and not bool(torch.isfinite(value).all()))
    if isinstance(value, (tuple, list)):
        return bool(value) and all(_comparable(v) for v in value)
    return isinstance(value, (bool, int, float, torch.dtype))


def _names(code: str) -> Tuple[str, ...]:
    return tuple(n for n in INPUTS if re.search(rf"\b{n}\b", code))


def _tensors(names, grad: bool) -> Dict[str, torch.Tensor]:
    return {n: torch.tensor(INPUTS[n], requires_grad=grad and INPUTS[n].dtype == np.float32)
            for n in names}


def _run(case: Case, seed: int, grad: bool):
    """torch's result of `case` (the layer, if any, first), with the given seed."""
    namespace = {"torch": torch, "F": torch.nn.functional, "nn": torch.nn}
    torch.manual_seed(seed)
    args = _tensors(case.inputs, grad)
    exec("".join(f"{line}\n" for line in case.prelude), namespace)  # noqa: S102
    if case.ctor:  # the same weights for every seed: only the call may be random
        torch.manual_seed(0)
        namespace["layer"] = eval(case.ctor, namespace)  # noqa: S307 - our own sampled code
        torch.manual_seed(seed)
    exec("def case(" + ", ".join(case.inputs) + "):\n" + "".join(f"    {line}\n" for line in case.body),
         namespace)  # noqa: S102
    return namespace["case"](**args)


def _outputs(value) -> list:
    return list(value) if isinstance(value, (tuple, list)) else [value]


def _differentiable(value) -> bool:
    """torch gives `value` a gradient (and can compute it)."""
    outs = [v for v in _outputs(value) if isinstance(v, torch.Tensor) and v.requires_grad]
    if not outs:
        return False
    try:
        sum(v.float().sum() for v in outs).backward()
    except (RuntimeError, NotImplementedError):  # e.g. "the derivative ... is not implemented"
        return False
    return True


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(p, q) for p, q in zip(a, b))
    return a == b


# results in uninitialized memory: any value (NaN included), compared by shape and dtype only
_UNINITIALIZED = re.compile(r"(^|\.)(new_)?empty(_like)?$")


def _accepted(case: Case) -> Optional[Case]:
    """`case` with its random/grad flags if torch runs it to comparable values, else None."""
    uninitialized = bool(_UNINITIALIZED.search(case.api))
    try:
        first = _run(case, 0, grad=False)
        if not uninitialized and not _comparable(first):
            return None
        second = _run(case, 1, grad=False)
        # nn.init fills run under no_grad in torch: there is no gradient to compare
        grad = _differentiable(_run(case, 0, grad=True)) and not case.api.startswith("torch.nn.init.")
    except Exception:  # noqa: BLE001 - any refusal by torch rejects the candidate
        return None
    return dataclasses.replace(case, random=uninitialized or not _same(first, second), grad=grad)


def _candidates(api: str) -> List:
    """Candidate cases in order of preference; a list inside is a group of alternatives
    (the first that torch accepts stands for the group)."""
    if api in EXTRA:
        return [Case(api, body, _names(" ".join(body)), ctor=ctor, prelude=prelude)
                for body, prelude, ctor in EXTRA[api]]
    obj = resolve(api)
    name = api.rsplit(".", 1)[-1]
    if api.startswith("Tensor."):
        if not callable(obj):
            return [Case(api, (f"return {r}.{name}",), (r,)) for r in RECEIVERS]
        if name.endswith("_") and not name.endswith("__"):
            cases = []
            for r in RECEIVERS:
                for a in ARGS:
                    copy = f"out = {r} * 1" if INPUTS[r].dtype == np.float32 else f"out = {r} + 0"
                    cases.append(Case(api, (copy, f"out.{name}({a})", "return out"),
                                      _names(r + " " + a)))
            return cases
        return [Case(api, (f"return {r}.{name}({a})",), _names(r + " " + a)) for r in RECEIVERS
                for a in ARGS]
    if inspect.isclass(obj) and issubclass(obj, torch.nn.Module):  # one input per constructor
        return [[Case(api, (f"return layer({i})",), _names(i), ctor=f"{api}({c})") for i in LAYER_INPUTS]
                for c in LAYER_ARGS]
    if not callable(obj):  # a dtype or constant: used as a cast target
        return [Case(api, (f"return x.to({api})",), ("x",))]
    if _SKIP.match(name):
        return []
    first = [f"{r}, {a}" if a else r for r in RECEIVERS for a in ARGS]
    return [Case(api, (f"return {api}({a})",), _names(a)) for a in (*first, *NO_RECEIVER)]


def _with_view(case: Case) -> Case:
    """The case on a view: an in-place method also returns a view taken before the write
    (torch's view sees it); another call takes a slice of `x` as its receiver."""
    if len(case.body) == 3:
        copy, call, _ = case.body
        return dataclasses.replace(case, body=(copy, "view = out[0]", call, "return out, view"), view=True)
    return dataclasses.replace(case, body=(re.sub(r"\bx\b", "x[:, 1:]", case.body[0]),), view=True)


@lru_cache(maxsize=None)
def cases(api: str) -> Tuple[Case, ...]:
    """Up to MAX_CASES sampled calls of `api` that torch accepts (none: not sampled)."""
    found: List[Case] = []
    for candidate in _candidates(api):
        alternatives = candidate if isinstance(candidate, list) else [candidate]
        accepted = next(filter(None, map(_accepted, alternatives)), None)
        if accepted is not None and accepted.body not in [c.body for c in found]:
            found.append(accepted)
            if len(found) == MAX_CASES:
                break
    if found and not found[0].ctor and "x" in found[0].inputs:
        viewed = _accepted(_with_view(found[0]))
        if viewed is not None:
            found = found[:MAX_CASES - 1] + [viewed]
    return tuple(found)
