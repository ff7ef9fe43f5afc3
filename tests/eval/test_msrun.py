"""msmm-eval data parallel over msrun: the example launch script with 2 workers writes the
same predictions and scores as the msmm-eval console script alone (1 worker), on MMMU's
multi-image format with batches of 2 (rank 0 answers batches 0 and 2, rank 1 batch 1)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from tiny_bench import REPO, eval_json, tiny_internvl, write_dataset

SCRIPT = os.path.join(REPO, "examples", "internvl2", "evaluate_internvl2_8B.sh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    return dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", PYTHONPATH=REPO, **extra)


def _outputs(out: str):
    prefix = os.path.join(out, "internvl2_tiny_mmmu_dev_val")
    score = json.load(open(prefix + "_score.json"))
    score.pop("settings")
    return open(prefix + "_predictions.tsv").read(), score


def test_two_msrun_workers_equal_one_worker(tmp_path):
    hf = tiny_internvl(str(tmp_path / "hf"))
    tsv = write_dataset(str(tmp_path / "data"), "mmmu_dev_val")
    one = eval_json(str(tmp_path / "one.json"), hf, tsv, "mmmu_dev_val", str(tmp_path / "one"), batch_size=2)
    two = eval_json(str(tmp_path / "two.json"), hf, tsv, "mmmu_dev_val", str(tmp_path / "two"), batch_size=2)
    proc = subprocess.run(["msmm-eval", one], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "msmm-eval: 100%" in proc.stderr and "mmmu_dev_val (accuracy): overall" in proc.stdout
    log_dir = str(tmp_path / "msrun_log")
    proc = subprocess.run(["bash", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=_env(NPUS_PER_NODE="2", MASTER_PORT=str(_free_port()), MM_MODEL=two, LOG_DIR=log_dir))
    logs = "".join(open(os.path.join(log_dir, f)).read()[-2000:] for f in sorted(os.listdir(log_dir))) \
        if os.path.isdir(log_dir) else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs
    parts = os.path.join(str(tmp_path / "two"), "internvl2_tiny_mmmu_dev_val_parts")
    assert sorted(f for f in os.listdir(parts) if f.endswith(".jsonl")) == ["rank0.jsonl", "rank1.jsonl"]
    rank1 = [json.loads(x)["index"] for x in open(os.path.join(parts, "rank1.jsonl"))]
    assert rank1 == ["validation_Art_2", "validation_Art_3"]  # batch 1
    assert _outputs(str(tmp_path / "two")) == _outputs(str(tmp_path / "one"))
