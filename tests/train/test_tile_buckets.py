"""InternVL dynamic tiling: every micro-batch's tiles are padded to a power-of-two count
(``image_flags`` 0 on the padding), so a run compiles one step graph per bucket instead of
one per tile count, with the same losses, gradients and weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from msmm.train.trainer import pad_tiles, tile_bucket
from tiny_models import IMG_CONTEXT, INTERN_VOCAB, TILE, TOKENS_PER_TILE

HERE = os.path.dirname(os.path.abspath(__file__))
TILE_COUNTS = [3, 4, 3, 5]  # tiles per micro-batch (2 rows), one micro-batch per step
SEQ_LENGTH = 40


def test_tile_bucket_and_pad_tiles():
    assert [tile_bucket(n) for n in (0, 1, 2, 3, 4, 5, 8, 9, 13)] == [1, 1, 2, 4, 4, 8, 8, 16, 16]
    pixels = np.arange(3 * 3 * 2 * 2, dtype=np.float32).reshape(3, 3, 2, 2)
    out = pad_tiles({"pixel_values": pixels, "image_flags": np.array([1, 0, 1])}, (3, 2, 2))
    assert out["pixel_values"].shape == (4, 3, 2, 2)
    np.testing.assert_array_equal(out["pixel_values"][:3], pixels)
    assert not out["pixel_values"][3].any()
    assert out["image_flags"].tolist() == [1, 0, 1, 0]
    text_only = pad_tiles({"input_ids": np.zeros((1, 4), np.int64)}, (3, 2, 2))
    assert text_only["pixel_values"].shape == (1, 3, 2, 2) and text_only["image_flags"].tolist() == [0]
    four = {"pixel_values": pixels[:2].repeat(2, 0), "image_flags": np.ones(4, np.int64)}
    assert pad_tiles(four, (3, 2, 2)) is four  # already a bucket


def make_batches(counts, seed=0):
    """Micro-batches of 2 rows; row 0 holds ceil(n/2) tiles, row 1 the rest; right-padded."""
    rng = np.random.default_rng(seed)
    batches = []
    for n in counts:
        tiles = [(n + 1) // 2, n // 2]
        rows = [[1, 2] + [IMG_CONTEXT] * (TOKENS_PER_TILE * t) + rng.integers(3, IMG_CONTEXT, size=8).tolist()
                for t in tiles]
        length = max(len(r) for r in rows)
        input_ids = np.zeros((2, length), np.int64)
        mask = np.zeros_like(input_ids)
        for i, r in enumerate(rows):
            input_ids[i, :len(r)], mask[i, :len(r)] = r, 1
        labels = np.where((mask == 0) | (input_ids == IMG_CONTEXT), -100, input_ids)
        labels[:, :2] = -100
        batches.append({"input_ids": input_ids, "attention_mask": mask, "labels": labels,
                        "pixel_values": rng.standard_normal((n, 3, TILE, TILE)).astype(np.float32)})
    return batches


def run_worker(tmp_path, batches, runs, model=None, **config):
    arrays = {f"b{i}_{k}": v for i, b in enumerate(batches) for k, v in b.items()}
    np.savez(tmp_path / "batches.npz", **arrays)
    spec = {"batches": str(tmp_path / "batches.npz"), "num_batches": len(batches), "runs": runs, **({"model": model} if model else {}),
            "config": dict(dict(train_iters=len(batches), global_batch_size=2, micro_batch_size=2, lr=2e-3,
                                weight_decay=0.1, clip_grad=1.0, seq_length=SEQ_LENGTH, log_interval=10**9), **config)}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(HERE)), HERE]))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "bucket_worker.py"), str(tmp_path / "spec.json"),
                           str(tmp_path / "out.json")], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((tmp_path / "out.json").read_text())


def test_bucketed_tiles_give_the_same_training_with_fewer_compiles(tmp_path):
    assert INTERN_VOCAB > IMG_CONTEXT
    runs = run_worker(tmp_path, make_batches(TILE_COUNTS),
                      [{"name": "bucketed", "bucket_tiles": True}, {"name": "exact", "bucket_tiles": False}])
    bucketed, exact = runs["bucketed"], runs["exact"]
    np.testing.assert_allclose(bucketed["loss"], exact["loss"], rtol=1e-5)
    np.testing.assert_allclose(bucketed["grad_norm"], exact["grad_norm"], rtol=1e-5)
    for name, (total, peak) in exact["weights"].items():
        np.testing.assert_allclose(bucketed["weights"][name], [total, peak], rtol=1e-4, atol=1e-5, err_msg=name)
    assert exact["loss"][-1] != exact["loss"][0]  # the weights did change between steps
    # step graphs: one per tile count without buckets, one per bucket with them; plus the
    # optimizer's graphs (none when the whole step is one graph), compiled once in both runs
    others = exact["compiles"] - len(set(TILE_COUNTS))
    assert 0 <= others <= 2 and (others == 0 or not exact["one_graph"])
    assert bucketed["compiles"] == len({tile_bucket(n) for n in TILE_COUNTS}) + others
