"""RoPE scaling of HF ``rope_scaling`` (``linear``, ``dynamic`` NTK, ``yarn``), as HF
transformers computes it (``modeling_rope_utils``).

``parse_rope_scaling`` reads a ``rope_scaling`` dict (``type`` or ``rope_type``) into a
``RopeScaling``, or None for plain RoPE (no dict, ``default``, Qwen2-VL's ``mrope``); every
other type, an unknown key and a bad value are errors naming the key. Static kinds (linear,
yarn) change the inverse frequencies once (``scaled_inverse_frequencies``); ``dynamic`` raises
the base with the sequence length, per forward from the largest position id as HF does
(``msmm.models.core.rotary.RotaryEmbedding``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

PLAIN = ("default", "mrope")  # types that mean plain RoPE (M-RoPE's sections are read elsewhere)
# keys each type takes besides its type key (HF's rope_config_validation, transformers 4.53)
KEYS = {
    "linear": {"factor"},
    "dynamic": {"factor"},
    "yarn": {"factor", "attention_factor", "beta_fast", "beta_slow", "original_max_position_embeddings",
             "mscale", "mscale_all_dim"},
}
NOT_SCALING = {"mrope_section"}  # keys of rope_scaling that configure something else


@dataclass(frozen=True)
class RopeScaling:
    """One scaling of the RoPE inverse frequencies.

    kind: linear | dynamic | yarn. factor: the context extension. original_positions: the
    pre-training context (dynamic: where scaling starts; yarn: the correction range).
    attention_factor: scale of cos/sin (yarn). beta_fast / beta_slow: yarn's ramp bounds in
    rotations."""

    kind: str
    factor: float
    original_positions: Optional[int] = None
    attention_factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0


def _number(raw: Mapping[str, Any], key: str, where: str, positive: bool = True) -> Optional[float]:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
            positive and value <= 0):
        raise ValueError(f"{where}.{key}: expected a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def parse_rope_scaling(raw: Optional[Mapping[str, Any]], max_position_embeddings: Optional[int],
                       where: str = "rope_scaling") -> Optional[RopeScaling]:
    """HF ``rope_scaling`` (with the config's ``max_position_embeddings``) -> RopeScaling, or
    None for plain RoPE. Errors name ``where`` and the key."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected an object or null, got {raw!r}")
    kind = raw.get("rope_type", raw.get("type"))
    if "rope_type" in raw and "type" in raw and raw["type"] != raw["rope_type"] and raw["type"] != "mrope":
        raise ValueError(f"{where}: type {raw['type']!r} and rope_type {raw['rope_type']!r} disagree")
    if kind is None and set(raw) <= NOT_SCALING:
        return None
    if kind not in PLAIN and kind not in KEYS:
        raise ValueError(f"{where}.{'rope_type' if 'rope_type' in raw else 'type'}: {kind!r} is not supported; "
                         f"msmm implements {', '.join(PLAIN + tuple(KEYS))} (as HF transformers)")
    allowed = KEYS.get(kind, set()) | NOT_SCALING | {"type", "rope_type"}
    for key in raw:
        if key not in allowed:
            raise ValueError(f"{where}.{key}: not a key of rope type {kind!r} (it takes {sorted(allowed)})")
    if kind in PLAIN:
        return None
    factor = _number(raw, "factor", where)
    if factor is None:
        raise ValueError(f"{where}.factor: required for rope type {kind!r}")
    if kind == "linear":
        return RopeScaling(kind, factor)
    if max_position_embeddings is None and (kind == "dynamic" or "original_max_position_embeddings" in raw):
        raise ValueError(f"{where}: rope type {kind!r} needs the config's max_position_embeddings")
    if kind == "dynamic":
        return RopeScaling(kind, factor, max_position_embeddings)
    original = raw.get("original_max_position_embeddings")
    if original is not None:
        if isinstance(original, bool) or not isinstance(original, int) or original <= 0:
            raise ValueError(f"{where}.original_max_position_embeddings: expected a positive integer, got {original!r}")
        factor = max_position_embeddings / original  # HF: the extension is the ratio of the two contexts
    else:
        original = max_position_embeddings
    if original is None:
        raise ValueError(f"{where}: rope type 'yarn' needs max_position_embeddings or "
                         "original_max_position_embeddings")
    attention = _number(raw, "attention_factor", where)
    mscale, mscale_all_dim = _number(raw, "mscale", where), _number(raw, "mscale_all_dim", where)
    if attention is None:
        attention = (_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim) if mscale and mscale_all_dim
                     else _yarn_mscale(factor))
    return RopeScaling(kind, factor, original, attention, _number(raw, "beta_fast", where) or 32.0,
                       _number(raw, "beta_slow", where) or 1.0)


def _yarn_ramp(scaling: RopeScaling, dim: int, base: float) -> np.ndarray:
    """1 where a channel keeps its frequency (extrapolates), 0 where it is interpolated."""
    def correction_dim(rotations: float) -> float:
        return dim * math.log(scaling.original_positions / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(scaling.beta_fast)), 0)
    high = min(math.ceil(correction_dim(scaling.beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # as HF: no zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    return 1.0 - ramp


def scaled_inverse_frequencies(inv_freq: np.ndarray, scaling: Optional[RopeScaling], base: float) -> np.ndarray:
    """The static inverse frequencies (float64, ``dim / 2`` of them) of a linear or yarn
    scaling; unchanged for none or dynamic (which scales per forward)."""
    if scaling is None or scaling.kind == "dynamic":
        return inv_freq
    if scaling.kind == "linear":
        return inv_freq / scaling.factor
    keep = _yarn_ramp(scaling, 2 * len(inv_freq), base)
    return inv_freq / scaling.factor * (1.0 - keep) + inv_freq * keep
