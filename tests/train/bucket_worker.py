"""MindSpore side of test_tile_buckets / test_recompute, in a fresh process:
``python bucket_worker.py SPEC.json OUT.json``.

SPEC: batches (npz of micro-batches b0_key...), config (TrainConfig fields), runs: a list of
{"name", "bucket_tiles", "recompute"}, optionally model (a model.json dict; default a tiny
InternVL); every run trains the model built from the same seed. OUT: per run the per-step
losses and grad norms, the final weights' digest (sum and max abs value per parameter), the
number of graphs compiled while training, how many cells were marked for recompute, and
the process's peak RSS so far (MB).
"""
import json
import os
import resource
import sys

os.environ.setdefault("GLOG_v", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from msmm import runtime  # noqa: E402

runtime.start("CPU")  # before any MindSpore op and before msmm.models is imported

import mindspore  # noqa: E402
import numpy as np  # noqa: E402
from mindspore.graph import api as graph_api  # noqa: E402

from ms_worker import ListSource  # noqa: E402
from msmm.models import build_model, parse_model_config  # noqa: E402
from msmm.train.cli import apply_recompute  # noqa: E402
from msmm.train.trainer import InputBuilder, TrainConfig, Trainer  # noqa: E402
from tiny_models import IMG_CONTEXT, INTERN_VOCAB, TILE  # noqa: E402

MODEL_JSON = {
    "model_id": "internvl", "image_token_id": IMG_CONTEXT,
    "image_encoder": {
        "vision_encoder": {"model_id": "intern_vit", "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
                           "ffn_hidden_size": 64, "image_size": TILE, "patch_size": 7},
        "vision_projector": {"model_id": "pixel_shuffle_mlp"},
    },
    "text_decoder": {"model_id": "qwen2", "num_layers": 2, "hidden_size": 48, "num_attention_heads": 4,
                     "num_query_groups": 2, "ffn_hidden_size": 96, "vocab_size": INTERN_VOCAB, "add_qkv_bias": True},
}


def main(spec_path: str, out_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    raw = np.load(spec["batches"])
    batches = []
    for i in range(spec["num_batches"]):
        batches.append({k.split("_", 1)[1]: raw[k] for k in raw.files if k.split("_", 1)[0] == f"b{i}"})
    results = {}
    for run in spec["runs"]:
        mindspore.set_seed(0)
        np.random.seed(0)
        model = build_model(parse_model_config(spec.get("model", MODEL_JSON)))
        recomputed = apply_recompute(model, run.get("recompute"))
        config = TrainConfig(**spec["config"])
        inputs = InputBuilder(model, seq_length=config.seq_length, bucket_tiles=run.get("bucket_tiles", True))
        trainer = Trainer(model, config, ListSource(batches), inputs=inputs)
        compiled = len(graph_api.ms_compile_cache)
        history = trainer.train()
        results[run["name"]] = {
            "loss": [r["loss"] for r in history],
            "grad_norm": [r["grad_norm"] for r in history],
            "compiles": len(graph_api.ms_compile_cache) - compiled,
            "one_graph": trainer.step_fn.one_graph,
            "recomputed_cells": recomputed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "weights": {n: [float(p.asnumpy().sum()), float(np.abs(p.asnumpy()).max())]
                        for n, p in model.parameters_and_names()},
        }
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
