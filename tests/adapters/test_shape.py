"""Contract tests of adapters.torch shape, indexing and joining ops against real torch."""
import numpy as np
import pytest

from tests.adapters import harness
from tests.adapters.harness import MODES, check, randn


def _index(shape, high, seed=0):
    return np.random.default_rng(seed).integers(0, high, shape).astype(np.int64)


def _permutation_rows(rows, cols, seed=0):
    """Each row a distinct set of column indices: scatter without write collisions."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(cols)[:2] for _ in range(rows)]).astype(np.int64)


CASES = [
    ("reshaping", [randn(2, 3, 4)],
     ("torch.reshape", "torch.flatten", "torch.unflatten", "torch.squeeze", "torch.unsqueeze"), {}),
    ("transposing", [randn(2, 3, 4)],
     ("torch.permute", "torch.transpose", "torch.swapaxes", "torch.swapdims", "torch.t",
      "torch.movedim", "torch.moveaxis"), {}),
    ("expanding", [randn(2, 3, 4), randn(4, seed=1)],
     ("torch.broadcast_to", "torch.tile", "torch.repeat_interleave", "torch.flip", "torch.roll"), {}),
    ("joining", [randn(3, 4), randn(3, 4, seed=1)],
     ("torch.cat", "torch.concat", "torch.concatenate", "torch.stack"), {}),
    ("splitting", [randn(3, 5)],
     ("torch.split", "torch.chunk", "torch.unbind", "torch.narrow", "torch.select"), {}),
    ("split_pieces_transposed", [randn(2, 5, 5, 3)], ("torch.split", "torch.unbind"), {}),
    ("indexing", [randn(4, 5), _index((4, 3), 4), _index((3,), 4, seed=1)],
     ("torch.gather", "torch.index_select", "torch.take_along_dim"), {}),
    ("scattering", [randn(4, 5), _permutation_rows(3, 4), randn(3, 2, seed=1)],
     ("torch.scatter", "torch.scatter_add"), {}),
    ("grids", [randn(3), randn(4, seed=1)], ("torch.meshgrid",), {}),
    ("scatter_reduce_add", [randn(4, 5), _permutation_rows(3, 4), randn(3, 2, seed=1)],
     ("torch.scatter",), dict(grad=False)),
    ("copies", [randn(3, 4)], ("torch.clone", "torch.detach", "Tensor.contiguous"), {}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case, inputs, apis, options", CASES, ids=[c[0] for c in CASES])
def test_shape(case, inputs, apis, options, mode):
    check("shape", case, inputs, mode=mode, api=apis[0], **options)
    for api in apis[1:]:
        harness.record(api, mode)


@pytest.mark.parametrize("mode", MODES)
def test_data_dependent_shapes(mode):
    """masked_select and nonzero: dynamic shapes, which MindSpore's CPU backend also runs
    inside jit (forward and backward)."""
    check("shape", "data_dependent", [randn(3, 4)], mode=mode, api="torch.masked_select")
    harness.record("torch.nonzero", mode)


@pytest.mark.parametrize("mode", MODES)
def test_repeat_interleave_tensor_repeats(mode):
    """Tensor repeats: PyNative as torch; inside jit only with ``output_size``."""
    x, repeats = randn(3, 4), np.array([1, 0, 3], np.int64)
    if mode == "pynative":
        check("shape", "repeat_counts", [x, repeats], mode=mode, api="torch.repeat_interleave")
    check("shape", "repeat_counts_sized", [x, repeats], mode=mode,
          api="torch.repeat_interleave")
