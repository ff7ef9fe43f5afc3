"""Elementwise math, comparisons, reductions and products of adapters.torch.

Most ops are ``mindspore.mint`` kernels, which serve CPU and Ascend alike. Where
``mint`` has no CPU kernel (argmax, logsumexp, var, cumsum, topk, sort, mm, einsum,
outer, tril, baddbmm), the CPU entry of the dispatch table uses a legacy
``mindspore.ops`` kernel or a composition, and the Ascend entry the ``mint`` kernel.
Reductions returning values and indices give plain ``(values, indices)`` tuples: a
namedtuple does not survive ``mindspore.jit`` with gradients.
"""
from __future__ import annotations

import builtins
import math
from typing import Optional, Sequence, Union

import mindspore
from mindspore import mint, ops
from mindspore.ops import constexpr

from ._dispatch import kernel, register

__all__ = [
    # arithmetic
    "add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "floor_divide",
    "remainder", "fmod", "pow", "neg", "negative", "abs", "exp", "log", "log2", "log1p", "expm1",
    "sqrt", "rsqrt", "square", "sin", "cos", "tanh", "sigmoid", "erf", "clamp", "clip",
    "maximum", "minimum", "sign", "floor", "ceil", "round", "trunc", "reciprocal", "where",
    "masked_fill", "lerp", "softmax", "log_softmax",
    # predicates and comparisons
    "isnan", "isinf", "isfinite", "logical_and", "logical_or", "logical_not", "logical_xor",
    "eq", "ne", "lt", "le", "gt", "ge", "equal", "allclose", "isclose",
    # reductions
    "sum", "mean", "prod", "max", "min", "amax", "amin", "argmax", "argmin", "logsumexp",
    "var", "std", "norm", "cumsum", "cumprod", "all", "any", "topk", "sort", "argsort",
    # products and triangles
    "matmul", "mm", "bmm", "baddbmm", "einsum", "outer", "tril", "triu",
]

_INTEGRAL = (mindspore.bool_, mindspore.uint8, mindspore.int8, mindspore.int16, mindspore.int32,
             mindspore.int64)


def _dims(dim) -> tuple:
    """torch's ``dim`` (None, int, list or tuple) as MindSpore's axis tuple (() = all)."""
    if dim is None:
        return ()
    return tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)


# ----------------------------------------------------------------------------- arithmetic


def add(input, other, *, alpha=1, out=None):
    return mint.add(input, other, alpha=alpha)


def sub(input, other, *, alpha=1, out=None):
    return mint.sub(input, other, alpha=alpha)


subtract = sub


def mul(input, other, *, out=None):
    return mint.mul(input, other)


multiply = mul


def div(input, other, *, rounding_mode: Optional[str] = None, out=None):
    """True division, or ``rounding_mode`` ``"trunc"`` / ``"floor"`` (integer-valued)."""
    if rounding_mode is None:
        return true_divide(input, other)
    return mint.div(input, other, rounding_mode=rounding_mode)


divide = div


def _float(x):
    """Integer tensors as float32, torch's true-division operand (mint.div's gradient of an
    int64 input is int64, which breaks gradient accumulation in graph mode)."""
    if isinstance(x, mindspore.Tensor) and x.dtype in _INTEGRAL:
        return x.astype(mindspore.float32)
    return x


def true_divide(dividend, divisor, *, out=None):
    return mint.div(_float(dividend), _float(divisor))


@register("floor_divide", "CPU", note="a number divisor as a tensor: FloorDivScalar has no CPU kernel")
def _floor_divide_cpu(input, other):
    if not isinstance(other, mindspore.Tensor):
        other = mindspore.Tensor(other, input.dtype)
    return mint.floor_divide(input, other)


@register("floor_divide", "Ascend", tested=False)
def _floor_divide_ascend(input, other):
    return mint.floor_divide(input, other)


_floor_divide = kernel("floor_divide")


def floor_divide(input, other, *, out=None):
    return _floor_divide(input, other)


def remainder(input, other, *, out=None):
    """Python's modulo: the result has the sign of ``other``."""
    return mint.remainder(input, other)


@register("fmod", "CPU", note="a - b * trunc(a / b): mint.fmod has no CPU kernel inside jit")
def _fmod_cpu(input, other):
    return input - other * mint.trunc(mint.div(input, other))


