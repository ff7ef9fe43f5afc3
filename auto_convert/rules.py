"""Every rewrite the converter knows, as data, each with the reason it is needed.

Templates are Python expressions (or, for in-place methods, assignment statements)
with placeholders:

- ``{self}``  the receiver of a method call (``x`` in ``x.size(0)``),
- ``{0}``, ``{1}``...  positional arguments, ``{args}`` all arguments as written,
- ``{torch}``  the module-level name bound to ``adapters.torch`` in the converted file,
- ``{root}``  the expression before ``.cuda``/``.npu`` in ``torch.cuda.X(...)``.

Adding a rule is one line in one of the tables below; `docs/auto_convert.md` lists them.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

ADAPTERS = "adapters"  # the package that mirrors torch: `torch.nn` -> `adapters.torch.nn`


@dataclasses.dataclass(frozen=True)
class MethodRule:
    """`recv.method(args)` -> `template`, for calls with `arity` positional arguments.

    `arity=None` accepts any arguments (keywords included) and needs `{args}`.
    `statement=True` rules rewrite in-place methods and apply only when the call is a
    whole statement on a plain name (`x.masked_fill_(m, v)` -> `x = ...`).
    """

    method: str
    arity: int | None
    template: str
    why: str
    statement: bool = False

    @property
    def rule_id(self) -> str:
        return f"method.{self.method}"


_TRANSPOSE_WHY = "MindSpore graph mode reads Tensor.transpose(a, b) as a permutation of all axes"
_SIZE_WHY = "MindSpore's Tensor.size is the element count, not torch's size()"
_INPLACE_WHY = ("in-place Tensor methods have no CPU kernel in MindSpore and break graph mode; "
                "the functional form rebinds the name")
_NEW_WHY = ("MindSpore's Tensor.new_zeros/new_ones read a second positional argument as "
            "the dtype: torch's new_zeros(2, 3) fails")
_EXPAND_WHY = "MindSpore graph mode rejects Tensor.expand(*sizes)"
_DIM_KW_WHY = "MindSpore graph mode rejects the dim= keyword of Tensor.{0}; positional works"

# Functional ops with the same signature as their in-place method: `x.op_(a)` -> `torch.op(x, a)`.
INPLACE_FUNCTIONAL = ("masked_fill", "add", "sub", "mul", "div", "clamp", "pow", "exp",
                      "sqrt", "rsqrt", "neg", "abs", "tanh", "sigmoid", "scatter")

METHOD_RULES: tuple[MethodRule, ...] = (
    MethodRule("transpose", 2, "{torch}.transpose({self}, {0}, {1})", _TRANSPOSE_WHY),
    MethodRule("size", 0, "{self}.shape", _SIZE_WHY),
    MethodRule("size", 1, "{self}.shape[{0}]", _SIZE_WHY),
    MethodRule("type_as", 1, "{self}.to({0}.dtype)",
               "one dtype-cast spelling, to(dtype), which means the same on both"),
    MethodRule("contiguous", 0, "{self}",
               "contiguity changes memory layout only, never values; dropping it saves a copy"),
    MethodRule("new_zeros", None, "{torch}.zeros({args}, dtype={self}.dtype)", _NEW_WHY),
    MethodRule("new_ones", None, "{torch}.ones({args}, dtype={self}.dtype)", _NEW_WHY),
    MethodRule("std", None, "{torch}.std({self}, {args})",
               "MindSpore's Tensor.std defaults to the biased estimator and rejects unbiased="),
    MethodRule("var", None, "{torch}.var({self}, {args})",
               "MindSpore's Tensor.var defaults to the biased estimator and rejects unbiased="),
    MethodRule("expand", 1, "{torch}.broadcast_to({self}, {0})", _EXPAND_WHY),
    MethodRule("expand", None, "{torch}.broadcast_to({self}, ({args}))", _EXPAND_WHY),
    MethodRule("unflatten", 2, "{torch}.unflatten({self}, {0}, {1})",
               "MindSpore tensors have no unflatten method"),
    MethodRule("fill_", 1, "{self} = {torch}.full_like({self}, {0})", _INPLACE_WHY, statement=True),
    MethodRule("zero_", 0, "{self} = {torch}.zeros_like({self})", _INPLACE_WHY, statement=True),
    *(MethodRule(f"{op}_", None, f"{{self}} = {{torch}}.{op}({{self}}, {{args}})", _INPLACE_WHY,
                 statement=True) for op in INPLACE_FUNCTIONAL),
)

TENSOR_METHODS_SOURCE = Path(__file__).resolve().parents[1] / ADAPTERS / "torch" / "tensor_methods.py"


def _differing_tensor_methods() -> frozenset[str]:
    """The keys of ``DIFFERING`` in adapters/torch/tensor_methods.py, read without importing
    it (auto_convert loads no framework): the Tensor methods whose MindSpore meaning differs,
    each with a functional form there."""
    path = TENSOR_METHODS_SOURCE
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "DIFFERING":
            return frozenset(key.value for key in node.value.keys)
    raise RuntimeError(f"{path} has no DIFFERING table")


# `x.m(args)` -> `{torch}.tensor_methods.m(x, args)` for these methods when no rule above
# applies (another arity, keywords, an in-place method used as a value).
TENSOR_METHODS = _differing_tensor_methods()
TENSOR_METHOD_TEMPLATE = "{torch}.tensor_methods.{method}({self}, {args})"
TENSOR_METHOD_WHY = ("MindSpore's Tensor.{0} differs from torch's (adapters/torch/tensor_methods.py: "
                     "DIFFERING); the functional form behaves as torch in both modes")

# Methods with one torch form: any other arity is numpy's or MindSpore's own method.
TORCH_ARITY_ONLY = frozenset({"transpose"})

# In-place methods that adapters implements as they are (on Modules).
KEPT_INPLACE = frozenset({"requires_grad_", "zero_grad", "apply"})

# `x.chunk(n, dim=d)` -> `x.chunk(n, d)`: keyword moved to its position (index, keyword).
DIM_KEYWORD_METHODS: dict[str, int] = {"chunk": 1, "split": 1}

# Device placement: the receiver is returned as is (MindSpore places tensors by context).
DEVICE_METHODS = ("cuda", "npu", "cpu")
DEVICE_WHY = "device placement is set by the MindSpore context, not per tensor"
DEVICE_STRINGS = ("cuda", "npu", "cpu")  # `.to("cuda:0")` and friends

# `torch.cuda.X(...)` / `torch.npu.X(...)` -> template; `None` as a whole statement becomes `pass`.
ACCELERATOR_MODULES = ("cuda", "npu")
ACCELERATOR_CALLS: dict[str, tuple[str, str]] = {
    "is_available": ("False", "torch's CUDA/NPU runtime is absent; MindSpore picks the device"),
    "synchronize": ("None", "MindSpore synchronises through its own runtime"),
    "current_device": ("0", "one device per process under msrun"),
    "set_device": ("None", "the device is set by the MindSpore context (msrun sets the rank)"),
    "empty_cache": ("None", "MindSpore's memory pool is not flushed from model code"),
    "manual_seed": ("{root}.manual_seed({args})", "one seed for all devices in MindSpore"),
    "manual_seed_all": ("{root}.manual_seed({args})", "one seed for all devices in MindSpore"),
}

# References under these prefixes are left as they are and reported, with the reason.
UNSUPPORTED: dict[str, str] = {
    "torch.optim": "optimizers are MindSpore-native (msmm.train), not part of the shim",
    "torch.cuda": "no equivalent in MindSpore for this torch.cuda call",
    "torch.npu": "no equivalent in MindSpore for this torch.npu call",
    "torch.backends": "backend switches (cudnn, TF32) have no MindSpore meaning",
    "torch.compile": "graph compilation is mindspore.jit, applied by the trainer",
    "torch.jit": "TorchScript has no MindSpore equivalent; use mindspore.jit",
    "torch.fx": "torch.fx graphs have no MindSpore equivalent",
    "torch._dynamo": "torch._dynamo has no MindSpore equivalent",
    "torch.amp": "mixed precision is set by the MindSpore trainer (amp level), not autocast",
    "torch.autocast": "mixed precision is set by the MindSpore trainer (amp level), not autocast",
    "torch.utils.data": "data loading is framework-free (msmm.data)",
    "torch.distributed.fsdp": "FSDP has no shim; use MindSpore's parallel modes",
    "torch.library": "custom torch ops have no MindSpore equivalent",
}


def unsupported_reason(name: str) -> str | None:
    """Why `name` (a dotted torch name) is left and reported, if it is under UNSUPPORTED."""
    for prefix, why in UNSUPPORTED.items():
        if name == prefix or name.startswith(prefix + "."):
            return why
    return None


@dataclasses.dataclass(frozen=True)
class VendorClass:
    """A fused vendor module with an adapters equivalent `target` (under adapters.torch).

    Calls keep up to `positional` positional arguments and the `keywords`; `dropped`
    keywords are removed; `defaults` are added when absent (vendor default != torch's).
    """

    target: str
    why: str
    positional: int = 1
    keywords: tuple[str, ...] = ("eps", "elementwise_affine")
    dropped: tuple[str, ...] = ("device",)
    defaults: tuple[tuple[str, str], ...] = ()


_RMS_EPS = (("eps", "1e-5"),)  # apex and Transformer Engine default; torch's RMSNorm uses finfo.eps
_FUSED_WHY = "adapters dispatches {0} to the fused kernel of the device"

VENDOR_CLASSES: dict[str, VendorClass] = {
    **{f"apex.normalization.{m}{name}": VendorClass(
        "nn.RMSNorm", _FUSED_WHY.format("RMSNorm"), defaults=_RMS_EPS)
       for name in ("FusedRMSNorm", "MixedFusedRMSNorm") for m in ("", "fused_layer_norm.")},
    **{f"apex.normalization.{m}{name}": VendorClass(
        "nn.LayerNorm", _FUSED_WHY.format("LayerNorm"))
       for name in ("FusedLayerNorm", "MixedFusedLayerNorm") for m in ("", "fused_layer_norm.")},
    "transformer_engine.pytorch.RMSNorm": VendorClass(
        "nn.RMSNorm", _FUSED_WHY.format("RMSNorm"), keywords=("eps",), defaults=_RMS_EPS),
    "transformer_engine.pytorch.LayerNorm": VendorClass(
        "nn.LayerNorm", _FUSED_WHY.format("LayerNorm"), keywords=("eps",)),
    "transformer_engine.pytorch.Linear": VendorClass(
        "nn.Linear", _FUSED_WHY.format("Linear"), positional=2, keywords=("bias",)),
}

# Fused functions, rewritten by the handlers in `auto_convert.python` named here.
VENDOR_FUNCTIONS: dict[str, tuple[str, str]] = {
    "torch_npu.npu_rms_norm": (
        "rms_norm", "adapters' F.rms_norm dispatches to the fused RMSNorm kernel of the device"),
    "torch_npu.npu_fusion_attention": (
        "fusion_attention",
        "adapters' F.scaled_dot_product_attention dispatches to flash attention on Ascend"),
}

# `F.silu(a) * b` -> `{torch}.nn.functional.silu_mul(a, b)`: the product of an activation
# call (one positional argument) and another operand, as one adapters function.
FUSED_PRODUCTS: dict[str, tuple[str, str]] = {
    "torch.nn.functional.silu": (
        "nn.functional.silu_mul",
        "silu(a) * b is two MindSpore kernels forward and three backward; adapters' F.silu_mul "
        "is one fused kernel each way on CPU (silu(a) * b as written elsewhere)"),
}

# `x * torch.sigmoid(1.702 * x)` (HF's QuickGELUActivation, CLIP) -> `{torch}.nn.functional.quick_gelu(x)`
SIGMOIDS = ("torch.sigmoid", "torch.nn.functional.sigmoid")
QUICK_GELU_SCALE = "1.702"
QUICK_GELU = ("nn.functional.quick_gelu",
              "x * sigmoid(1.702 x) is three MindSpore kernels forward and more backward; adapters' "
              "F.quick_gelu is one fused kernel each way on CPU (the same composite elsewhere)")

# Top-level vendor packages: their imports are removed, their uses rewritten or reported.
VENDOR_PACKAGES = ("torch_npu", "apex", "transformer_engine")
VENDOR_WHY = "no adapters equivalent for this vendor API"

# Grad modes: values assigned or returned where gradients are off (`with torch.no_grad():`,
# `@torch.no_grad()`, `torch.inference_mode()`, `torch.set_grad_enabled(False)`) are wrapped,
# so that graph mode, where the context managers are no-ops, stops their gradients too.
GRAD_OFF = ("torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad",
            "torch.autograd.grad_mode.no_grad", "torch.autograd.grad_mode.inference_mode")
GRAD_ON = ("torch.enable_grad", "torch.autograd.enable_grad", "torch.autograd.grad_mode.enable_grad")
GRAD_SET = ("torch.set_grad_enabled", "torch.autograd.set_grad_enabled",
            "torch.autograd.grad_mode.set_grad_enabled")
NO_GRAD_FUNCTION = "autograd.grad_mode.no_grad_value"
NO_GRAD_WHY = ("MindSpore graph mode compiles grad-mode context managers as no-ops; "
               "no_grad_value stops the gradient of what the block computes in both modes")

# torch APIs the differential tester (tests/differential) ran on MindSpore CPU, with the
# outcome per mode; written by tools/api_coverage.py. Uses of an API that failed there are
# reported at conversion time with this reason first (the run exits 1 unless --allow-partial).
API_STATUS = Path(__file__).with_name("torch_api_status.json")
API_STATUS_WHY = "fails on MindSpore CPU in the differential tester"


# Method names of Python's own containers and strings (`lst.index(v)`, `s.split(",")`): a
# call of one cannot be told from a Tensor method's without types, so it is not reported.
PYTHON_METHODS = frozenset(n for t in (list, tuple, dict, set, str, bytes) for n in dir(t))


def failing_apis(apis: dict[str, dict]) -> dict[str, str]:
    """API -> why, for every API of the tester's outcomes `apis` that was sampled and did not
    work in all modes (and is not named like a Python container or string method)."""
    return {api: f"{API_STATUS_WHY} ({', '.join(f'{m} {e[m]}' for m in ('pynative', 'jit', 'grad'))}): "
                 f"{e['message']}"
            for api, e in apis.items()
            if e["cases"] and any(e[m] not in ("ok", "n/a") for m in ("pynative", "jit", "grad"))
            and not (api.startswith("Tensor.") and api[len("Tensor."):] in PYTHON_METHODS)}


FAILING_APIS = failing_apis(json.loads(API_STATUS.read_text())["apis"] if API_STATUS.exists() else {})
