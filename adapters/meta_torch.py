"""A shape-only ``torch`` for building msmm's model files without weights, MindSpore or torch.

``msmm-train --dry-run`` builds the real model definitions (one definition per model: the
files in ``msmm/models``) with ``torch`` bound to this module: every tensor is a
:class:`MetaTensor` that has a shape and a dtype and no storage, ``nn.init.*`` do nothing,
``nn.Module`` registers parameters, buffers and submodules as torch does, so
``named_parameters()``, ``state_dict()`` and ``requires_grad`` answer exactly as they would for
the real model. A 78B model builds in about a second and allocates no weight.

Only what a model needs to be *constructed* is implemented (creation, shape arithmetic,
``nn`` layers, the few tensor ops that run in ``__init__``); running a model (``forward``,
``torch.nn.functional``) raises :class:`MetaTorchError` naming the op. An op a model file
starts using in ``__init__`` that is missing here fails the same way, naming this file.

    with models_on_meta() as models:            # msmm.models bound to this module
        config = models.load_model_config("model.json")
        model = models.build_model(config)      # MetaTensor parameters, no weights

The binding is per import: :func:`models_on_meta` imports a fresh ``msmm.models`` against this
module and restores whatever ``torch`` / ``msmm.models`` the process had on exit, so it can be
used in a process that also runs the real models (the test suite).
"""
from __future__ import annotations

import builtins
import contextlib
import math
import sys
import types
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

HERE = "adapters/meta_torch.py"


class MetaTorchError(NotImplementedError):
    """An op the shape-only torch does not have (or a value it cannot know)."""


# ---- dtypes --------------------------------------------------------------------------------------

class dtype:  # noqa: N801 - torch spelling
    def __init__(self, name: str, itemsize: int, is_floating_point: bool, is_signed: bool = True) -> None:
        self.name, self.itemsize = name, itemsize
        self.is_floating_point, self.is_signed = is_floating_point, is_signed
        self.is_complex = False

    def __repr__(self) -> str:
        return f"torch.{self.name}"


float32 = dtype("float32", 4, True)
float64 = dtype("float64", 8, True)
float16 = dtype("float16", 2, True)
bfloat16 = dtype("bfloat16", 2, True)
int64 = dtype("int64", 8, False)
int32 = dtype("int32", 4, False)
int16 = dtype("int16", 2, False)
int8 = dtype("int8", 1, False)
uint8 = dtype("uint8", 1, False, is_signed=False)
bool_ = dtype("bool", 1, False, is_signed=False)
float, double, half = float32, float64, float16  # noqa: A001
long, int, short = int64, int32, int16  # noqa: A001
_DTYPES = {d.name: d for d in (float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool_)}
_NUMPY = {"float32": float32, "float64": float64, "float16": float16, "int64": int64, "int32": int32,
          "int16": int16, "int8": int8, "uint8": uint8, "bool": bool_}
_default_dtype = float32


def get_default_dtype() -> dtype:
    return _default_dtype


def set_default_dtype(d: dtype) -> None:
    global _default_dtype
    _default_dtype = d


class finfo:  # noqa: N801
    _VALUES = {"float32": np.finfo(np.float32), "float64": np.finfo(np.float64), "float16": np.finfo(np.float16)}

    def __init__(self, d: Optional[dtype] = None) -> None:
        d = d or _default_dtype
        if d.name == "bfloat16":
            self.bits, self.eps, self.max, self.min, self.tiny = 16, 2.0 ** -7, 3.3895313892515355e38, \
                -3.3895313892515355e38, 2.0 ** -126
        else:
            info = self._VALUES[d.name]
            self.bits, self.eps, self.max, self.min, self.tiny = info.bits, builtins.float(info.eps), \
                builtins.float(info.max), builtins.float(info.min), builtins.float(info.tiny)
        self.dtype = d.name


class iinfo:  # noqa: N801
    def __init__(self, d: dtype) -> None:
        info = np.iinfo(d.name)
        self.bits, self.max, self.min, self.dtype = info.bits, builtins.int(info.max), builtins.int(info.min), d.name


# ---- tensors -------------------------------------------------------------------------------------

class Size(tuple):
    def numel(self) -> builtins.int:
        return builtins.int(np.prod(self, dtype=np.int64)) if self else 1


class device:  # noqa: N801 - also a context manager, as torch.device
    def __init__(self, kind: Any = "meta", index: Optional[builtins.int] = None) -> None:
        self.type = str(kind).split(":")[0]
        self.index = index

    def __enter__(self) -> "device":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"device(type='{self.type}')"


_META = device("meta")


