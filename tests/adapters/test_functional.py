"""Contract tests of adapters.torch.nn.functional against torch.nn.functional."""
import mindspore as ms
import numpy as np
import pytest

import adapters.torch as torch_ms
from tests.adapters.harness import MODES, check, randn

F_API = "torch.nn.functional."


def _ids(shape, high, seed=0, ignore=None):
    ids = np.random.default_rng(seed).integers(0, high, shape).astype(np.int64)
    if ignore is not None:
        ids.flat[::3] = ignore
    return ids


def _probs(*shape):
    e = np.exp(randn(*shape, seed=7))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def _bool_mask():
    mask = np.random.default_rng(3).random((1, 1, 5, 6)) > 0.4
    mask[0, 0, 2] = False  # one fully masked query row: torch gives zeros there
    return mask


def _additive_mask():
    mask = np.where(np.random.default_rng(4).random((2, 1, 5, 6)) > 0.3, 0.0, -np.inf).astype(np.float32)
    mask[1, 0, 4] = -np.inf  # fully masked row
    mask[0, 0] += randn(5, 6, seed=5)  # finite additive bias (e.g. ALiBi) on top
    return mask


Q, K, V = randn(2, 3, 5, 8, seed=1), randn(2, 3, 6, 8, seed=2), randn(2, 3, 6, 8, seed=3)

