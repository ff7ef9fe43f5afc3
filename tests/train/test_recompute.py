"""``--recompute-granularity``: recomputing every transformer layer (``full``) or every
attention block (``selective``) in the backward pass gives the training of no recompute.
(Its effect on memory is measured by ``benchmarks/recompute_memory.py``: on CPU it does not
lower the peak; see docs/training.md.)"""
from __future__ import annotations

import numpy as np

from test_tile_buckets import make_batches, run_worker
from tiny_models import IMG_CONTEXT, INTERN_VOCAB

RUNS = [{"name": "none"}, {"name": "full", "recompute": "full"}, {"name": "selective", "recompute": "selective"}]


def test_recompute_gives_the_same_losses_gradients_and_weights(tmp_path):
    runs = run_worker(tmp_path, make_batches([2, 2, 2]), RUNS)
    none = runs["none"]
    assert none["recomputed_cells"] == 0
    assert runs["full"]["recomputed_cells"] == 4  # 2 ViT layers + 2 text layers
    assert runs["selective"]["recomputed_cells"] == 4  # their attention blocks
    assert none["loss"][-1] != none["loss"][0]
    for name in ("full", "selective"):
        np.testing.assert_allclose(runs[name]["loss"], none["loss"], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(runs[name]["grad_norm"], none["grad_norm"], rtol=1e-6, err_msg=name)
        for param, digest in none["weights"].items():
            np.testing.assert_allclose(runs[name]["weights"][param], digest, rtol=1e-6, atol=1e-7, err_msg=f"{name} {param}")