def _shape_of(size: Sequence[Any]) -> Size:
    """``zeros(2, 3)``, ``zeros((2, 3))`` and ``zeros(Size)`` all mean (2, 3)."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    out = []
    for s in size:
        if isinstance(s, MetaTensor):
            raise MetaTorchError(f"{HERE}: a size given as a tensor has no value on the shape-only torch")
        out.append(builtins.int(s))
    if builtins.any(s < 0 for s in out):
        raise ValueError(f"negative dimension in size {tuple(out)}")
    return Size(out)


def _dim(d: builtins.int, ndim: builtins.int) -> builtins.int:
    if not -max(ndim, 1) <= d < max(ndim, 1):
        raise IndexError(f"dimension {d} out of range for a {ndim}-d tensor")
    return d % max(ndim, 1)


def _result_dtype(a: Any, b: Any) -> dtype:
    """torch's promotion, simplified: a float operand (tensor or Python float) gives a float
    result (the float tensor's dtype, else the default); bool tensors with ints give int64."""
    tensors = [x for x in (a, b) if isinstance(x, MetaTensor)]
    floats = [t.dtype for t in tensors if t.dtype.is_floating_point]
    if floats:
        return max(floats, key=lambda d: d.itemsize)
    if builtins.any(isinstance(x, builtins.float) for x in (a, b)):
        return _default_dtype
    ints = [t.dtype for t in tensors if t.dtype is not bool_]
    if ints:
        return max(ints, key=lambda d: d.itemsize)
    if builtins.any(isinstance(x, builtins.int) and not isinstance(x, builtins.bool) for x in (a, b)):
        return int64
    return bool_


def _shape(x: Any) -> Tuple[builtins.int, ...]:
    if isinstance(x, MetaTensor):
        return tuple(x.shape)
    if isinstance(x, np.ndarray):
        return x.shape
    return ()


def _broadcast(*xs: Any) -> Size:
    try:
        return Size(np.broadcast_shapes(*(_shape(x) for x in xs)))
    except ValueError as err:
        raise ValueError(f"shapes {[_shape(x) for x in xs]} do not broadcast") from err


def _binary(a: Any, b: Any, out_dtype: Optional[dtype] = None) -> "MetaTensor":
    return MetaTensor(_broadcast(a, b), out_dtype or _result_dtype(a, b))


def _reduce(x: "MetaTensor", dim: Any = None, keepdim: builtins.bool = False,
            out_dtype: Optional[dtype] = None) -> "MetaTensor":
    shape = list(x.shape)
    if dim is None:
        shape = [1] * len(shape) if keepdim else []
    else:
        dims = {_dim(d, len(shape)) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
        shape = [1 if i in dims else s for i, s in enumerate(shape)] if keepdim else \
            [s for i, s in enumerate(shape) if i not in dims]
    return MetaTensor(shape, out_dtype or x.dtype)


def _view_shape(numel: builtins.int, shape: Sequence[Any]) -> Size:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    dims = [builtins.int(s) for s in shape]
    if dims.count(-1) > 1:
        raise ValueError(f"only one dimension can be inferred in shape {tuple(dims)}")
    if -1 in dims:
        known = builtins.int(np.prod([s for s in dims if s != -1], dtype=np.int64))
        if known == 0 or numel % known:
            raise ValueError(f"shape {tuple(dims)} is invalid for input of size {numel}")
        dims[dims.index(-1)] = numel // known
    if builtins.int(np.prod(dims, dtype=np.int64)) != numel:
        raise ValueError(f"shape {tuple(dims)} is invalid for input of size {numel}")
    return Size(dims)


class MetaTensor:
    """A tensor with a shape and a dtype and no values."""

    __array_priority__ = 1000  # numpy scalars / arrays defer to our operators

    def __init__(self, shape: Sequence[builtins.int], dtype_: Optional[dtype] = None,
                 requires_grad: builtins.bool = False) -> None:
        self.shape = Size(builtins.int(s) for s in shape)
        self.dtype = dtype_ or _default_dtype
        self.requires_grad = requires_grad
        self.grad = None

    # -- what a tensor is
    @property
    def data(self) -> "MetaTensor":
        return self

    @data.setter
    def data(self, value: "MetaTensor") -> None:
        self.shape, self.dtype = value.shape, value.dtype

    @property
    def ndim(self) -> builtins.int:
        return len(self.shape)

    @property
    def device(self) -> device:
        return _META

    @property
    def is_meta(self) -> builtins.bool:
        return True

    @property
    def T(self) -> "MetaTensor":  # noqa: N802
        return MetaTensor(self.shape[::-1], self.dtype)

    @property
    def nbytes(self) -> builtins.int:
        return self.numel() * self.dtype.itemsize

    def dim(self) -> builtins.int:
        return len(self.shape)

    def numel(self) -> builtins.int:
        return self.shape.numel()

    nelement = numel

    def size(self, d: Optional[builtins.int] = None) -> Any:
        return self.shape if d is None else self.shape[_dim(d, self.ndim)]

    def element_size(self) -> builtins.int:
        return self.dtype.itemsize

    def is_floating_point(self) -> builtins.bool:
        return self.dtype.is_floating_point

    def is_contiguous(self, *args: Any, **kwargs: Any) -> builtins.bool:
        return True

    def __len__(self) -> builtins.int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"MetaTensor(shape={tuple(self.shape)}, dtype={self.dtype!r})"

    def __hash__(self) -> builtins.int:
        return id(self)

    def __bool__(self) -> builtins.bool:
        raise MetaTorchError(f"{HERE}: the truth value of a tensor is unknown on the shape-only torch")

    def item(self) -> Any:
        raise MetaTorchError(f"{HERE}: .item() has no value on the shape-only torch")

    def tolist(self) -> Any:
        raise MetaTorchError(f"{HERE}: .tolist() has no values on the shape-only torch")

    def numpy(self) -> Any:
        raise MetaTorchError(f"{HERE}: .numpy() has no values on the shape-only torch")

    def __iter__(self) -> Iterator["MetaTensor"]:
        return (self[i] for i in range(len(self)))

    # -- conversions (no values: all return new shape-only tensors)
    def to(self, *args: Any, **kwargs: Any) -> "MetaTensor":
        target = kwargs.get("dtype")
        for a in args:
            if isinstance(a, dtype):
                target = a
            elif isinstance(a, MetaTensor):
                target = a.dtype
        return self if target is None or target is self.dtype else MetaTensor(self.shape, target, self.requires_grad)

    def type(self, d: Optional[dtype] = None) -> Any:
        return self.dtype if d is None else self.to(d)

    def float(self) -> "MetaTensor":
        return self.to(float32)

    def double(self) -> "MetaTensor":
        return self.to(float64)

    def half(self) -> "MetaTensor":
        return self.to(float16)

    def bfloat16(self) -> "MetaTensor":
        return self.to(bfloat16)

    def long(self) -> "MetaTensor":
        return self.to(int64)

    def int(self) -> "MetaTensor":
        return self.to(int32)

    def bool(self) -> "MetaTensor":
        return self.to(bool_)

    def detach(self) -> "MetaTensor":
        return MetaTensor(self.shape, self.dtype)

    def clone(self, *args: Any, **kwargs: Any) -> "MetaTensor":
        return MetaTensor(self.shape, self.dtype, self.requires_grad)

    def contiguous(self, *args: Any, **kwargs: Any) -> "MetaTensor":
        return self

    def cpu(self) -> "MetaTensor":
        return self

    cuda = npu = cpu

    def requires_grad_(self, requires_grad: builtins.bool = True) -> "MetaTensor":
        self.requires_grad = requires_grad
        return self

    # -- in place: values only, so nothing to do
    def _same(self, *args: Any, **kwargs: Any) -> "MetaTensor":
        return self

    copy_ = fill_ = zero_ = normal_ = uniform_ = add_ = sub_ = mul_ = div_ = clamp_ = masked_fill_ = _same
    exponential_ = bernoulli_ = random_ = log_normal_ = cauchy_ = geometric_ = _same

    # -- shapes
    def view(self, *shape: Any) -> "MetaTensor":
        if len(shape) == 1 and isinstance(shape[0], dtype):
            return self.to(shape[0])
        return MetaTensor(_view_shape(self.numel(), shape), self.dtype)

    reshape = view

    def view_as(self, other: "MetaTensor") -> "MetaTensor":
        return self.view(other.shape)

    reshape_as = view_as

    def flatten(self, start_dim: builtins.int = 0, end_dim: builtins.int = -1) -> "MetaTensor":
        if not self.shape:
            return MetaTensor((1,), self.dtype)
        s, e = _dim(start_dim, self.ndim), _dim(end_dim, self.ndim)
        merged = builtins.int(np.prod(self.shape[s:e + 1], dtype=np.int64))
        return MetaTensor(self.shape[:s] + (merged,) + self.shape[e + 1:], self.dtype)

    def unflatten(self, d: builtins.int, sizes: Sequence[builtins.int]) -> "MetaTensor":
        d = _dim(d, self.ndim)
        inner = _view_shape(self.shape[d], tuple(sizes))
        return MetaTensor(self.shape[:d] + inner + self.shape[d + 1:], self.dtype)

    def unsqueeze(self, d: builtins.int) -> "MetaTensor":
        d = d % (self.ndim + 1)
        return MetaTensor(self.shape[:d] + (1,) + self.shape[d:], self.dtype)

    def squeeze(self, d: Optional[builtins.int] = None) -> "MetaTensor":
        if d is None:
            return MetaTensor([s for s in self.shape if s != 1], self.dtype)
        d = _dim(d, self.ndim)
        return MetaTensor(self.shape[:d] + self.shape[d + 1:], self.dtype) if self.shape[d] == 1 else self

    def transpose(self, a: builtins.int, b: builtins.int) -> "MetaTensor":
        shape = list(self.shape)
        a, b = _dim(a, self.ndim), _dim(b, self.ndim)
        shape[a], shape[b] = shape[b], shape[a]
        return MetaTensor(shape, self.dtype)

    def t(self) -> "MetaTensor":
        return self.transpose(0, 1) if self.ndim == 2 else self

    def permute(self, *dims: Any) -> "MetaTensor":
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return MetaTensor([self.shape[_dim(d, self.ndim)] for d in dims], self.dtype)

    def expand(self, *shape: Any) -> "MetaTensor":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        lead = len(shape) - self.ndim
        return MetaTensor([self.shape[i - lead] if s == -1 else s for i, s in enumerate(shape)], self.dtype)

    def expand_as(self, other: "MetaTensor") -> "MetaTensor":
        return MetaTensor(other.shape, self.dtype)

    def repeat(self, *sizes: Any) -> "MetaTensor":
        sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        shape = (1,) * (len(sizes) - self.ndim) + tuple(self.shape)
        return MetaTensor([a * b for a, b in zip(shape, sizes)], self.dtype)

    def chunk(self, chunks: builtins.int, dim: builtins.int = 0) -> Tuple["MetaTensor", ...]:
        return chunk(self, chunks, dim)

    def split(self, split_size: Any, dim: builtins.int = 0) -> Tuple["MetaTensor", ...]:
        return split(self, split_size, dim)

    def narrow(self, d: builtins.int, start: builtins.int, length: builtins.int) -> "MetaTensor":
        return narrow(self, d, start, length)

    def __getitem__(self, index: Any) -> "MetaTensor":
        items = index if isinstance(index, tuple) else (index,)
        if builtins.sum(1 for i in items if i is Ellipsis) > 1:
            raise IndexError("an index can only have a single ellipsis")
        used = builtins.sum(1 for i in items if i is not None and i is not Ellipsis)
        if Ellipsis in items:
            at = items.index(Ellipsis)
            items = items[:at] + (slice(None),) * (self.ndim - used) + items[at + 1:]
        shape: List[builtins.int] = []
        d = 0
        for i in items:
            if i is None:
                shape.append(1)
            elif isinstance(i, slice):
                shape.append(len(range(*i.indices(self.shape[d]))))
                d += 1
            elif isinstance(i, (builtins.int, np.integer)):
                _dim(builtins.int(i), self.shape[d])
                d += 1
            else:
                raise MetaTorchError(f"{HERE}: indexing with {type(i).__name__} (advanced indexing) is not supported")
        if d > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-d tensor")
        return MetaTensor(shape + list(self.shape[d:]), self.dtype)

    def __setitem__(self, index: Any, value: Any) -> None:
        return None

    # -- arithmetic
    def __add__(self, o: Any) -> "MetaTensor":
        return _binary(self, o)

    __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __mod__ = __pow__ = __rpow__ = __add__
    __and__ = __or__ = __xor__ = __rand__ = __ror__ = __add__

    def __truediv__(self, o: Any) -> "MetaTensor":
        out = _result_dtype(self, o)
        return _binary(self, o, out if out.is_floating_point else _default_dtype)

    __rtruediv__ = __truediv__

    def __floordiv__(self, o: Any) -> "MetaTensor":
        return _binary(self, o)

    __rfloordiv__ = __floordiv__

    def __neg__(self) -> "MetaTensor":
        return MetaTensor(self.shape, self.dtype)

    __pos__ = __abs__ = __invert__ = __neg__

    def __matmul__(self, o: "MetaTensor") -> "MetaTensor":
        return matmul(self, o)

    def __rmatmul__(self, o: "MetaTensor") -> "MetaTensor":
        return matmul(o, self)

    def _compare(self, o: Any) -> "MetaTensor":
        return _binary(self, o, bool_)

    __lt__ = __le__ = __gt__ = __ge__ = _compare

    def __eq__(self, o: Any) -> "MetaTensor":  # type: ignore[override]
        return self._compare(o)

    def __ne__(self, o: Any) -> "MetaTensor":  # type: ignore[override]
        return self._compare(o)

    # -- elementwise / reductions as methods
    def _unary(self, *args: Any, **kwargs: Any) -> "MetaTensor":
        return MetaTensor(self.shape, self.dtype)

    abs = exp = log = sin = cos = sqrt = rsqrt = sigmoid = tanh = relu = neg = round = floor = ceil = _unary
    clamp = clip = pow = reciprocal = sign = masked_fill = _unary
    add = sub = mul = div = __add__
    logical_not = _unary

    def softmax(self, dim: builtins.int = -1, *args: Any, **kwargs: Any) -> "MetaTensor":
        return MetaTensor(self.shape, self.dtype)

    def sum(self, dim: Any = None, keepdim: builtins.bool = False, dtype: Optional[dtype] = None) -> "MetaTensor":
        out = dtype or (int64 if not self.dtype.is_floating_point else self.dtype)
        return _reduce(self, dim, keepdim, out)

    def mean(self, dim: Any = None, keepdim: builtins.bool = False, dtype: Optional[dtype] = None) -> "MetaTensor":
        return _reduce(self, dim, keepdim, dtype or self.dtype)

    def amax(self, dim: Any = None, keepdim: builtins.bool = False) -> "MetaTensor":
        return _reduce(self, dim, keepdim)

    amin = prod = amax

    def cumsum(self, dim: builtins.int, dtype: Optional[dtype] = None) -> "MetaTensor":
        return MetaTensor(self.shape, dtype or self.dtype)

    def any(self, dim: Any = None, keepdim: builtins.bool = False) -> "MetaTensor":
        return _reduce(self, dim, keepdim, bool_)

    all = any


class Parameter(MetaTensor):
    """``nn.Parameter``: a MetaTensor that requires grad by default."""

    def __init__(self, data: Optional[MetaTensor] = None, requires_grad: builtins.bool = True) -> None:
        data = data if data is not None else MetaTensor((0,))
        super().__init__(data.shape, data.dtype, requires_grad)

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype!r}, requires_grad={self.requires_grad})"