@register("fmod", "Ascend", tested=False)
def _fmod_ascend(input, other):
    return mint.fmod(input, other)


_fmod = kernel("fmod")


def fmod(input, other, *, out=None):
    """C's modulo: the result has the sign of ``input``."""
    return _fmod(input, other)


def pow(input, exponent, *, out=None):  # noqa: A001
    return mint.pow(input, exponent)


def neg(input, *, out=None):
    return mint.neg(input)


negative = neg


def abs(input, *, out=None):  # noqa: A001
    return mint.abs(input)


def exp(input, *, out=None):
    return mint.exp(input)


def log(input, *, out=None):
    return mint.log(input)


@register("log2", "CPU", note="log(x) / log(2): mint.log2 has no CPU kernel")
def _log2_cpu(input):
    return mint.log(input) * (1.0 / math.log(2.0))


@register("log2", "Ascend", tested=False)
def _log2_ascend(input):
    return mint.log2(input)


_log2 = kernel("log2")


def log2(input, *, out=None):
    return _log2(input)


def log1p(input, *, out=None):
    return mint.log1p(input)


def expm1(input, *, out=None):
    return mint.expm1(input)


def sqrt(input, *, out=None):
    return mint.sqrt(input)


def rsqrt(input, *, out=None):
    return mint.rsqrt(input)


def square(input, *, out=None):
    return mint.square(input)


def sin(input, *, out=None):
    return mint.sin(input)


def cos(input, *, out=None):
    return mint.cos(input)


def tanh(input, *, out=None):
    return mint.tanh(input)


def sigmoid(input, *, out=None):
    return mint.sigmoid(input)


def erf(input, *, out=None):
    return mint.erf(input)


def clamp(input, min=None, max=None, *, out=None):  # noqa: A002
    """Bounds are scalars or tensors (broadcast); either may be None."""
    return mint.clamp(input, min, max)


clip = clamp


def maximum(input, other, *, out=None):
    return mint.maximum(input, other)


def minimum(input, other, *, out=None):
    return mint.minimum(input, other)


def sign(input, *, out=None):
    return mint.sign(input)


def floor(input, *, out=None):
    return mint.floor(input)


def ceil(input, *, out=None):
    return mint.ceil(input)


def round(input, *, decimals: int = 0, out=None):  # noqa: A001
    """Half to even, as torch; ``decimals`` scales by 10**decimals around the rounding."""
    if decimals == 0:
        return mint.round(input)
    scale = 10.0 ** decimals
    return mint.round(input * scale) / scale


def trunc(input, *, out=None):
    return mint.trunc(input)


def reciprocal(input, *, out=None):
    return mint.reciprocal(input)


def where(condition, input=None, other=None, *, out=None):
    """``where(cond, x, y)`` elementwise; ``where(cond)`` is ``nonzero(cond, as_tuple=True)``."""
    if input is None and other is None:
        return tuple(mint.unbind(mint.nonzero(condition), 1))
    return mint.where(condition, input, other)


def masked_fill(input, mask, value):
    """``value`` (a scalar or 0-d tensor) where ``mask`` is True, in ``input``'s dtype."""
    if isinstance(value, mindspore.Tensor):
        value = value.astype(input.dtype)
    return ops.masked_fill(input, mask, value)


def lerp(input, end, weight, *, out=None):
    return mint.lerp(input, end, weight)


def softmax(input, dim: int, dtype=None):
    if dtype is not None:
        input = input.astype(dtype)
    return mint.softmax(input, dim)


def log_softmax(input, dim: int, dtype=None):
    """``x - logsumexp(x)`` (ops.log_softmax loses ~4e-5 relative precision on CPU)."""
    if dtype is not None:
        input = input.astype(dtype)
    return input - _logsumexp(input, (dim,), True)


# ------------------------------------------------------------- predicates and comparisons


def isnan(input):
    return mint.isnan(input)


def isinf(input):
    return mint.isinf(input)


def isfinite(input):
    return mint.isfinite(input)


def logical_and(input, other, *, out=None):
    return mint.logical_and(input, other)


def logical_or(input, other, *, out=None):
    return mint.logical_or(input, other)


