"""Checkpoints in the MindSpeed-MM layout, safetensors payload, written atomically.

    SAVE/
      latest_checkpointed_iteration.txt         "100" (written last)
      iter_0000100/
        mp_rank_00/
          model_optim_rng.safetensors           model.<name> (model<chunk>.<name> with virtual
                                                pipeline stages), optimizer.*, rng.*
          metadata.json                         iteration, data position, RNG (python),
                                                what is included, the training arguments

A save writes ``SAVE/.iter_0000100.tmp-<pid>/`` completely (files fsynced), renames it to
``iter_0000100`` and only then replaces ``latest_checkpointed_iteration.txt`` (temporary
file + rename). A process killed at any point leaves the previous checkpoint and the
tracker file intact. Nothing is unpickled: tensors are safetensors, the rest is JSON.

What a killed save leaves (``.iter_N.tmp-<pid>``, ``iter_N.old-<pid>`` when an iteration was
being re-saved, ``.latest_checkpointed_iteration.txt.tmp-<pid>``) is cleaned by the next save,
unless process ``<pid>`` is alive (another run writing to the same directory); an
``iter_N.old-<pid>`` whose ``iter_N`` is missing is renamed back, never deleted.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from safetensors.numpy import save_file

from .hf import load_config, weight_files
from .layout import (METADATA, PAYLOAD, TRACKER, is_mm_checkpoint, iteration_dir, read_json, resolve_load_dir,
                     shard_dirs)
from .safetensors import open_file, read_header


@dataclass
class CheckpointState:
    """What a checkpoint holds. ``optimizer`` / ``rng`` are empty when not saved. With virtual
    pipeline stages the model's tensors are per chunk, in ``model_chunks`` (``model`` empty)."""

    iteration: int
    model: Dict[str, np.ndarray]
    optimizer: Dict[str, np.ndarray] = field(default_factory=dict)
    rng: Dict[str, np.ndarray] = field(default_factory=dict)
    python_rng: Optional[list] = None
    data: Optional[Dict[str, int]] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    model_chunks: List[Dict[str, np.ndarray]] = field(default_factory=list)


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
    """Write ``state`` under ``root`` atomically (one process holding the whole model);
    returns the iteration directory. ``write_extra(directory)`` adds files to the iteration
    directory before it takes its name (the LoRA adapter files), so they are part of the
    same atomic save."""
    write_shard(root, state)
    return publish(root, state.iteration, write_extra)


def _tmp_dir(root: str, iteration: int, pid: int) -> str:
    return os.path.join(root, f".{os.path.basename(iteration_dir(root, iteration))}.tmp-{pid}")


def write_shard(root: str, state: CheckpointState, shard: str = "mp_rank_00") -> str:
    """Write one model shard's files (``shard``: its ``mp_rank_*`` name) into this process's
    temporary directory for the iteration, fsynced; ``publish`` makes it part of the
    checkpoint. Returns the shard directory."""
    os.makedirs(root, exist_ok=True)
    clean_leftovers(root)
    directory = os.path.join(_tmp_dir(root, state.iteration, os.getpid()), shard)
    os.makedirs(directory)
    tensors = {f"model.{k}": np.ascontiguousarray(v) for k, v in state.model.items()}
    for chunk, part in enumerate(state.model_chunks):
        tensors.update({f"model{chunk}.{k}": np.ascontiguousarray(v) for k, v in part.items()})
    tensors.update({k: np.ascontiguousarray(v) for k, v in state.optimizer.items()})
    tensors.update({f"rng.{k}": np.ascontiguousarray(v) for k, v in state.rng.items()})
    payload = os.path.join(directory, PAYLOAD)
    save_file(tensors, payload, metadata={"format": "msmm"})
    with open(payload, "rb+") as f:
        os.fsync(f.fileno())
    _write_json(os.path.join(directory, METADATA), {
        "iteration": state.iteration,
        "data": state.data,
        "python_rng": state.python_rng,
        "has_optimizer": bool(state.optimizer),
        "has_rng": bool(state.rng),
        **state.extra,
    })
    _fsync_dir(directory)
    return directory