Tensor = MetaTensor


def is_tensor(x: Any) -> builtins.bool:
    return isinstance(x, MetaTensor)


def is_floating_point(x: MetaTensor) -> builtins.bool:
    return x.dtype.is_floating_point


def numel(x: MetaTensor) -> builtins.int:
    return x.numel()


# ---- creation ------------------------------------------------------------------------------------

def _created(size: Sequence[Any], dtype: Optional[dtype] = None, requires_grad: builtins.bool = False,
             **ignored: Any) -> MetaTensor:
    return MetaTensor(_shape_of(size), dtype or _default_dtype, requires_grad)


def empty(*size: Any, **kwargs: Any) -> MetaTensor:
    return _created(size, **kwargs)


zeros = ones = randn = rand = empty


def full(size: Sequence[builtins.int], fill_value: Any, dtype: Optional[dtype] = None, **kwargs: Any) -> MetaTensor:
    if dtype is None:
        dtype = bool_ if isinstance(fill_value, builtins.bool) else int64 if isinstance(fill_value, builtins.int) \
            else _default_dtype
    return _created((size,), dtype, **kwargs)


def randint(*args: Any, size: Optional[Sequence[builtins.int]] = None, dtype: Optional[dtype] = None,
            **kwargs: Any) -> MetaTensor:
    size = size if size is not None else args[-1]
    return _created((size,), dtype or int64)


