"""Per-rank parameters, gradients and optimizer state of real parallel runs, next to what
``msmm-train --dry-run`` plans for the same runs.

Each layout trains the tiny InternVL (examples/internvl/finetune_internvl_tiny_cpu.sh) for two
iterations under msrun on CPU; what a rank holds is read from the checkpoint it wrote (its
``mp_rank_*`` payload: the parameters it built, and the optimizer state it keeps, in the
payload or, with ``--use-distributed-optimizer``, its ``distrib_optim_dp_*`` file); the
gradient buffers are fp32, one element per trainable parameter element the rank holds. The
plan is ``msmm.train.plan.build_plan`` on the same arguments.

    python benchmarks/parallel_memory.py        # writes benchmarks/results/parallel_memory.json
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))  # parallel_plans.script_argv

from msmm.checkpoint.layout import shard_name  # noqa: E402
from msmm.train.parallel.layout import ParallelLayout  # noqa: E402
SCRIPT = "examples/internvl/finetune_internvl_tiny_cpu.sh"
LAYOUTS = [("one worker", 1, ""), ("DP 2", 2, ""), ("TP 2", 2, "--tensor-model-parallel-size 2"),
           ("DP 2 + distributed optimizer", 2, "--use-distributed-optimizer"),
           ("PP 2", 2, "--pipeline-model-parallel-size 2"),
           ("TP 2 x PP 2", 4, "--tensor-model-parallel-size 2 --pipeline-model-parallel-size 2")]
TRAINED = ("model.multi_modal_projector.", "model.language_model.")  # the tiny model.json freezes the ViT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(tmp: Path, workers: int, extra: str) -> Path:
    save = tmp / "save"
    env = dict(os.environ, NPUS_PER_NODE=str(workers), MASTER_PORT=str(_free_port()), TINY_DIR=str(tmp / "assets"),
               SAVE_PATH=str(save), TRAIN_ITERS="2", GLOBAL_BATCH="8", EXTRA_ARGS=extra,
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    subprocess.run(["bash", str(ROOT / SCRIPT)], cwd=ROOT, env=env, check=True, capture_output=True, timeout=900)
    return save


def layout_of(workers: int, extra: str) -> ParallelLayout:
    tp = 2 if "--tensor-model-parallel-size 2" in extra else 1
    pp = 2 if "--pipeline-model-parallel-size 2" in extra else 1
    return ParallelLayout(workers, tp=tp, pp=pp)


def measured(save: Path, workers: int, extra: str) -> List[Dict[str, int]]:
    """Bytes per rank: parameters (all, as stored), fp32 gradient buffers, optimizer state."""
    iteration = save / "iter_0000002"
    layout = layout_of(workers, extra)
    out = []
    for rank in range(workers):
        c = layout.coords(rank)
        shard = iteration / shard_name(c["tp"], c["pp"], layout.pp)
        dp_rank = c["dp"]
        payload = load_file(str(shard / "model_optim_rng.safetensors"))
        params = {k: v for k, v in payload.items() if k.startswith("model.")}
        trainable = sum(v.size for k, v in params.items() if k.startswith(TRAINED))
        optimizer_file = shard / f"distrib_optim_dp_{dp_rank:03d}.safetensors"
        optimizer = load_file(str(optimizer_file)) if optimizer_file.exists() else \
            {k: v for k, v in payload.items() if k.startswith("optimizer.")}
        out.append({"rank": rank, "stage": c["pp"], "parameters": sum(v.nbytes for v in params.values()), "gradients": 4 * trainable,
                    "optimizer": sum(v.nbytes for k, v in optimizer.items()
                                     if v.dtype == np.float32 and not k.endswith(("step", "layout")))})
    return out


def planned(assets: Path, workers: int, extra: str) -> List[Dict[str, int]]:
    """The dry run's numbers for one device of each pipeline stage of the same run."""
    from msmm.config.train_args import parse_train_args
    from msmm.train.plan import build_plan
    from parallel_plans import script_argv

    argv = script_argv(SCRIPT[len("examples/"):], cwd=ROOT, env={
        "TINY_DIR": str(assets), "TRAIN_ITERS": "2", "GLOBAL_BATCH": "8", "NPUS_PER_NODE": str(workers),
        "EXTRA_ARGS": extra, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    argv += ["--dry-run", "--world-size", str(workers)]
    return [{"parameters": stage.weights, "gradients": stage.grads, "optimizer": stage.optimizer}
            for stage in build_plan(parse_train_args(argv)).stages]


def main() -> int:
    results = []
    for name, workers, extra in LAYOUTS:
        with tempfile.TemporaryDirectory() as tmp:
            save = train(Path(tmp), workers, extra)
            row = {"layout": name, "workers": workers, "flags": extra, "measured": measured(save, workers, extra),
                   "planned": planned(Path(tmp) / "assets", workers, extra)}
        results.append(row)
        for stage, plan in enumerate(row["planned"]):
            worst = {k: max(r[k] for r in row["measured"] if r["stage"] == stage)
                     for k in ("parameters", "gradients", "optimizer")}
            print(f"{name:32s} stage {stage} measured {worst}  planned {plan}", flush=True)
    record = {"script": SCRIPT, "machine": {"cpu": platform.processor() or platform.machine(),
                                            "cores": os.cpu_count()}, "layouts": results}
    out = ROOT / "benchmarks" / "results" / "parallel_memory.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