def optimizer_file(dp_rank: int) -> str:
    """The file of a data-parallel rank's distributed-optimizer state in its ``mp_rank_*`` directory."""
    return f"distrib_optim_dp_{dp_rank:03d}.safetensors"


def write_optimizer_shard(root: str, iteration: int, shard: str, dp_rank: int, arrays: Dict[str, np.ndarray]) -> str:
    """Write a data-parallel rank's distributed-optimizer state (``--use-distributed-optimizer``)
    into this process's temporary directory for the iteration; ``publish`` merges it into
    the ``shard`` directory."""
    os.makedirs(root, exist_ok=True)
    directory = os.path.join(_tmp_dir(root, iteration, os.getpid()), shard)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, optimizer_file(dp_rank))
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, path, metadata={"format": "msmm"})
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    _fsync_dir(directory)
    return path


def load_optimizer_shard(path: str, shard: str, dp_rank: int) -> Dict[str, np.ndarray]:
    """A data-parallel rank's distributed-optimizer state from the checkpoint ``--load path``."""
    file = os.path.join(resolve_load_dir(path), shard, optimizer_file(dp_rank))
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: no distributed-optimizer state for data-parallel rank {dp_rank} (saved "
                                "without --use-distributed-optimizer, or with fewer data-parallel ranks); load with "
                                "--no-load-optim")
    return {key: np.array(t.load()) for key, t in open_file(file).items()}


def publish(root: str, iteration: int, write_extra: Optional[Callable[[str], None]] = None) -> str:
    """Make the shards written for ``iteration`` (by this and, in a parallel job, the other
    ranks, whose ``write_shard`` has returned) the checkpoint: they are moved into this
    process's temporary directory, which is renamed to ``iter_N``; then the tracker is
    replaced (temporary file + rename). Called by one process."""
    mine = _tmp_dir(root, iteration, os.getpid())
    os.makedirs(mine, exist_ok=True)
    prefix = os.path.basename(mine).rsplit("-", 1)[0] + "-"
    for name in sorted(os.listdir(root)):  # the other writers' shards of this iteration
        other = os.path.join(root, name)
        if name.startswith(prefix) and other != mine:
            for shard in os.listdir(other):
                target = os.path.join(mine, shard)
                if not os.path.isdir(target):
                    os.rename(os.path.join(other, shard), target)
                    continue
                for file in os.listdir(os.path.join(other, shard)):  # a data-parallel rank's optimizer file
                    os.rename(os.path.join(other, shard, file), os.path.join(target, file))
                os.rmdir(os.path.join(other, shard))
            os.rmdir(other)
    if write_extra is not None:
        write_extra(mine)
    _fsync_dir(mine)
    final = iteration_dir(root, iteration)
    if os.path.exists(final):  # re-saving an iteration: move the old one out of the way first
        stale = final + f".old-{os.getpid()}"
        os.rename(final, stale)
        os.rename(mine, final)
        shutil.rmtree(stale)
    else:
        os.rename(mine, final)
    _fsync_dir(root)
    tracker_tmp = os.path.join(root, f".{TRACKER}.tmp-{os.getpid()}")
    with open(tracker_tmp, "w") as f:
        f.write(str(iteration))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tracker_tmp, os.path.join(root, TRACKER))
    _fsync_dir(root)
    return final


# what an interrupted save leaves: (pattern with the pid as the last group, kind)
_LEFTOVERS = ((re.compile(r"^\.iter_\d+\.tmp-(\d+)$"), "tmp"), (re.compile(r"^(iter_\d+)\.old-(\d+)$"), "old"),
              (re.compile(rf"^\.{re.escape(TRACKER)}\.tmp-(\d+)$"), "tmp"))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (another one than this) is running; this process's own
    leftovers come from an earlier save that failed, so they count as dead."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_leftovers(root: str) -> List[str]:
    """Remove what interrupted saves of dead processes left in ``root``; an
    ``iter_N.old-<pid>`` whose ``iter_N`` is missing (killed between the two renames of a
    re-save) is renamed back to ``iter_N``. Returns what was removed or restored."""
    done = []
    for name in sorted(os.listdir(root)):
        for pattern, kind in _LEFTOVERS:
            match = pattern.match(name)
            if match is None or _alive(int(match.groups()[-1])):
                continue
            path = os.path.join(root, name)
            try:  # several ranks may clean at once: what another one removed first is gone
                if kind == "old" and not os.path.exists(os.path.join(root, match.group(1))):
                    os.rename(path, os.path.join(root, match.group(1)))
                elif os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
            except FileNotFoundError:
                continue
            done.append(path)
    return done


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


