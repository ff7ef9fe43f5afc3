"""Matching checkpoint tensors to the parameters a model expects, framework-free: the one
strict check every loader (HF directory, MM checkpoint) goes through."""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Pattern, Tuple

from .safetensors import Tensor


def _listing(names: list) -> str:
    return f"{names[:10]}{' ...' if len(names) > 10 else ''}"


def match_state(tensors: Mapping[str, Tensor], expected: Mapping[str, Tuple[int, ...]], where: str,
                optional: Iterable[str] = (), unused: Optional[Pattern[str]] = None,
                require_all: bool = True) -> Dict[str, Tensor]:
    """The tensors to load, by parameter name, after checking them against ``expected``
    ({name: shape}, the model's ``state_dict()``).

    Every tensor must be a parameter of the model, except those matching ``unused`` (parts
    of a checkpoint the model does not build, such as ViT layers after the feature layer),
    which are dropped. With ``require_all`` every parameter must be found, except those in
    ``optional`` (a head tied to the embeddings). Shapes must be equal. Errors name the
    checkpoint and, for a shape, the file and tensor."""
    optional = set(optional)
    chosen = {k: t for k, t in tensors.items() if not (k not in expected and unused is not None and unused.search(k))}
    unexpected = sorted(k for k in chosen if k not in expected)
    missing = [k for k in expected if k not in chosen and k not in optional] if require_all else []
    if missing or unexpected:
        raise KeyError(f"checkpoint {where} does not match the model: missing {_listing(missing)}, "
                       f"unexpected {_listing(unexpected)}")
    for name, t in chosen.items():
        if tuple(t.shape) != tuple(expected[name]):
            file = t.source.rsplit(":", 1)[0]  # source is "file:key"
            raise ValueError(f"{file}: {name!r} has shape {tuple(t.shape)}, the model expects {tuple(expected[name])}")
    return chosen
