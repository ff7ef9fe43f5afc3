"""Peak RSS of one training step with and without ``--recompute-granularity``, one process
per setting: a small InternVL (frozen 2-layer ViT, 6-layer 256-wide Qwen2 text decoder),
2 rows of ``--seq-length`` tokens, fp32, CPU. Uses the training tests' worker.

    python benchmarks/recompute_memory.py --seq-length 512   # writes benchmarks/recompute_memory.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests", "train")]

from test_tile_buckets import make_batches, run_worker  # noqa: E402
from tiny_models import IMG_CONTEXT, INTERN_VOCAB  # noqa: E402

SMALL = {
    "model_id": "internvl", "image_token_id": IMG_CONTEXT,
    "image_encoder": {
        "vision_encoder": {"model_id": "intern_vit", "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
                           "ffn_hidden_size": 64, "image_size": 28, "patch_size": 7, "freeze": True},
        "vision_projector": {"model_id": "pixel_shuffle_mlp"},
    },
    "text_decoder": {"model_id": "qwen2", "num_layers": 6, "hidden_size": 256, "num_attention_heads": 8,
                     "num_query_groups": 8, "ffn_hidden_size": 1024, "vocab_size": INTERN_VOCAB, "add_qkv_bias": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-length", type=int, default=512)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "recompute_memory.json"))
    args = parser.parse_args()
    peaks = {}
    for granularity in (None, "full", "selective"):
        name = granularity or "none"
        with tempfile.TemporaryDirectory() as tmp:
            out = run_worker(Path(tmp), make_batches([2]), [{"name": name, "recompute": granularity}], model=SMALL,
                             seq_length=args.seq_length, train_iters=1)
        peaks[name] = out[name]["peak_rss_mb"]
        print(f"{name:10s} peak RSS {peaks[name]:8.0f} MB", flush=True)
    with open(args.out, "w") as f:
        json.dump({"seq_length": args.seq_length, "rows": 2, "model": SMALL, "peak_rss_mb": peaks}, f, indent=1)


if __name__ == "__main__":
    main()