def _like(x: MetaTensor, dtype: Optional[dtype] = None, **kwargs: Any) -> MetaTensor:
    return MetaTensor(x.shape, dtype or x.dtype)


zeros_like = ones_like = empty_like = rand_like = randn_like = _like


def full_like(x: MetaTensor, fill_value: Any, dtype: Optional[dtype] = None, **kwargs: Any) -> MetaTensor:
    return MetaTensor(x.shape, dtype or x.dtype)


def arange(start: Any, end: Any = None, step: Any = 1, dtype: Optional[dtype] = None, **kwargs: Any) -> MetaTensor:
    if end is None:
        start, end = 0, start
    if builtins.any(isinstance(v, MetaTensor) for v in (start, end, step)):
        raise MetaTorchError(f"{HERE}: arange bounds given as tensors have no value on the shape-only torch")
    length = max(0, math.ceil((end - start) / step))
    if dtype is None:
        integral = builtins.all(isinstance(v, (builtins.int, np.integer)) for v in (start, end, step))
        dtype = int64 if integral else _default_dtype
    return MetaTensor((length,), dtype)


def linspace(start: Any, end: Any, steps: builtins.int, dtype: Optional[dtype] = None, **kwargs: Any) -> MetaTensor:
    return MetaTensor((steps,), dtype or _default_dtype)


def eye(n: builtins.int, m: Optional[builtins.int] = None, dtype: Optional[dtype] = None, **kwargs: Any) -> MetaTensor:
    return MetaTensor((n, n if m is None else m), dtype or _default_dtype)


