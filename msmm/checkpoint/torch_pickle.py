"""Tensors of a torch zip checkpoint without torch and without running pickled code.

``torch.save`` files (``pytorch_model.bin``, LLaVA's ``mm_projector.bin``, MindSpeed-MM's
``converted_*.pt``) and TorchScript archives (OpenAI's CLIP ``ViT-L-14-336px.pt``) are zip files:
``<root>/data.pkl`` is a pickle of the object tree and ``<root>/data/<key>`` the raw storages.
``read_torch_zip`` unpickles ``data.pkl`` with an unpickler that resolves only what a
checkpoint of tensors needs (torch's tensor and parameter rebuild functions, its storage
types, ``OrderedDict``, TorchScript's list builders; a TorchScript module class becomes an
inert attribute holder), as ``torch.load(weights_only=True)`` does; any other global is an error
naming it. Tensors are read lazily from the zip and named by their path in the tree
(``visual.transformer.resblocks.0.attn.in_proj_weight``).
"""
from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Dict, Tuple

import numpy as np

from .safetensors import STORAGE, Tensor

# torch storage class -> safetensors dtype code
STORAGE_DTYPES = {"DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
                  "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
                  "ByteStorage": "U8", "BoolStorage": "BOOL"}


class TorchPickleError(ValueError):
    """A file that is not a torch zip checkpoint of tensors; the message names the file."""


class _StorageType:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


class _Storage:
    """One storage of the archive, read from the zip when a tensor over it is loaded."""

    def __init__(self, read: Callable[[], bytes], dtype: str, source: str) -> None:
        self.read, self.dtype, self.source = read, dtype, source


class _ScriptObject:
    """A TorchScript module or object: its pickled state (a dict of attributes), nothing else."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild_tensor(storage: _Storage, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...], *_: Any) -> Tensor:
    dtype = np.dtype(STORAGE[storage.dtype])

    def load() -> np.ndarray:
        flat = np.frombuffer(storage.read(), dtype=dtype)
        if size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= len(flat):
            raise TorchPickleError(f"{storage.source}: a tensor of shape {tuple(size)} runs past its storage")
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=tuple(size),
                                               strides=tuple(s * dtype.itemsize for s in stride))
        return view.copy()  # C-contiguous; a 0-d tensor stays 0-d

    return Tensor(storage.dtype, tuple(int(n) for n in size), load, storage.source)


def _rebuild_parameter(data: Tensor, *_: Any) -> Tensor:
    return data


def _first(value: Any, *_: Any) -> Any:
    return value


GLOBALS: Dict[Tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    **{("torch.jit._pickle", name): _first for name in ("build_intlist", "build_doublelist", "build_boollist",
                                                       "build_tensorlist", "build_genericlist", "restore_type_tag")},
    **{("torch", name): _StorageType(code) for name, code in STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, path: str) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.root, self.path = archive, root, path

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        if (module, name) in GLOBALS:
            return GLOBALS[(module, name)]
        raise TorchPickleError(f"{self.path}: refuses to unpickle {module}.{name} (only tensors, their containers and "
                               "TorchScript module attributes are read; no pickled code runs)")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise TorchPickleError(f"{self.path}: unexpected persistent id {pid!r}")
        member = f"{self.root}/data/{pid[2]}"
        if member not in self.archive.namelist():
            raise TorchPickleError(f"{self.path}: storage {pid[2]} is missing from the archive")
        return _Storage(lambda: self.archive.read(member), pid[1].dtype, f"{self.path}:{member}")


def _flatten(node: Any, prefix: str, out: Dict[str, Tensor]) -> None:
    if isinstance(node, _ScriptObject):
        node = getattr(node, "state", {})
    if isinstance(node, Tensor):
        out[prefix.rstrip(".")] = node
    elif isinstance(node, dict):
        for key, value in node.items():
            _flatten(value, f"{prefix}{key}.", out)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _flatten(value, f"{prefix}{i}.", out)


def is_torch_zip(path: str) -> bool:
    return zipfile.is_zipfile(path)


def read_torch_zip(path: str) -> Dict[str, Tensor]:
    """{dotted name: lazily loaded Tensor} of a torch zip checkpoint or TorchScript archive."""
    archive = zipfile.ZipFile(path)
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise TorchPickleError(f"{path}: not a torch checkpoint (no single <root>/data.pkl in the zip)")
    root = pickles[0].split("/")[0]
    try:
        tree = _Unpickler(archive.read(pickles[0]), archive, root, path).load()
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError) as err:
        raise TorchPickleError(f"{path}: {pickles[0]} cannot be read ({type(err).__name__}: {err})") from err
    out: Dict[str, Tensor] = {}
    _flatten(tree, "", out)
    if not out:
        raise TorchPickleError(f"{path}: holds no tensors")
    return out
