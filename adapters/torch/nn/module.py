"""``torch.nn.Module`` as a MindSpore Cell, ``nn.Parameter``, and the containers.

A Module's ``construct`` runs its ``forward``, so a torch-style model is an ordinary
Cell: PyNative calls it eagerly and ``mindspore.jit`` compiles it. Names follow torch
(``layers.0.self_attn.q_proj.weight``), so HF checkpoints load by name.

Buffers: a persistent buffer is held as a Parameter with ``requires_grad=False`` so
that a compiled graph reads its current value (loading a checkpoint updates it in
place); a non-persistent buffer is a plain Tensor attribute, which graph mode folds
as a constant.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Callable, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union

import mindspore
import numpy as np
from mindspore import Tensor, nn

from .._dtype import _FLOATING

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class _ParameterMeta(type):
    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, mindspore.Parameter)

    def __call__(cls, data: Optional[Tensor] = None, requires_grad: bool = True) -> mindspore.Parameter:
        if data is None:
            data = Tensor(np.zeros((0,), np.float32))
        return mindspore.Parameter(data, requires_grad=requires_grad)


class Parameter(metaclass=_ParameterMeta):
    """``nn.Parameter(data, requires_grad=True)``: returns a MindSpore Parameter.

    ``isinstance(p, nn.Parameter)`` holds for every MindSpore Parameter.
    """


def _cast_floating(t: Tensor, dtype) -> Tensor:
    return t.astype(dtype) if t.dtype in _FLOATING and t.dtype != dtype else t


def _apply_to_parameter(param: mindspore.Parameter, fn: Callable[[Tensor], Tensor]) -> None:
    dtype = fn(param).dtype
    if dtype != param.dtype:
        param.set_dtype(dtype)


class Module(nn.Cell):
    """Base class of torch-style modules: a Cell whose ``construct`` is ``forward``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_buffer_order", [])  # every buffer name, in registration order
        object.__setattr__(self, "_persistent_buffers", set())
        object.__setattr__(self, "_volatile_buffers", {})
        self.set_train(True)  # torch modules start in training mode

    def construct(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # ---- registration -------------------------------------------------------------
    def register_buffer(self, name: str, tensor: Optional[Tensor], persistent: bool = True) -> None:
        if "." in name or not name:
            raise KeyError(f"invalid buffer name {name!r}")
        self._persistent_buffers.discard(name)
        self._volatile_buffers.pop(name, None)
        if name in self._params:
            del self._params[name]
        if name not in self._buffer_order:
            self._buffer_order.append(name)
        if persistent and tensor is not None:
            self._params[name] = mindspore.Parameter(tensor, name=name, requires_grad=False)
            self._persistent_buffers.add(name)
        else:
            self._volatile_buffers[name] = tensor
            object.__setattr__(self, name, tensor)

    def register_parameter(self, name: str, param: Optional[mindspore.Parameter]) -> None:
        if param is None:
            self._params[name] = None
        else:
            setattr(self, name, param)

    def add_module(self, name: str, module: Optional[nn.Cell]) -> None:
        if module is None:
            self._cells[name] = None
        else:
            setattr(self, name, module)

    register_module = add_module

    def __setattr__(self, name, value):
        volatile = self.__dict__.get("_volatile_buffers")
        if volatile is not None and name in volatile:
            volatile[name] = value
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    # ---- traversal (torch names, relative to self) ---------------------------------
    def named_children(self) -> Iterator[Tuple[str, nn.Cell]]:
        for name, cell in self._cells.items():
            if cell is not None:
                yield name, cell

    def children(self) -> Iterator[nn.Cell]:
        for _, cell in self.named_children():
            yield cell

    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        memo = set() if memo is None else memo
        if remove_duplicate and id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, cell in self.named_children():
            sub = f"{prefix}.{name}" if prefix else name
            if isinstance(cell, Module):
                yield from cell.named_modules(memo, sub, remove_duplicate)
            elif not (remove_duplicate and id(cell) in memo):
                memo.add(id(cell))
                yield sub, cell

    def modules(self) -> Iterator[nn.Cell]:
        for _, module in self.named_modules():
            yield module

    def _own_tensors(self, buffers: bool) -> Iterator[Tuple[str, Tensor]]:
        if not buffers:
            for name, param in self._params.items():
                if param is not None and name not in self._persistent_buffers:
                    yield name, param
            return
        for name in self._buffer_order:
            tensor = self._params[name] if name in self._persistent_buffers else self._volatile_buffers.get(name)
            if tensor is not None:
                yield name, tensor

    def _named_members(self, buffers: bool, prefix: str, recurse: bool, persistent_only: bool = False):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            if isinstance(module, Module):
                members = module._own_tensors(buffers)
                if persistent_only:
                    members = ((n, t) for n, t in members if n in module._persistent_buffers)
            else:  # a plain MindSpore Cell inside a torch-style model: all its parameters
                members = [] if buffers else module.parameters_and_names()
            for name, tensor in members:
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                yield (f"{module_prefix}.{name}" if module_prefix else name), tensor

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members(False, prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[mindspore.Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members(True, prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def get_submodule(self, target: str) -> nn.Cell:
        module = self
        for part in target.split(".") if target else []:
            if part not in module._cells:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (in {target!r})")
            module = module._cells[part]
        return module

    def get_parameter(self, target: str) -> mindspore.Parameter:
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._params:
            raise AttributeError(f"{type(module).__name__} has no parameter {name!r} (in {target!r})")
        return module._params[name]

    # ---- state -------------------------------------------------------------------
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """Parameters then persistent buffers of each module, depth first, as torch orders
        them; a tied parameter appears under each of its names."""
        out = OrderedDict() if destination is None else destination
        for name, param in self._own_tensors(buffers=False):
            out[prefix + name] = param
        for name, buf in self._own_tensors(buffers=True):
            if name in self._persistent_buffers:
                out[prefix + name] = buf
        for name, cell in self.named_children():
            if isinstance(cell, Module):
                cell.state_dict(destination=out, prefix=f"{prefix}{name}.")
            else:
                for pname, param in cell.parameters_and_names():
                    out[f"{prefix}{name}.{pname}"] = param
        return out

    def load_state_dict(self, state_dict: Mapping[str, object], strict: bool = True, assign: bool = False):
        """Copy values into the existing parameters and buffers, in place.

        In place (``copy_``), so a graph compiled before the load reads the new values
        (``Parameter.set_data`` would not reach it). Shapes must match; values are cast
        to each parameter's dtype.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            value = value if isinstance(value, Tensor) else Tensor(np.asarray(value))
            if tuple(value.shape) != tuple(target.shape):
                errors.append(f"size mismatch for {key}: checkpoint {tuple(value.shape)}, "
                              f"model {tuple(target.shape)}")
                continue
            target.copy_(value.astype(target.dtype) if value.dtype != target.dtype else value)
        if strict and (missing or unexpected):
            if missing:
                errors.append("missing keys: " + ", ".join(missing))
            if unexpected:
                errors.append("unexpected keys: " + ", ".join(unexpected))
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n  "
                               + "\n  ".join(errors))
        return IncompatibleKeys(missing, unexpected)

    # ---- modes, grads, dtypes -----------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        self.set_train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Gradients are returned by ``value_and_grad``, never stored: nothing to clear."""

    def apply(self, fn: Callable[[nn.Cell], None]) -> "Module":
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def to(self, *args, **kwargs) -> "Module":
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)``: casts floating tensors; devices are ignored."""
        dtype = kwargs.get("dtype")
        for arg in args:
            if isinstance(arg, mindspore.dtype.Type):
                dtype = arg
        if dtype is not None:
            self._apply(lambda t: _cast_floating(t, dtype))
        return self

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "Module":
        """torch's ``Module._apply``: ``fn`` on every parameter and buffer, children first (a
        module may override it, e.g. to keep some state fp32). ``fn`` changes dtypes only:
        a parameter takes the dtype of ``fn(param)`` in place, a buffer is replaced by
        ``fn(buffer)`` (as in torch)."""
        if recurse:
            for cell in self.children():
                if isinstance(cell, Module):
                    cell._apply(fn)
                else:
                    for param in cell.get_parameters():
                        _apply_to_parameter(param, fn)
        for name, param in list(self._params.items()):
            if param is None:
                continue
            if name in self._persistent_buffers:
                new = fn(param)
                if new is not param:
                    self.register_buffer(name, new)
            else:
                _apply_to_parameter(param, fn)
        for name, buf in list(self._volatile_buffers.items()):
            if buf is not None:
                setattr(self, name, fn(buf))
        return self

    def float(self) -> "Module":
        return self.to(mindspore.float32)

    def half(self) -> "Module":
        return self.to(mindspore.float16)

    def bfloat16(self) -> "Module":
        return self.to(mindspore.bfloat16)

    def double(self) -> "Module":
        return self.to(mindspore.float64)

    def cuda(self, device=None) -> "Module":
        return self

    def cpu(self) -> "Module":
        return self

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(cell).replace("\n", "\n  ") for name, cell in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ")" if not lines else head + "\n  " + "\n  ".join(lines) + "\n)"


def _view(container: Module, cells: list) -> Module:
    """``container`` holding ``cells`` without adopting them: assigning would rename
    their parameters after the new parent (torch's slicing has no such side effect)."""
    for index, cell in enumerate(cells):
        container._cells[str(index)] = cell
    return container


class ModuleList(Module, nn.CellList):
    """``nn.ModuleList``; iterable in graph mode (it is a CellList)."""

    def __init__(self, modules: Optional[Iterable[nn.Cell]] = None):
        Module.__init__(self)
        for module in modules or ():
            self.append(module)

    def append(self, module: nn.Cell) -> "ModuleList":
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules: Iterable[nn.Cell]) -> "ModuleList":
        for module in modules:
            self.append(module)
        return self

    def __len__(self) -> int:
        return len(self._cells)

    def __iter__(self):
        return iter(self._cells.values())

    def __getitem__(self, index: Union[int, slice]):
        cells = list(self._cells.values())
        if isinstance(index, slice):
            return _view(ModuleList(), cells[index])
        return cells[index]

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList is a container; call its modules")


class ModuleDict(Module, nn.CellDict):
    """``nn.ModuleDict``."""

    def __init__(self, modules: Optional[Union[Mapping[str, nn.Cell], Iterable]] = None):
        Module.__init__(self)
        items = modules.items() if isinstance(modules, Mapping) else (modules or ())
        for name, module in items:
            setattr(self, name, module)

    def __getitem__(self, key: str) -> nn.Cell:
        return self._cells[key]

    def __setitem__(self, key: str, module: nn.Cell) -> None:
        setattr(self, key, module)

    def __contains__(self, key: str) -> bool:
        return key in self._cells

    def __len__(self) -> int:
        return len(self._cells)

    def __iter__(self):
        return iter(self._cells)

    def keys(self):
        return self._cells.keys()

    def values(self):
        return self._cells.values()

    def items(self):
        return self._cells.items()

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict is a container; call its modules")


class Sequential(Module):
    """``nn.Sequential``: modules applied in order (positional or an OrderedDict)."""

    def __init__(self, *modules):
        super().__init__()
        named = modules[0].items() if len(modules) == 1 and isinstance(modules[0], Mapping) else (
            (str(index), module) for index, module in enumerate(modules))
        for name, module in named:
            setattr(self, name, module)

    def __len__(self) -> int:
        return len(self._cells)

    def __getitem__(self, index: Union[int, slice]):
        cells = list(self._cells.values())
        if isinstance(index, slice):
            return _view(Sequential(), cells[index])
        return cells[index]

    def __iter__(self):
        return iter(self._cells.values())

    def forward(self, x):
        for layer in self._cells.values():
            x = layer(x)
        return x
