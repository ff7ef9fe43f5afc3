"""File names of an msmm-train checkpoint directory (``msmm.train.checkpoint``) and which
iteration a ``--load`` path means. Framework-free, so mm-convert reads checkpoints without
importing MindSpore."""
from __future__ import annotations

import os

TRACKER = "latest_checkpointed_iteration.txt"
PAYLOAD = "model_optim_rng.safetensors"
METADATA = "metadata.json"


def iteration_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def resolve_load_dir(path: str) -> str:
    """The iteration directory meant by ``--load``: a directory with the tracker file (its
    iteration, or ``release``), or an ``iter_XXXXXXX`` directory itself."""
    tracker = os.path.join(path, TRACKER)
    if os.path.isfile(tracker):
        with open(tracker) as f:
            text = f.read().strip()
        if text == "release":
            return os.path.join(path, "release")
        if not text.isdigit():
            raise ValueError(f"{tracker}: expected an iteration number or 'release', got {text!r}")
        directory = iteration_dir(path, int(text))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"{tracker} names iteration {text}, but {directory} does not exist")
        return directory
    if os.path.isfile(os.path.join(path, "mp_rank_00", PAYLOAD)):
        return path
    raise FileNotFoundError(f"--load {path}: no {TRACKER} and no mp_rank_00/{PAYLOAD} there")