def tensor(data: Any, dtype: Optional[dtype] = None, **kwargs: Any) -> MetaTensor:
    """Host data (numbers, lists, numpy arrays: small, never weights) -> its shape and dtype."""
    if isinstance(data, MetaTensor):
        return MetaTensor(data.shape, dtype or data.dtype)
    array = np.asarray(data)
    if dtype is None:
        if isinstance(data, np.ndarray) or isinstance(data, np.generic):
            dtype = _NUMPY.get(array.dtype.name, _default_dtype)
        elif array.dtype.kind == "f":
            dtype = _default_dtype
        elif array.dtype.kind in "iu":
            dtype = int64
        elif array.dtype.kind == "b":
            dtype = bool_
        else:
            dtype = _default_dtype
    return MetaTensor(array.shape, dtype)


as_tensor = tensor
from_numpy = tensor


# ---- functions on tensors ------------------------------------------------------------------------

def cat(tensors: Sequence[MetaTensor], dim: builtins.int = 0) -> MetaTensor:
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or list(tensors[:1])
    first = tensors[0]
    d = _dim(dim, first.ndim)
    for t in tensors[1:]:
        if t.ndim != first.ndim or builtins.any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != d):
            raise ValueError(f"cat: shapes {[tuple(x.shape) for x in tensors]} differ outside dim {dim}")
    shape = list(first.shape)
    shape[d] = builtins.sum(t.shape[d] for t in tensors)
    return MetaTensor(shape, first.dtype)


concat = concatenate = cat


def stack(tensors: Sequence[MetaTensor], dim: builtins.int = 0) -> MetaTensor:
    first = tensors[0]
    d = dim % (first.ndim + 1)
    return MetaTensor(first.shape[:d] + (len(tensors),) + first.shape[d:], first.dtype)


def split(x: MetaTensor, split_size: Any, dim: builtins.int = 0) -> Tuple[MetaTensor, ...]:
    d = _dim(dim, x.ndim)
    total = x.shape[d]
    sizes = list(split_size) if isinstance(split_size, (list, tuple)) else \
        [min(split_size, total - i) for i in range(0, total, split_size)]
    if builtins.sum(sizes) != total:
        raise ValueError(f"split sizes {sizes} do not add up to dim {dim} of size {total}")
    return tuple(MetaTensor(x.shape[:d] + (s,) + x.shape[d + 1:], x.dtype) for s in sizes)


def chunk(x: MetaTensor, chunks: builtins.int, dim: builtins.int = 0) -> Tuple[MetaTensor, ...]:
    size = -(-x.shape[_dim(dim, x.ndim)] // chunks)
    return split(x, max(size, 1), dim)


def narrow(x: MetaTensor, dim: builtins.int, start: builtins.int, length: builtins.int) -> MetaTensor:
    d = _dim(dim, x.ndim)
    return MetaTensor(x.shape[:d] + (length,) + x.shape[d + 1:], x.dtype)


def index_select(x: MetaTensor, dim: builtins.int, index: MetaTensor) -> MetaTensor:
    d = _dim(dim, x.ndim)
    return MetaTensor(x.shape[:d] + (index.numel(),) + x.shape[d + 1:], x.dtype)


def where(condition: Any, a: Any = None, b: Any = None) -> MetaTensor:
    if a is None:
        raise MetaTorchError(f"{HERE}: where(condition) has value-dependent shape")
    return MetaTensor(_broadcast(condition, a, b), _result_dtype(a, b))


def matmul(a: MetaTensor, b: MetaTensor) -> MetaTensor:
    sa, sb = list(a.shape), list(b.shape)
    if len(sa) == 1 and len(sb) == 1:
        return MetaTensor((), _result_dtype(a, b))
    va, vb = len(sa) == 1, len(sb) == 1
    sa, sb = ([1] + sa if va else sa), (sb + [1] if vb else sb)
    if sa[-1] != sb[-2]:
        raise ValueError(f"matmul: {tuple(a.shape)} @ {tuple(b.shape)}")
    batch = list(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2])))
    shape = batch + ([] if va else [sa[-2]]) + ([] if vb else [sb[-1]])
    return MetaTensor(shape, _result_dtype(a, b))


mm = bmm = matmul


def outer(a: MetaTensor, b: MetaTensor) -> MetaTensor:
    return MetaTensor((a.numel(), b.numel()), _result_dtype(a, b))


def broadcast_to(x: MetaTensor, shape: Sequence[builtins.int]) -> MetaTensor:
    return x.expand(tuple(shape))


def _method(name: str) -> Callable[..., MetaTensor]:
    def call(x: MetaTensor, *args: Any, **kwargs: Any) -> MetaTensor:
        return getattr(x, name)(*args, **kwargs)

    call.__name__ = name
    return call


for _name in ("abs", "exp", "log", "sin", "cos", "sqrt", "rsqrt", "sigmoid", "tanh", "relu", "neg", "round", "floor",
              "ceil", "clamp", "clip", "pow", "reciprocal", "sign", "softmax", "sum", "mean", "amax", "amin", "prod",
              "cumsum", "any", "all", "flatten", "unflatten", "unsqueeze", "squeeze", "transpose", "permute",
              "reshape", "t", "masked_fill", "repeat", "logical_not", "add", "sub", "mul", "div"):
    globals()[_name] = _method(_name)
del _name


def _comparison(a: Any, b: Any) -> MetaTensor:
    return _binary(a, b, bool_)


eq = ne = lt = le = gt = ge = logical_and = logical_or = _comparison


def maximum(a: Any, b: Any) -> MetaTensor:
    return _binary(a, b)


minimum = maximum


def manual_seed(seed: builtins.int) -> None:
    return None


class Generator:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def manual_seed(self, seed: builtins.int) -> "Generator":
        return self


# ---- autograd switches ---------------------------------------------------------------------------

