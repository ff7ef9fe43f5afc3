"""The MM checkpoint directory layout (MindSpeed-MM's, written by ``msmm-train`` and
``mm-convert``) and which iteration a ``--load`` path means::

    ROOT/
      latest_checkpointed_iteration.txt      "100" or "release"
      iter_0000100/ (or release/)
        mp_rank_{tp:02d}[_{pp:03d}]/         the pp suffix only with pipeline stages
          model_optim_rng.safetensors
          metadata.json
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, Optional, Tuple

TRACKER = "latest_checkpointed_iteration.txt"
PAYLOAD = "model_optim_rng.safetensors"
METADATA = "metadata.json"
RELEASE = "release"
SHARD_DIR = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")
ITERATION_DIR = re.compile(r"^iter_\d{7}$")


def iteration_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def shard_name(tp_rank: int, pp_rank: int, pp_size: int) -> str:
    """``mp_rank_{tp:02d}``, with ``_{pp:03d}`` when the model has pipeline stages."""
    return f"mp_rank_{tp_rank:02d}" + (f"_{pp_rank:03d}" if pp_size > 1 else "")


def read_tracker(root: str) -> str:
    """The tracker's content: an iteration number or ``release``; errors name the file."""
    tracker = os.path.join(root, TRACKER)
    with open(tracker) as f:
        text = f.read().strip()
    if text != RELEASE and not text.isdigit():
        raise ValueError(f"{tracker}: expected an iteration number or 'release', got {text!r}")
    return text


def resolve_load_dir(path: str) -> str:
    """The iteration directory meant by ``--load`` / ``mm_dir``: a directory with the tracker
    file (its iteration, or ``release``), or a directory holding ``mp_rank_*`` itself
    (``iter_XXXXXXX`` or ``release``)."""
    if os.path.isfile(os.path.join(path, TRACKER)):
        text = read_tracker(path)
        directory = os.path.join(path, RELEASE) if text == RELEASE else iteration_dir(path, int(text))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"{os.path.join(path, TRACKER)} names iteration {text}, but {directory} does not "
                                    f"exist ({_what_is_there(path, os.path.basename(directory))})")
        return directory
    if os.path.isdir(path) and any(SHARD_DIR.match(n) for n in os.listdir(path)):
        return path
    raise FileNotFoundError(f"{path}: not an MM checkpoint (no {TRACKER} and no mp_rank_* directories)")


def _what_is_there(root: str, missing: str) -> str:
    """For an error about ``root/missing``: the iterations ``root`` holds, and where an
    interrupted save left the missing one."""
    names = sorted(os.listdir(root))
    aside = [n for n in names if n.startswith(missing + ".old-")]
    saved = [n for n in names if ITERATION_DIR.match(n)] + ([RELEASE] if RELEASE in names else [])
    text = f"{root} holds {', '.join(saved)}" if saved else f"{root} holds no iteration directory"
    if aside:
        text += (f"; {aside[0]} is the iteration an interrupted save moved aside: rename it to {missing} (the next "
                 "msmm-train save does that)")
    return text


def is_mm_checkpoint(path: str) -> bool:
    """Whether ``path`` is meant as an MM checkpoint: it has the tracker file or ``mp_rank_*``
    directories (whether it is complete is for :func:`resolve_load_dir` to say)."""
    if os.path.isfile(os.path.join(path, TRACKER)):
        return True
    return os.path.isdir(path) and any(SHARD_DIR.match(n) for n in os.listdir(path))


def training_checkpoint_in(directory: str) -> Optional[str]:
    """What makes ``directory`` hold a training checkpoint (a tracker naming an iteration,
    ``iter_*`` directories), or None: what ``mm-convert`` must never write into."""
    if not os.path.isdir(directory):
        return None
    found = []
    tracker = os.path.join(directory, TRACKER)
    if os.path.isfile(tracker):
        with open(tracker, "rb") as f:
            text = f.read(64).decode("utf-8", "replace").strip()
        if text != RELEASE:
            found.append(f"{TRACKER} names iteration {text!r}")
    iterations = sorted(n for n in os.listdir(directory) if n.startswith("iter_"))
    if iterations:
        found.append(", ".join(iterations[:3]) + (f" and {len(iterations) - 3} more" if len(iterations) > 3 else ""))
    return "; ".join(found) or None


def shard_dirs(directory: str) -> Dict[Tuple[int, int], str]:
    """{(tp rank, pp rank): path} of the ``mp_rank_*`` directories of an iteration directory;
    every rank of the tp x pp grid must be there."""
    shards = {}
    for name in os.listdir(directory):
        m = SHARD_DIR.match(name)
        if m:
            shards[(int(m.group(1)), int(m.group(2) or 0))] = os.path.join(directory, name)
    if not shards:
        raise FileNotFoundError(f"{directory}: no mp_rank_* directories")
    tp = max(r for r, _ in shards) + 1
    pp = max(s for _, s in shards) + 1
    for r in range(tp):
        for s in range(pp):
            if (r, s) not in shards:
                raise FileNotFoundError(f"{directory}: missing {shard_name(r, s, pp)} (found tp={tp}, pp={pp})")
    return shards


def read_json(path: str) -> dict:
    """A JSON object file; a corrupt one is an error naming the file (and line)."""
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from err
    except (UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: not a JSON text ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return value
