"""``make quickstart``'s script, ``examples/quickstart/run.sh``, run for real at full length
(~3-4 min on 2 cores): data, tokenizer and tiny InternVL -> hf_to_mm -> msrun fine-tune ->
mm_to_hf -> msmm-eval on MindSpore (the held-out questions as a multiple-choice TSV) -> score. The held-out accuracy it prints must reach 90%
(guessing: 25% for colours, 33% for shapes) and the loss-curve PNG it names must be a PNG."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script_env(work_dir: str, **extra: str) -> dict:
    """The environment ``make quickstart`` gives run.sh: this python's bin first on PATH."""
    return dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", WORK_DIR=work_dir,
                MASTER_PORT=str(free_port()), PYTHONPATH=REPO, **extra)


def assert_valid_png(path: str) -> None:
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= 100, image.size


def test_quickstart_reaches_90_percent_held_out(tmp_path):
    work = str(tmp_path / "quickstart")
    proc = subprocess.run(["bash", "examples/quickstart/run.sh"], cwd=REPO, env=script_env(work),
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    for n in range(1, 6):
        assert f"== {n}/5 " in out
    match = re.search(r"^held-out accuracy: (\d+)/(\d+) = \d+%$", out, re.M)
    assert match, out[-2000:]
    right, total = int(match[1]), int(match[2])
    assert total == 60 and right / total >= 0.9, out[-2500:]
    for kind, chance in (("colour", 25), ("left shape", 33)):
        assert re.search(rf"^{kind} questions: \d+/30 = \d+% \(guessing: {chance}%\)$", out, re.M), kind
    match = re.search(r"^loss curve: (\S+) ", out, re.M)
    assert match, out[-2000:]
    assert match[1] == os.path.join(work, "save", "loss_curve.png")
    assert_valid_png(match[1])
    assert "msmm-eval: 100%" in proc.stderr  # the progress bar over the held-out questions
    assert re.search(r"^done in \d+m\d+s; everything is in ", out, re.M)