class _GradMode:
    """``no_grad()`` etc.: context managers and decorators that change nothing here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None

    def __call__(self, fn: Callable) -> Callable:
        return fn


no_grad = enable_grad = inference_mode = set_grad_enabled = _GradMode


def is_grad_enabled() -> builtins.bool:
    return True


class _Function:
    """``torch.autograd.Function``: subclassable; ``apply`` would run the op (no values here)."""

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        raise MetaTorchError(f"{HERE}: {cls.__name__}.apply runs an op; the shape-only torch only builds models")


# ---- nn.Module -----------------------------------------------------------------------------------

class Module:
    """torch.nn.Module's registration semantics: parameters, buffers (persistent or not) and
    submodules, named_* traversal with shared parameters reported once, state_dict."""

    training: builtins.bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if "_parameters" not in d:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(f"cannot assign {name!r} before Module.__init__() call")
            object.__setattr__(self, name, value)
            return
        if isinstance(value, Parameter):
            d.pop(name, None)
            self._buffers.pop(name, None)
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            d.pop(name, None)
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
            self._modules[name] = value
        elif name in self._parameters or name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to {name!r} (a parameter or submodule; "
                                "torch.nn.Parameter / Module or None expected)")
            (self._parameters if name in self._parameters else self._modules)[name] = None
        elif name in self._buffers:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for table in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(table, {}):
                del self.__dict__[table][name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: Optional[MetaTensor], persistent: builtins.bool = True) -> None:
        self.__dict__.pop(name, None)
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = value
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def register_parameter(self, name: str, value: Optional[Parameter]) -> None:
        self.__dict__.pop(name, None)
        self._parameters[name] = value

    def add_module(self, name: str, module: Optional["Module"]) -> None:
        self.__dict__.pop(name, None)
        self._modules[name] = module

    register_module = add_module

    def named_modules(self, memo: Optional[set] = None, prefix: str = "",
                      remove_duplicate: builtins.bool = True) -> Iterator[Tuple[str, "Module"]]:
        memo = set() if memo is None else memo
        if remove_duplicate and id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        return (m for _, m in self.named_modules())

    def named_children(self) -> Iterator[Tuple[str, "Module"]]:
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self) -> Iterator["Module"]:
        return (m for _, m in self.named_children())

    def _named(self, table: str, prefix: str, recurse: builtins.bool,
               remove_duplicate: builtins.bool) -> Iterator[Tuple[str, MetaTensor]]:
        seen: set = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in module.__dict__[table].items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: builtins.bool = True,
                         remove_duplicate: builtins.bool = True) -> Iterator[Tuple[str, Parameter]]:
        return self._named("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: builtins.bool = True) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: builtins.bool = True,
                      remove_duplicate: builtins.bool = True) -> Iterator[Tuple[str, MetaTensor]]:
        return self._named("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: builtins.bool = True) -> Iterator[MetaTensor]:
        return (b for _, b in self.named_buffers(recurse=recurse))

    def state_dict(self, *args: Any, prefix: str = "", keep_vars: builtins.bool = False,
                   **kwargs: Any) -> Dict[str, MetaTensor]:
        out: Dict[str, MetaTensor] = {}
        for module_prefix, module in self.named_modules(prefix=prefix.rstrip("."), remove_duplicate=False):
            for name, value in module._parameters.items():
                if value is not None:
                    out[f"{module_prefix}.{name}" if module_prefix else name] = value
            for name, value in module._buffers.items():
                if value is not None and name not in module._non_persistent:
                    out[f"{module_prefix}.{name}" if module_prefix else name] = value
        return out

    def get_submodule(self, target: str) -> "Module":
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no attribute `{part}`")
            module = module._modules[part]
        return module

    def get_parameter(self, target: str) -> Parameter:
        path, _, name = target.rpartition(".")
        return self.get_submodule(path)._parameters[name]

    def train(self, mode: builtins.bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: builtins.bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def _apply(self, fn: Callable[[MetaTensor], MetaTensor], recurse: builtins.bool = True) -> "Module":
        if recurse:
            for m in self.children():
                m._apply(fn)
        for name, p in self._parameters.items():
            if p is not None:
                cast = fn(p)
                p.shape, p.dtype = cast.shape, cast.dtype
        for name, b in self._buffers.items():
            if b is not None:
                self._buffers[name] = fn(b)
        return self

    def to(self, *args: Any, **kwargs: Any) -> "Module":
        target = kwargs.get("dtype") or next((a for a in args if isinstance(a, dtype)), None)
        if target is None:
            return self
        return self._apply(lambda t: t.to(target) if t.dtype.is_floating_point else t)

    def float(self) -> "Module":
        return self.to(float32)

    def half(self) -> "Module":
        return self.to(float16)

    def bfloat16(self) -> "Module":
        return self.to(bfloat16)

    def cpu(self) -> "Module":
        return self

    cuda = npu = cpu

    def zero_grad(self, *args: Any, **kwargs: Any) -> None:
        return None

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise MetaTorchError(f"{HERE}: {type(self).__name__} cannot run: the shape-only torch only builds models")

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))


class Identity(Module):
    pass


class _Stateless(Module):
    """Activations, dropout, ...: modules without parameters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args, self.kwargs = args, kwargs


def _stateless(name: str) -> type:
    return type(name, (_Stateless,), {})


Dropout, GELU, SiLU, ReLU, Tanh, Sigmoid, Softmax, Mish, Hardswish, LeakyReLU, Flatten, Upsample = (
    _stateless(n) for n in ("Dropout", "GELU", "SiLU", "ReLU", "Tanh", "Sigmoid", "Softmax", "Mish", "Hardswish",
                            "LeakyReLU", "Flatten", "Upsample"))