# (case, inputs, api, extra kwargs for check)
CASES = [
    ("linear", [randn(2, 3, 4), randn(5, 4, seed=1), randn(5, seed=2)], "linear", {}),
    ("linear_nobias", [randn(3, 4), randn(5, 4, seed=1)], "linear", {}),
    ("conv2d", [randn(2, 3, 9, 8), randn(4, 3, 3, 3, seed=1), randn(4, seed=2)], "conv2d", {}),
    ("conv2d_same_dilated", [randn(1, 2, 7, 6), randn(3, 2, 2, 3, seed=1)], "conv2d", {}),
    ("conv2d_groups_valid", [randn(2, 4, 6, 7), randn(6, 2, 3, 2, seed=1), randn(6, seed=2)], "conv2d", {}),
    ("conv2d_unbatched", [randn(2, 5, 5), randn(3, 2, 3, 3, seed=1)], "conv2d", {}),
    ("conv3d", [randn(1, 3, 4, 6, 6), randn(4, 3, 2, 3, 3, seed=1), randn(4, seed=2)], "conv3d", {}),
    ("conv3d_same_groups", [randn(1, 4, 3, 4, 5), randn(2, 2, 2, 3, 2, seed=1)], "conv3d", {}),
    ("layer_norm", [randn(2, 3, 8), randn(8, seed=1), randn(8, seed=2)], "layer_norm", {}),
    ("layer_norm_2d_noaffine", [randn(2, 3, 4)], "layer_norm", {}),
    ("rms_norm", [randn(2, 3, 8), randn(8, seed=1)], "rms_norm", {}),
    ("rms_norm_default_eps", [randn(2, 3, 4)], "rms_norm", {}),
    ("group_norm", [randn(2, 4, 3, 3), randn(4, seed=1), randn(4, seed=2)], "group_norm", {}),
    ("normalize", [randn(3, 5)], "normalize", {}),
    ("gelu", [randn(4, 5)], "gelu", {}),
    ("gelu_tanh", [randn(4, 5)], "gelu", {}),
    ("silu", [randn(4, 5)], "silu", {}),
    ("relu", [randn(4, 5)], "relu", {}),
    ("sigmoid", [randn(4, 5)], "sigmoid", {}),
    ("tanh", [randn(4, 5)], "tanh", {}),
    ("softmax", [randn(2, 3, 5)], "softmax", {}),
    ("softmax_dim1_float64", [randn(2, 3, 5)], "softmax", {}),
    ("log_softmax", [randn(2, 3, 5)], "log_softmax", {}),
    ("cross_entropy", [randn(6, 5), _ids(6, 5)], "cross_entropy", {}),
    ("cross_entropy_sum_ignore", [randn(6, 5), _ids(6, 5)], "cross_entropy", {}),
    ("cross_entropy_none_weight", [randn(6, 5), _ids(6, 5, ignore=-100), np.abs(randn(5, seed=3))],
     "cross_entropy", {"nondiff": (2,)}),
    ("cross_entropy_mean_weight_smoothing", [randn(6, 5), _ids(6, 5, ignore=-100), np.abs(randn(5, seed=3))],
     "cross_entropy", {"nondiff": (2,)}),
    ("cross_entropy_spatial_smoothing", [randn(2, 5, 4), _ids((2, 4), 5, ignore=-100)], "cross_entropy", {}),
    ("cross_entropy_probs", [randn(4, 5), _probs(4, 5)], "cross_entropy", {}),
    ("cross_entropy_probs_sum_weight", [randn(4, 5), _probs(4, 5), np.abs(randn(5, seed=3))],
     "cross_entropy", {}),
    ("cross_entropy_unbatched", [randn(5), np.array(3, np.int64)], "cross_entropy", {}),
    ("nll_loss", [randn(6, 5), _ids(6, 5, ignore=-100)], "nll_loss", {}),
    ("nll_loss_weight_none", [randn(6, 5), _ids(6, 5, ignore=-100), np.abs(randn(5, seed=3))], "nll_loss", {"nondiff": (2,)}),
    ("mse_loss", [randn(3, 4), randn(3, 4, seed=1)], "mse_loss", {}),
    ("mse_loss_none", [randn(3, 4), randn(3, 4, seed=1)], "mse_loss", {}),
    ("sdpa", [Q, K, V], "scaled_dot_product_attention", {}),
    ("sdpa_causal_scale", [Q, K, V], "scaled_dot_product_attention", {}),
    ("sdpa_bool_mask", [Q, K, V, _bool_mask()], "scaled_dot_product_attention", {}),
    ("sdpa_additive_mask", [Q, K, V, _additive_mask()], "scaled_dot_product_attention", {}),
    ("sdpa_gqa_causal", [randn(2, 4, 5, 8), randn(2, 2, 5, 8, seed=1), randn(2, 2, 5, 8, seed=2)],
     "scaled_dot_product_attention", {}),
    ("sdpa_dropout_zero", [Q, K, V], "scaled_dot_product_attention", {}),
    # bicubic/bilinear weights are built in float64 then cast; torch accumulates in float32
    ("interpolate_bicubic", [randn(2, 3, 4, 6)], "interpolate", {"atol": 1e-5}),
    ("interpolate_bicubic_align", [randn(1, 2, 4, 5)], "interpolate", {"atol": 1e-5}),
    ("interpolate_bicubic_down", [randn(1, 2, 7, 6)], "interpolate", {"atol": 1e-5}),
    ("interpolate_bilinear", [randn(2, 3, 4, 6)], "interpolate", {"atol": 1e-5}),
    ("interpolate_bilinear_align", [randn(1, 2, 4, 5)], "interpolate", {"atol": 1e-5}),
    ("interpolate_nearest", [randn(2, 3, 4, 6)], "interpolate", {}),
    ("interpolate_nearest_scale", [randn(1, 2, 3, 4)], "interpolate", {}),
    ("interpolate_nearest_3d", [randn(1, 2, 3, 4, 6)], "interpolate", {}),
    ("interpolate_linear", [randn(2, 3, 7)], "interpolate", {"atol": 1e-5}),
    ("interpolate_area", [randn(1, 2, 7, 9)], "interpolate", {}),
    ("interpolate_trilinear", [randn(1, 2, 3, 4, 6)], "interpolate", {"atol": 1e-5}),
    ("pad_constant", [randn(2, 3, 4)], "pad", {}),
    ("pad_reflect", [randn(1, 2, 4, 5)], "pad", {}),
    ("pad_replicate", [randn(1, 2, 4, 5)], "pad", {}),
    ("pad_last_dim", [randn(2, 3)], "pad", {}),
    ("embedding", [_ids((2, 3), 6), randn(6, 4)], "embedding", {}),
    ("embedding_padding", [_ids((2, 5), 6), randn(6, 4)], "embedding", {}),
    ("dropout_eval", [randn(3, 4)], "dropout", {}),
    ("dropout_p0", [randn(3, 4)], "dropout", {}),
    ("pixel_shuffle", [randn(2, 8, 3, 4)], "pixel_shuffle", {}),
    ("pixel_unshuffle", [randn(2, 2, 4, 6)], "pixel_unshuffle", {}),
    ("one_hot", [_ids((2, 3), 5)], "one_hot", {}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case,inputs,api,kwargs", CASES, ids=[c[0] for c in CASES])
def test_functional(case, inputs, api, kwargs, mode):
    check("functional", case, inputs, mode=mode, api=F_API + api, **kwargs)


def test_one_hot_inferred_classes_pynative():
    """``num_classes=-1`` reads the tensor's max, which only a concrete (PyNative) tensor has."""
    check("functional", "one_hot_inferred", [_ids((2, 3), 4)], mode="pynative",
          api=F_API + "one_hot")


# ---- dropout: MindSpore's RNG never reproduces torch's mask; check its structure -------
def _dropout_loss(x, cot, p):
    y = torch_ms.nn.functional.dropout(x, p=p)
    return (y * cot).sum(), y


@pytest.mark.parametrize("mode", MODES)
def test_dropout_training_mask_and_grad(mode):
    p = 0.3
    x_np, cot_np = np.abs(randn(200, 100)) + 0.1, randn(200, 100, seed=1)
    step = ms.value_and_grad(_dropout_loss, grad_position=0, has_aux=True)
    step = ms.jit(step) if mode == "graph" else step
    (_, y), grad = step(ms.Tensor(x_np), ms.Tensor(cot_np), p)
    y, grad = y.asnumpy(), grad.asnumpy()
    kept = y != 0
    assert abs((1 - kept.mean()) - p) < 0.02, f"zero fraction {1 - kept.mean():.3f}, expected ~{p}"
    np.testing.assert_allclose(y[kept], x_np[kept] / (1 - p), rtol=1e-6)
    # backward reuses the forward's mask: d(sum(y * cot))/dx = cot * mask / (1 - p)
    np.testing.assert_allclose(grad, np.where(kept, cot_np / (1 - p), 0.0), rtol=1e-6, atol=1e-7)


def test_dropout_p1_and_bad_p():
    x = ms.Tensor(randn(3, 4))
    assert not torch_ms.nn.functional.dropout(x, p=1.0).asnumpy().any()
    with pytest.raises(ValueError, match="between 0 and 1"):
        torch_ms.nn.functional.dropout(x, p=1.5)


# ---- bad input: clear errors, torch's where torch has one --------------------------------
F_MS = torch_ms.nn.functional


@pytest.mark.parametrize("call,message", [
    (lambda: F_MS.scaled_dot_product_attention(*map(ms.Tensor, (Q, K, V)), attn_mask=ms.Tensor(_bool_mask()),
                                               is_causal=True), "either attn_mask or is_causal"),
    (lambda: F_MS.scaled_dot_product_attention(ms.Tensor(randn(1, 4, 2, 8)), ms.Tensor(randn(1, 2, 2, 8)),
                                               ms.Tensor(randn(1, 2, 2, 8))), "enable_gqa=True"),
    (lambda: F_MS.interpolate(ms.Tensor(randn(1, 1, 4, 4)), size=(2, 2), mode="bicubic", antialias=True),
     "antialias"),
    (lambda: F_MS.interpolate(ms.Tensor(randn(1, 1, 4)), size=2, mode="bicubic"), "expects 2 spatial dims"),
    (lambda: F_MS.interpolate(ms.Tensor(randn(1, 1, 4, 4)), size=2, align_corners=True), "align_corners"),
    (lambda: F_MS.conv2d(ms.Tensor(randn(1, 3, 4, 4)), ms.Tensor(randn(2, 2, 3, 3))), "3 channels"),
    (lambda: F_MS.cross_entropy(ms.Tensor(randn(2, 3)), ms.Tensor(_ids(2, 3)), reduction="avg"),
     "not a valid value for reduction"),
    (lambda: F_MS.gelu(ms.Tensor(randn(2)), approximate="erf"), "approximate"),
])
def test_bad_input_errors(call, message):
    with pytest.raises((ValueError, NotImplementedError), match=message):
        call()