def check_load_path(path: str) -> Optional[Dict[str, Any]]:
    """What ``msmm-train`` checks of ``--load path`` at start-up, before anything is built:
    an MM checkpoint (tracker or ``mp_rank_*``) must resolve to an iteration whose every
    shard has a readable ``metadata.json`` and a valid safetensors header (returns
    mp_rank_00's metadata); an HF directory must have a readable ``config.json`` and valid
    safetensors headers (returns None). Errors (``ValueError``, ``OSError``) name the file."""
    if is_mm_checkpoint(path):
        directory = resolve_load_dir(path)
        metadata = None
        for (tp, pp), shard in sorted(shard_dirs(directory).items()):
            meta = read_json(os.path.join(shard, METADATA))
            metadata = meta if (tp, pp) == (0, 0) else metadata
            payload = os.path.join(shard, PAYLOAD)
            if not os.path.isfile(payload):
                raise FileNotFoundError(f"{shard}: no {PAYLOAD}")
            read_header(payload)
        return metadata
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: neither an msmm checkpoint ({TRACKER}) nor an HF checkpoint (config.json + "
                                "safetensors)")
    load_config(path)
    for file in weight_files(path):
        read_header(file)
    return None


def load_checkpoint(path: str, shard_name: str = "mp_rank_00") -> CheckpointState:
    """Read shard ``shard_name`` of the checkpoint ``--load path`` points at (see
    :func:`resolve_load_dir`)."""
    directory = resolve_load_dir(path)
    shard = os.path.join(directory, shard_name)
    if not os.path.isdir(shard):
        found = sorted(n for n in os.listdir(directory) if n.startswith("mp_rank_"))
        raise FileNotFoundError(f"{directory}: no {shard_name} (it holds {', '.join(found) or 'no shard'}): the "
                                "checkpoint is split for another tensor/pipeline-parallel layout; resplit it with "
                                "mm-convert <Converter> resplit (docs/convert.md)")
    payload = os.path.join(shard, PAYLOAD)
    meta = read_json(os.path.join(shard, METADATA))
    groups: Dict[str, Dict[str, np.ndarray]] = {"model": {}, "optimizer": {}, "rng": {}}
    for key, tensor in open_file(payload).items():
        head, _, rest = key.partition(".")
        if CHUNK_HEAD.match(head):
            groups.setdefault(head, {})
        if head not in groups:
            raise ValueError(f"{payload}: unexpected tensor {key!r}")
        value = tensor.numpy() if tensor.dtype == "BF16" else np.array(tensor.load())
        groups[head][rest if head != "optimizer" else key] = value
    if not isinstance(meta.get("iteration"), int):
        raise ValueError(f"{os.path.join(shard, METADATA)}: 'iteration' must be an integer, got {meta.get('iteration')!r}")
    extra = {k: v for k, v in meta.items() if k not in ("iteration", "data", "python_rng", "has_optimizer", "has_rng")}
    chunks = sorted((int(h[len("model"):]), g) for h, g in groups.items() if CHUNK_HEAD.match(h))
    if [c for c, _ in chunks] != list(range(len(chunks))):
        raise ValueError(f"{payload}: model chunks {[c for c, _ in chunks]} are not 0..{len(chunks) - 1}")
    return CheckpointState(meta["iteration"], groups["model"], groups["optimizer"], groups["rng"],
                           meta.get("python_rng"), meta.get("data"), extra, [g for _, g in chunks])


CHUNK_HEAD = re.compile(r"^model\d+$")  # a virtual pipeline chunk's tensors: model0.*, model1.*


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