class Linear(Module):
    def __init__(self, in_features: builtins.int, out_features: builtins.int, bias: builtins.bool = True,
                 device: Any = None, dtype: Optional[dtype] = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(MetaTensor((out_features, in_features), dtype))
        self.bias = Parameter(MetaTensor((out_features,), dtype)) if bias else None


class Embedding(Module):
    def __init__(self, num_embeddings: builtins.int, embedding_dim: builtins.int,
                 padding_idx: Optional[builtins.int] = None, *args: Any, dtype: Optional[dtype] = None,
                 _weight: Optional[MetaTensor] = None, **kwargs: Any) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = Parameter(_weight if _weight is not None else MetaTensor((num_embeddings, embedding_dim), dtype))


def _normalized(shape: Any) -> Tuple[builtins.int, ...]:
    return (shape,) if isinstance(shape, (builtins.int, np.integer)) else tuple(shape)


class LayerNorm(Module):
    def __init__(self, normalized_shape: Any, eps: builtins.float = 1e-5, elementwise_affine: builtins.bool = True,
                 bias: builtins.bool = True, device: Any = None, dtype: Optional[dtype] = None) -> None:
        super().__init__()
        self.normalized_shape, self.eps = _normalized(normalized_shape), eps
        self.weight = Parameter(MetaTensor(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(MetaTensor(self.normalized_shape, dtype)) if elementwise_affine and bias else None


class RMSNorm(Module):
    def __init__(self, normalized_shape: Any, eps: Optional[builtins.float] = None,
                 elementwise_affine: builtins.bool = True, device: Any = None, dtype: Optional[dtype] = None) -> None:
        super().__init__()
        self.normalized_shape, self.eps = _normalized(normalized_shape), eps
        self.weight = Parameter(MetaTensor(self.normalized_shape, dtype)) if elementwise_affine else None


class GroupNorm(Module):
    def __init__(self, num_groups: builtins.int, num_channels: builtins.int, eps: builtins.float = 1e-5,
                 affine: builtins.bool = True, device: Any = None, dtype: Optional[dtype] = None) -> None:
        super().__init__()
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = Parameter(MetaTensor((num_channels,), dtype)) if affine else None
        self.bias = Parameter(MetaTensor((num_channels,), dtype)) if affine else None


def _conv(n: builtins.int) -> type:
    def __init__(self: Module, in_channels: builtins.int, out_channels: builtins.int, kernel_size: Any,
                 stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: builtins.int = 1,
                 bias: builtins.bool = True, padding_mode: str = "zeros", device: Any = None,
                 dtype: Optional[dtype] = None) -> None:
        Module.__init__(self)
        kernel = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size,) * n
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel
        self.stride, self.padding, self.groups = stride, padding, groups
        self.weight = Parameter(MetaTensor((out_channels, in_channels // groups) + kernel, dtype))
        self.bias = Parameter(MetaTensor((out_channels,), dtype)) if bias else None

    return type(f"Conv{n}d", (Module,), {"__init__": __init__})


Conv1d, Conv2d, Conv3d = _conv(1), _conv(2), _conv(3)


class ModuleList(Module):
    def __init__(self, modules: Optional[Sequence[Module]] = None) -> None:
        super().__init__()
        for m in modules or ():
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Sequence[Module]) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: builtins.int, module: Module) -> None:
        items = list(self._modules.values())
        items.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(items):
            self._modules[str(i)] = m

    def __getitem__(self, index: Any) -> Any:
        items = list(self._modules.values())
        return ModuleList(items[index]) if isinstance(index, slice) else items[index]

    def __setitem__(self, index: builtins.int, module: Module) -> None:
        self._modules[str(index % len(self._modules))] = module

    def __len__(self) -> builtins.int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))


class Sequential(ModuleList):
    def __init__(self, *modules: Any) -> None:
        Module.__init__(self)
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for m in modules:
                self.append(m)


class ModuleDict(Module):
    def __init__(self, modules: Optional[Dict[str, Module]] = None) -> None:
        super().__init__()
        for name, m in (modules or {}).items():
            self.add_module(name, m)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __contains__(self, key: str) -> builtins.bool:
        return key in self._modules

    def __len__(self) -> builtins.int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def keys(self) -> Any:
        return self._modules.keys()

    def values(self) -> Any:
        return self._modules.values()

    def items(self) -> Any:
        return self._modules.items()


class ParameterList(Module):
    def __init__(self, values: Optional[Sequence[Parameter]] = None) -> None:
        super().__init__()
        for v in values or ():
            self.append(v)

    def append(self, value: Parameter) -> "ParameterList":
        self.register_parameter(str(len(self._parameters)), value)
        return self

    def __getitem__(self, index: builtins.int) -> Parameter:
        return list(self._parameters.values())[index]

    def __len__(self) -> builtins.int:
        return len(self._parameters)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(list(self._parameters.values()))


# ---- the module tree: torch, torch.nn, torch.nn.functional, torch.nn.init, ... --------------------

def _missing(module: str) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise MetaTorchError(f"{module}.{name}: not available on the shape-only torch ({HERE}); it builds models "
                                 "but does not run them. If a model's __init__ needs it, add it there")

        unavailable.__name__ = name
        return unavailable

    return __getattr__


def _init_fn(name: str) -> Callable[..., Any]:
    def init(tensor: MetaTensor, *args: Any, **kwargs: Any) -> MetaTensor:
        return tensor

    init.__name__ = name
    return init


def _fan_in_and_fan_out(tensor: MetaTensor) -> Tuple[builtins.int, builtins.int]:
    receptive = builtins.int(np.prod(tensor.shape[2:], dtype=np.int64)) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _build_modules() -> Dict[str, types.ModuleType]:
    """The module objects that stand in for ``torch`` and its submodules."""
    this = sys.modules[__name__]
    names = ["torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.nn.parameter", "torch.nn.modules",
             "torch.autograd", "torch.distributed", "torch.distributed.nn", "torch.distributed.nn.functional",
             "torch.utils", "torch.utils.checkpoint", "torch.types"]
    mods = {name: types.ModuleType(name, f"shape-only {name} ({HERE})") for name in names}
    for module in mods.values():
        module.__path__ = []  # packages: their other submodules come from _StubFinder
    torch_ = mods["torch"]
    exported = {k: v for k, v in vars(this).items() if not k.startswith("_") and k not in (
        "annotations", "builtins", "contextlib", "math", "sys", "types", "np", "Any", "Callable", "Dict", "Iterator",
        "List", "Optional", "Sequence", "Tuple", "Union", "HERE", "models_on_meta", "MetaTorchError")}
    vars(torch_).update(exported)
    torch_.bool = bool_
    torch_.__version__ = "2.13.0+meta"
    torch_.__getattr__ = _missing("torch")
    nn = mods["torch.nn"]
    for name in ("Module", "Parameter", "Identity", "Linear", "Embedding", "LayerNorm", "RMSNorm", "GroupNorm",
                 "Conv1d", "Conv2d", "Conv3d", "ModuleList", "Sequential", "ModuleDict", "ParameterList", "Dropout",
                 "GELU", "SiLU", "ReLU", "Tanh", "Sigmoid", "Softmax", "Mish", "Hardswish", "LeakyReLU", "Flatten",
                 "Upsample"):
        setattr(nn, name, getattr(this, name))
    nn.__getattr__ = _missing("torch.nn")
    init = mods["torch.nn.init"]
    for name in ("normal_", "uniform_", "zeros_", "ones_", "constant_", "xavier_uniform_", "xavier_normal_",
                 "kaiming_uniform_", "kaiming_normal_", "trunc_normal_", "orthogonal_", "eye_", "dirac_",
                 "sparse_"):
        setattr(init, name, _init_fn(name))
    init._calculate_fan_in_and_fan_out = _fan_in_and_fan_out
    init.calculate_gain = lambda *args, **kwargs: 1.0
    init.__getattr__ = _missing("torch.nn.init")
    mods["torch.nn.functional"].__getattr__ = _missing("torch.nn.functional")
    mods["torch.nn.parameter"].Parameter = Parameter
    mods["torch.nn.modules"].Module = Module
    nn.functional, nn.init, nn.parameter, nn.modules = (mods["torch.nn.functional"], init, mods["torch.nn.parameter"],
                                                        mods["torch.nn.modules"])
    autograd = mods["torch.autograd"]
    autograd.Function = type("Function", (_Function,), {})
    autograd.grad_mode = types.SimpleNamespace(no_grad=no_grad, enable_grad=enable_grad)
    autograd.__getattr__ = _missing("torch.autograd")
    dist = mods["torch.distributed"]
    dist.is_available, dist.is_initialized = (lambda: True), (lambda: False)
    dist.get_rank, dist.get_world_size = (lambda group=None: 0), (lambda group=None: 1)
    dist.new_group = lambda ranks=None, **kwargs: None
    dist.ReduceOp = types.SimpleNamespace(SUM="sum", MAX="max", MIN="min", PRODUCT="product", AVG="avg")
    dist.ProcessGroup = type("ProcessGroup", (), {})
    dist.__getattr__ = _missing("torch.distributed")
    dist.nn = mods["torch.distributed.nn"]
    dist.nn.functional = mods["torch.distributed.nn.functional"]
    dist.nn.functional.__getattr__ = _missing("torch.distributed.nn.functional")
    mods["torch.utils.checkpoint"].__getattr__ = _missing("torch.utils.checkpoint")
    mods["torch.utils"].checkpoint = mods["torch.utils.checkpoint"]
    mods["torch.types"].__getattr__ = _missing("torch.types")
    torch_.nn, torch_.autograd, torch_.distributed, torch_.utils, torch_.types = (
        nn, autograd, dist, mods["torch.utils"], mods["torch.types"])
    return mods


_MODULES: Optional[Dict[str, types.ModuleType]] = None


def modules() -> Dict[str, types.ModuleType]:
    """{"torch": ..., "torch.nn": ..., ...}: the stand-in module objects (made once)."""
    global _MODULES
    if _MODULES is None:
        _MODULES = _build_modules()
    return _MODULES


def _is_under(name: str, package: str) -> builtins.bool:
    return name == package or name.startswith(package + ".")


class _StubFinder:
    """Any other ``torch.*`` module a model file imports (``torch.distributed.nn.functional``, ...)
    is made on demand: importing works, calling what it holds raises :class:`MetaTorchError`."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if not _is_under(fullname, "torch") or fullname in modules():
            return None
        import importlib.machinery

        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"shape-only {spec.name} ({HERE}): a stand-in")
        module.__path__ = []
        module.__getattr__ = _missing(spec.name)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


@contextlib.contextmanager
def models_on_meta(package: str = "msmm.models") -> Iterator[types.ModuleType]:
    """Import a fresh ``package`` with ``torch`` bound to this shape-only torch; yields it.

    Whatever ``torch`` and ``package`` the process had (real torch, the auto_convert-bound
    models, nothing) are put back on exit, and import hooks covering ``package`` are set
    aside meanwhile, so the real models are unaffected. Build and inspect models inside the
    ``with`` block: a function that imports lazily after it would get the restored modules.
    """
    parent_name, _, child = package.rpartition(".")
    saved = {n: m for n, m in sys.modules.items() if _is_under(n, "torch") or _is_under(n, package)}
    parent = sys.modules.get(parent_name) if parent_name else None
    parent_attr = parent.__dict__.get(child, None) if parent is not None else None
    hooks = [f for f in sys.meta_path if getattr(f, "covers", None) and _safe_covers(f, package)]
    for name in saved:
        del sys.modules[name]
    for f in hooks:
        sys.meta_path.remove(f)
    stubs = _StubFinder()
    sys.meta_path.insert(0, stubs)
    sys.modules.update(modules())
    try:
        import importlib

        yield importlib.import_module(package)
    finally:
        sys.meta_path.remove(stubs)
        for name in [n for n in sys.modules if _is_under(n, "torch") or _is_under(n, package)]:
            del sys.modules[name]
        sys.modules.update(saved)
        for f in reversed(hooks):
            sys.meta_path.insert(0, f)
        if parent is not None:
            if parent_attr is None:
                parent.__dict__.pop(child, None)
            else:
                setattr(parent, child, parent_attr)


def _safe_covers(finder: Any, package: str) -> builtins.bool:
    try:
        return builtins.bool(finder.covers(package))
    except Exception:  # noqa: BLE001 - a foreign finder's covers() is not ours to debug
        return False
