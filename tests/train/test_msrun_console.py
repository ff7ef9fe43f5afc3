"""Under msrun, what the workers log reaches the console (issue 15 item 14): the tiny InternVL
script on 2 workers, with records whose image is missing, prints each skip with its file:line
(default mode), and in strict mode the error the worker stopped with."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "examples", "internvl", "finetune_internvl_tiny_cpu.sh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp_path, strict: bool):
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", NPUS_PER_NODE="2",
               MASTER_PORT=str(_free_port()), TINY_DIR=str(tmp_path / "assets"), SAVE_PATH=str(tmp_path / "save"),
               TRAIN_ITERS="1", GLOBAL_BATCH="4",
               ASSET_ARGS="--samples 4 --missing-images 4" + (" --strict" if strict else ""))
    proc = subprocess.run(["bash", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr, str(tmp_path / "assets" / "train.jsonl")


@pytest.mark.parametrize("strict", [False, True], ids=["skip", "strict"])
def test_worker_warnings_and_errors_reach_the_console(tmp_path, strict):
    code, console, annotation = run(tmp_path, strict)
    if not strict:
        assert code == 0, console[-3000:]
        # 4 missing images, split between the 2 ranks; each skip named with its file:line
        skips = re.findall(rf"worker_[01]: skipped {re.escape(annotation)}:(\d+): missing_image: ", console)
        assert sorted(map(int, skips)) == [5, 6, 7, 8], console[-3000:]
        assert "iteration        1/" in console
    else:
        assert code != 0
        match = re.search(rf"msrun: (worker_[01](, worker_[01])?) stopped with:\n.*BadInputError: "
                          rf"{re.escape(annotation)}:[5-8]: missing_image: ", console)
        assert match, console[-3000:]