def logical_not(input, *, out=None):
    return mint.logical_not(input)


def logical_xor(input, other, *, out=None):
    return mint.logical_xor(input, other)


def eq(input, other, *, out=None):
    return mint.eq(input, other)


def ne(input, other, *, out=None):
    return mint.ne(input, other)


def lt(input, other, *, out=None):
    return mint.lt(input, other)


def le(input, other, *, out=None):
    return mint.le(input, other)


def gt(input, other, *, out=None):
    return mint.gt(input, other)


def ge(input, other, *, out=None):
    return mint.ge(input, other)


def equal(input, other) -> bool:
    """True when shapes and all elements are equal (a Python bool, as torch)."""
    return tuple(input.shape) == tuple(other.shape) and builtins.bool(mint.eq(input, other).all())


def isclose(input, other, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False):
    return mint.isclose(input, other, rtol, atol, equal_nan)


def allclose(input, other, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    return builtins.bool(mint.isclose(input, other, rtol, atol, equal_nan).all())


# ----------------------------------------------------------------------------- reductions


def sum(input, dim=None, keepdim: bool = False, *, dtype=None, out=None):  # noqa: A001
    """Sum; integer and bool inputs sum to int64 as in torch."""
    if dtype is None and input.dtype in _INTEGRAL:
        dtype = mindspore.int64
    if dtype is not None:  # cast first: the gradient then casts back to the input's dtype
        input = input.astype(dtype)
    return mint.sum(input, _dims(dim), keepdim)


def mean(input, dim=None, keepdim: bool = False, *, dtype=None, out=None):
    if dtype is not None:
        input = input.astype(dtype)
    return mint.mean(input, _dims(dim) or None, keepdim)


def prod(input, dim: Optional[int] = None, keepdim: bool = False, *, dtype=None):
    if dtype is None and input.dtype in _INTEGRAL:
        dtype = mindspore.int64
    if dtype is not None:
        input = input.astype(dtype)
    return mint.prod(input, dim, keepdim)


@register("argmax", "CPU", note="legacy ops.argmax: mint.argmax runs only inside jit on CPU")
def _argmax_cpu(input, dim, keepdim):
    return ops.argmax(input, dim, keepdim).astype(mindspore.int64)


@register("argmax", "Ascend", tested=False)
def _argmax_ascend(input, dim, keepdim):
    return mint.argmax(input, dim, keepdim)


@register("argmin", "CPU", note="legacy ops.argmin")
def _argmin_cpu(input, dim, keepdim):
    return ops.argmin(input, dim, keepdim).astype(mindspore.int64)


@register("argmin", "Ascend", tested=False)
def _argmin_ascend(input, dim, keepdim):
    return mint.argmin(input, dim, keepdim)


_argmax, _argmin = kernel("argmax"), kernel("argmin")


def argmax(input, dim: Optional[int] = None, keepdim: bool = False):
    """Index of the first maximum (flat index when ``dim`` is None), int64."""
    if dim is None:
        return _argmax(input.reshape(-1), 0, False)
    return _argmax(input, dim, keepdim)


def argmin(input, dim: Optional[int] = None, keepdim: bool = False):
    if dim is None:
        return _argmin(input.reshape(-1), 0, False)
    return _argmin(input, dim, keepdim)


def _squeezed(values_indices: tuple, dim: int, keepdim: bool) -> tuple:
    """Reduced with keepdim=True, then squeezed; indices cut from the gradient graph.
    (The PyNative CPU backward of mint.min fails with 'pointer[input_tensor] is null' when
    the indices reach the loss, and of mint.max/min with keepdim=False.)"""
    values, indices = values_indices
    indices = ops.stop_gradient(indices)
    if keepdim:
        return values, indices
    return mint.squeeze(values, dim), mint.squeeze(indices, dim)


def max(input, dim=None, keepdim: bool = False, *, out=None):  # noqa: A001
    """``max(x)`` the maximum; ``max(x, dim)`` ``(values, indices)``; ``max(x, y)`` elementwise."""
    if dim is None:
        return mint.max(input)
    if isinstance(dim, mindspore.Tensor):
        return mint.maximum(input, dim)
    return _squeezed(mint.max(input, dim, True), dim, keepdim)


def min(input, dim=None, keepdim: bool = False, *, out=None):  # noqa: A001
    if dim is None:
        return mint.min(input)
    if isinstance(dim, mindspore.Tensor):
        return mint.minimum(input, dim)
    return _squeezed(mint.min(input, dim, True), dim, keepdim)


def amax(input, dim=(), keepdim: bool = False, *, out=None):
    return mint.amax(input, _dims(dim), keepdim)


def amin(input, dim=(), keepdim: bool = False, *, out=None):
    return mint.amin(input, _dims(dim), keepdim)


@register("logsumexp", "CPU", note="max-shifted composition: mint.logsumexp has no CPU kernel")
def _logsumexp_cpu(input, dims, keepdim):
    shift = ops.stop_gradient(mint.amax(input, dims, True))
    shift = mint.where(mint.isinf(shift), 0.0, shift)
    out = mint.log(mint.sum(mint.exp(input - shift), dims, True)) + shift
    return out if keepdim else mint.squeeze(out, dims)


@register("logsumexp", "Ascend", tested=False)
def _logsumexp_ascend(input, dims, keepdim):
    return mint.logsumexp(input, dims, keepdim)


_logsumexp = kernel("logsumexp")


def logsumexp(input, dim, keepdim: bool = False, *, out=None):
    return _logsumexp(input, _dims(dim), keepdim)


@constexpr
def _numel(shape: tuple, dims: tuple) -> int:
    """Elements reduced over ``dims`` (all when empty)."""
    n = 1
    for d in dims or range(len(shape)):
        n *= shape[d]
    return n


def _correction(unbiased: Optional[bool], correction) -> float:
    if correction is not None:
        return correction
    return 1 if unbiased is None or unbiased else 0


@register("var", "CPU", note="two-pass composition: mint.var has no CPU kernel")
def _var_cpu(input, dims, correction, keepdim):
    centered = input - mint.mean(input, dims or None, True)
    count = _numel(input.shape, dims)
    return mint.sum(centered * centered, dims, keepdim) / builtins.max(count - correction, 0)


@register("var", "Ascend", tested=False)
def _var_ascend(input, dims, correction, keepdim):
    return mint.var(input, dims or None, correction=correction, keepdim=keepdim)


_var = kernel("var")


def var(input, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
    """Variance with Bessel's ``correction`` (default 1; ``unbiased=False`` means 0)."""
    if isinstance(dim, builtins.bool):  # var(x, unbiased)
        dim, unbiased = None, dim
    return _var(input, _dims(dim), _correction(unbiased, correction), keepdim)


def std(input, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
    return mint.sqrt(var(input, dim, unbiased, keepdim, correction=correction))


def norm(input, p: Union[float, str, None] = "fro", dim=None, keepdim: bool = False, dtype=None):
    """Vector p-norm over ``dim`` (all elements when None); ``"fro"`` is the 2-norm."""
    if dtype is not None:
        input = input.astype(dtype)
    dims = _dims(dim)
    if p in ("fro", 2, 2.0, None):
        return mint.sqrt(mint.sum(input * input, dims, keepdim))
    if p == float("inf"):
        return mint.amax(mint.abs(input), dims, keepdim)
    if p == -float("inf"):
        return mint.amin(mint.abs(input), dims, keepdim)
    if p == 1:
        return mint.sum(mint.abs(input), dims, keepdim)
    return mint.pow(mint.sum(mint.pow(mint.abs(input), p), dims, keepdim), 1.0 / p)


@register("cumsum", "CPU", note="legacy ops.cumsum: mint.cumsum has no CPU kernel")
def _cumsum_cpu(input, dim):
    return ops.cumsum(input, dim)


@register("cumsum", "Ascend", tested=False)
def _cumsum_ascend(input, dim):
    return mint.cumsum(input, dim)


_cumsum = kernel("cumsum")


def cumsum(input, dim: int, *, dtype=None, out=None):
    """Running sum along ``dim``; integer and bool inputs accumulate in int64."""
    if dtype is None and input.dtype in _INTEGRAL:
        dtype = mindspore.int64
    return _cumsum(input if dtype is None else input.astype(dtype), dim)


def cumprod(input, dim: int, *, dtype=None, out=None):
    if dtype is None and input.dtype in _INTEGRAL:
        dtype = mindspore.int64
    return mint.cumprod(input if dtype is None else input.astype(dtype), dim)


def all(input, dim=None, keepdim: bool = False, *, out=None):  # noqa: A001
    if dim is None:
        return mint.all(input)
    return mint.all(input, dim, keepdim)


def any(input, dim=None, keepdim: bool = False, *, out=None):  # noqa: A001
    if dim is None:
        return mint.any(input)
    return mint.any(input, dim, keepdim)


@register("topk", "CPU", note="legacy ops.topk: mint.topk has no CPU kernel")
def _topk_cpu(input, k, dim, largest, sorted):
    values, indices = ops.topk(input, k, dim, largest, sorted)
    return values, indices.astype(mindspore.int64)


@register("topk", "Ascend", tested=False)
def _topk_ascend(input, k, dim, largest, sorted):
    return mint.topk(input, k, dim, largest, sorted)


@register("sort", "CPU", note="legacy ops.sort")
def _sort_cpu(input, dim, descending):
    values, indices = ops.sort(input, dim, descending)
    return values, indices.astype(mindspore.int64)


@register("sort", "Ascend", tested=False)
def _sort_ascend(input, dim, descending):
    return mint.sort(input, dim=dim, descending=descending)


_topk, _sort = kernel("topk"), kernel("sort")


def topk(input, k: int, dim: int = -1, largest: bool = True, sorted: bool = True, *, out=None):  # noqa: A002
    """``(values, indices)`` of the ``k`` largest (or smallest) along ``dim``."""
    if k == 0:  # MindSpore's TopK rejects k = 0; torch returns empty tensors
        empty = mint.narrow(input, dim, 0, 0)
        return empty, empty.astype(mindspore.int64)
    return _topk(input, k, dim, largest, sorted)


def sort(input, dim: int = -1, descending: bool = False, stable: bool = False, *, out=None):
    """``(values, indices)``; ties keep their input order on CPU."""
    return _sort(input, dim, descending)


def argsort(input, dim: int = -1, descending: bool = False, stable: bool = False):
    return _sort(input, dim, descending)[1]


# ---------------------------------------------------------------- products and triangles


@register("matmul", "CPU", "Ascend")
def _matmul(input, other):
    return mint.matmul(input, other)


_matmul_kernel = kernel("matmul")


def matmul(input, other, *, out=None):
    return _matmul_kernel(input, other)


def mm(input, mat2, *, out=None):
    """2-D matrix product (``mint.matmul``: mint.mm has no CPU kernel)."""
    return _matmul_kernel(input, mat2)


def bmm(input, mat2, *, out=None):
    return mint.bmm(input, mat2)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1, out=None):
    """``beta * input + alpha * (batch1 @ batch2)`` (composition: no mint.baddbmm CPU kernel)."""
    product = mint.bmm(batch1, batch2) * alpha
    if beta == 0:  # torch ignores input (even its NaNs) when beta is 0
        return product
    return input * beta + product


def outer(input, vec2, *, out=None):
    """``input[i] * vec2[j]`` (broadcast product: mint.outer has no CPU kernel)."""
    return mint.mul(mint.unsqueeze(input, 1), mint.unsqueeze(vec2, 0))


_ELLIPSIS_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _einsum_terms(equation: str, shapes):
    """Operand subscripts and output subscripts, ``...`` expanded to upper-case letters."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: equation {equation!r} has {len(terms)} operands, got {len(shapes)}")
    n_ellipsis = 0
    expanded = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            n = len(shape) - (len(term) - 3)
            n_ellipsis = builtins.max(n_ellipsis, n)
            term = term.replace("...", _ELLIPSIS_LETTERS[26 - n:] if n else "")
        if len(term) != len(shape) or len(set(term)) != len(term):
            raise ValueError(f"einsum: subscripts {term!r} do not fit an operand of shape {tuple(shape)} "
                             "(repeated subscripts, i.e. diagonals, are not supported)")
        expanded.append(term)
    ellipsis = _ELLIPSIS_LETTERS[26 - n_ellipsis:] if n_ellipsis else ""
    if arrow:
        return expanded, rhs.replace("...", ellipsis)
    letters = "".join(expanded)  # implicit output: the ellipsis, then letters used once, sorted
    return expanded, ellipsis + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c.islower()))


@constexpr
def _einsum_plan(equation: str, shapes: tuple) -> tuple:
    """The contraction as shape-only steps, computed once at trace time.

    Operands are folded left to right; each pair is one batched matmul
    (batch, left, contracted) @ (batch, contracted, right). A step is
    ``(sum_a, sum_b, perm_a, perm_b, full_a, full_b, shape_a, shape_b, shape_out)``
    (``full_*``: the permuted shapes with size-1 dims broadcast); the plan ends with
    ``(sum_out, perm_out)``.
    """
    terms, out = _einsum_terms(equation, shapes)
    size = {}
    for term, shape in zip(terms, shapes):
        for c, n in zip(term, shape):
            size[c] = builtins.max(size.get(c, 1), n)

    def numel(letters):
        n = 1
        for c in letters:
            n *= size[c]
        return n

    steps = []
    sa = terms[0]
    for k in range(1, len(terms)):
        sb, keep = terms[k], out + "".join(terms[k + 1:])
        sum_a = tuple(i for i, c in enumerate(sa) if c not in sb and c not in keep)
        sum_b = tuple(i for i, c in enumerate(sb) if c not in sa and c not in keep)
        sa = "".join(c for c in sa if c in sb or c in keep)
        sb = "".join(c for c in sb if c in sa or c in keep)
        batch = [c for c in sa if c in sb and c in keep]
        contracted = [c for c in sa if c in sb and c not in keep]
        left = [c for c in sa if c not in sb]
        right = [c for c in sb if c not in sa]
        steps.append((sum_a, sum_b,
                      tuple(sa.index(c) for c in batch + left + contracted),
                      tuple(sb.index(c) for c in batch + contracted + right),
                      tuple(size[c] for c in batch + left + contracted),
                      tuple(size[c] for c in batch + contracted + right),
                      (numel(batch), numel(left), numel(contracted)),
                      (numel(batch), numel(contracted), numel(right)),
                      tuple(size[c] for c in batch + left + right)))
        sa = "".join(batch + left + right)
    sum_out = tuple(i for i, c in enumerate(sa) if c not in out)
    sa = "".join(c for c in sa if c in out)
    return tuple(steps), sum_out, tuple(sa.index(c) for c in out)


@register("einsum", "CPU", note="batched-matmul composition: no einsum kernel on CPU")
def _einsum_cpu(equation, *operands):
    steps, sum_out, perm_out = _einsum_plan(equation, tuple(tuple(x.shape) for x in operands))
    result = operands[0]
    for k in range(len(steps)):
        sum_a, sum_b, perm_a, perm_b, full_a, full_b, shape_a, shape_b, shape_out = steps[k]
        a = mint.sum(result, sum_a) if sum_a else result
        b = mint.sum(operands[k + 1], sum_b) if sum_b else operands[k + 1]
        a = mint.broadcast_to(mint.permute(a, perm_a), full_a).reshape(shape_a)
        b = mint.broadcast_to(mint.permute(b, perm_b), full_b).reshape(shape_b)
        result = mint.bmm(a, b).reshape(shape_out)
    if sum_out:
        result = mint.sum(result, sum_out)
    return mint.permute(result, perm_out)


@register("einsum", "Ascend", tested=False)
def _einsum_ascend(equation, *operands):
    return mint.einsum(equation, *operands)


_einsum = kernel("einsum")


def einsum(equation: str, *operands):
    """Einstein summation; operands may also be passed as one list. No repeated subscripts."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return _einsum(equation, *operands)


@register("tril", "CPU", note="legacy ops.tril: mint.tril has no CPU kernel")
def _tril_cpu(input, diagonal):
    return ops.tril(input, diagonal)


@register("tril", "Ascend", tested=False)
def _tril_ascend(input, diagonal):
    return mint.tril(input, diagonal)


_tril = kernel("tril")


def tril(input, diagonal: int = 0, *, out=None):
    return _tril(input, diagonal)


def triu(input, diagonal: int = 0, *, out=None):
    return mint.triu(input, diagonal)
