"""Checkpoints in the MindSpeed-MM layout, safetensors payload, written atomically.

    SAVE/
      latest_checkpointed_iteration.txt         "100" (written last)
      iter_0000100/
        mp_rank_00/
          model_optim_rng.safetensors           model.<name>, optimizer.*, rng.*
          metadata.json                         iteration, data position, RNG (python),
                                                what is included, the training arguments

A save writes ``SAVE/.iter_0000100.tmp-<pid>/`` completely (files fsynced), renames it to
``iter_0000100`` and only then replaces ``latest_checkpointed_iteration.txt`` (temporary
file + rename). A process killed at any point leaves the previous checkpoint and the
tracker file intact. Nothing is unpickled: tensors are safetensors, the rest is JSON.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from safetensors.numpy import save_file

from .layout import METADATA, PAYLOAD, TRACKER, iteration_dir, read_json, resolve_load_dir
from .safetensors import open_file


@dataclass
class CheckpointState:
    """What a checkpoint holds. ``optimizer`` / ``rng`` are empty when not saved."""

    iteration: int
    model: Dict[str, np.ndarray]
    optimizer: Dict[str, np.ndarray] = field(default_factory=dict)
    rng: Dict[str, np.ndarray] = field(default_factory=dict)
    python_rng: Optional[list] = None
    data: Optional[Dict[str, int]] = None
    extra: Dict[str, Any] = field(default_factory=dict)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: str, value: Any) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(root: str, state: CheckpointState, write_extra: Optional[Callable[[str], None]] = None) -> str:
    """Write ``state`` under ``root`` atomically; returns the iteration directory.
    ``write_extra(directory)`` adds files to the iteration directory before it takes its
    name (the LoRA adapter files), so they are part of the same atomic save."""
    os.makedirs(root, exist_ok=True)
    final = iteration_dir(root, state.iteration)
    for name in os.listdir(root):  # what an interrupted save left behind
        if name.startswith(".iter_") and ".tmp-" in name:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    tmp = os.path.join(root, f".{os.path.basename(final)}.tmp-{os.getpid()}")
    shard = os.path.join(tmp, "mp_rank_00")
    os.makedirs(shard)
    tensors = {f"model.{k}": np.ascontiguousarray(v) for k, v in state.model.items()}
    tensors.update({k: np.ascontiguousarray(v) for k, v in state.optimizer.items()})
    tensors.update({f"rng.{k}": np.ascontiguousarray(v) for k, v in state.rng.items()})
    payload = os.path.join(shard, PAYLOAD)
    save_file(tensors, payload, metadata={"format": "msmm"})
    with open(payload, "rb+") as f:
        os.fsync(f.fileno())
    _write_json(os.path.join(shard, METADATA), {
        "iteration": state.iteration,
        "data": state.data,
        "python_rng": state.python_rng,
        "has_optimizer": bool(state.optimizer),
        "has_rng": bool(state.rng),
        **state.extra,
    })
    _fsync_dir(shard)
    if write_extra is not None:
        write_extra(tmp)
    _fsync_dir(tmp)
    if os.path.exists(final):  # re-saving an iteration: move the old one out of the way first
        stale = final + f".old-{os.getpid()}"
        os.rename(final, stale)
        os.rename(tmp, final)
        shutil.rmtree(stale)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    tracker_tmp = os.path.join(root, f".{TRACKER}.tmp-{os.getpid()}")
    with open(tracker_tmp, "w") as f:
        f.write(str(state.iteration))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tracker_tmp, os.path.join(root, TRACKER))
    _fsync_dir(root)
    return final


def prune_checkpoints(root: str, keep: int) -> List[str]:
    """Delete all but the newest ``keep`` ``iter_*`` directories (``--save-total-limit``);
    the one the tracker file names is always kept. Returns the deleted directories."""
    iterations = sorted(int(n[5:]) for n in os.listdir(root) if n.startswith("iter_") and n[5:].isdigit())
    tracked = None
    tracker = os.path.join(root, TRACKER)
    if os.path.isfile(tracker):
        with open(tracker) as f:
            text = f.read().strip()
        tracked = int(text) if text.isdigit() else None
    stale = [i for i in iterations[:-keep] if i != tracked] if keep > 0 else []
    removed = []
    for i in stale:
        shutil.rmtree(iteration_dir(root, i))
        removed.append(iteration_dir(root, i))
    return removed


def read_metadata(path: str) -> Dict[str, Any]:
    """metadata.json of the checkpoint ``--load path`` points at (no tensors read)."""
    return read_json(os.path.join(resolve_load_dir(path), "mp_rank_00", METADATA))


def load_checkpoint(path: str) -> CheckpointState:
    """Read the checkpoint ``--load path`` points at (see :func:`resolve_load_dir`)."""
    directory = resolve_load_dir(path)
    shard = os.path.join(directory, "mp_rank_00")
    payload = os.path.join(shard, PAYLOAD)
    meta = read_json(os.path.join(shard, METADATA))
    groups: Dict[str, Dict[str, np.ndarray]] = {"model": {}, "optimizer": {}, "rng": {}}
    for key, tensor in open_file(payload).items():
        head, _, rest = key.partition(".")
        if head not in groups:
            raise ValueError(f"{payload}: unexpected tensor {key!r}")
        value = tensor.numpy() if tensor.dtype == "BF16" else np.array(tensor.load())
        groups[head][rest if head != "optimizer" else key] = value
    if not isinstance(meta.get("iteration"), int):
        raise ValueError(f"{os.path.join(shard, METADATA)}: 'iteration' must be an integer, got {meta.get('iteration')!r}")
    extra = {k: v for k, v in meta.items() if k not in ("iteration", "data", "python_rng", "has_optimizer", "has_rng")}
    return CheckpointState(meta["iteration"], groups["model"], groups["optimizer"], groups["rng"],
                           meta.get("python_rng"), meta.get("data"), extra)


def capture_python_rng() -> list:
    version, state, gauss = random.getstate()
    return [version, list(state), gauss]


def restore_python_rng(saved: list) -> None:
    random.setstate((saved[0], tuple(saved[1]), saved[2]))


def capture_numpy_rng() -> Dict[str, np.ndarray]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"numpy.keys": keys, "numpy.pos_gauss": np.array([pos, has_gauss, gauss], np.float64)}


def restore_numpy_rng(arrays: Dict[str, np.ndarray]) -> None:
    pos, has_gauss, gauss = arrays["numpy.pos_gauss"]
    np.random.set_state(("MT19937", arrays["numpy.keys"], int(pos), int(has_gauss), float(gauss)))
