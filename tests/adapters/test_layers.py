"""Contract tests of adapters.torch.nn layers against torch.nn (forward, input and parameter grads)."""
import numpy as np
import pytest
import torch as torch_ref

import adapters.torch as torch_ms
from tests.adapters.harness import MODES, check_module, load_cases, randn

NN = "torch.nn."


def _ids(*shape, high=10):
    return np.random.default_rng(0).integers(0, high, shape).astype(np.int64)


# (builder, inputs, api)
CASES = [
    ("linear", [randn(2, 3, 4)], "Linear"),
    ("linear_nobias", [randn(5, 4)], "Linear"),
    ("conv2d", [randn(2, 3, 7, 8)], "Conv2d"),
    ("conv2d_same_groups_nobias", [randn(1, 4, 5, 6)], "Conv2d"),
    ("conv2d_reflect", [randn(1, 2, 5, 5)], "Conv2d"),
    ("conv2d_patch_embed", [randn(2, 3, 8, 12)], "Conv2d"),
    ("conv3d", [randn(1, 3, 4, 5, 5)], "Conv3d"),
    ("conv3d_patch_embed_nobias", [randn(2, 3, 2, 4, 4)], "Conv3d"),
    ("layer_norm", [randn(2, 3, 8)], "LayerNorm"),
    ("layer_norm_nobias", [randn(2, 3, 8)], "LayerNorm"),
    ("layer_norm_no_affine", [randn(2, 8)], "LayerNorm"),
    ("rms_norm", [randn(2, 3, 8)], "RMSNorm"),
    ("rms_norm_default_eps", [randn(2, 8)], "RMSNorm"),
    ("group_norm", [randn(2, 4, 3, 3)], "GroupNorm"),
    ("group_norm_nobias", [randn(2, 6, 5)], "GroupNorm"),
    ("embedding", [_ids(2, 5)], "Embedding"),
    ("embedding_padding", [_ids(3, 4)], "Embedding"),
    ("dropout_eval", [randn(3, 4)], "Dropout"),
    ("dropout_p0", [randn(3, 4)], "Dropout"),
    ("gelu", [randn(3, 4)], "GELU"),
    ("gelu_tanh", [randn(3, 4)], "GELU"),
    ("silu", [randn(3, 4)], "SiLU"),
    ("relu", [randn(3, 4)], "ReLU"),
    ("tanh", [randn(3, 4)], "Tanh"),
    ("sigmoid", [randn(3, 4)], "Sigmoid"),
    ("softmax", [randn(2, 3, 4)], "Softmax"),
    ("log_softmax", [randn(2, 3, 4)], "LogSoftmax"),
    ("identity", [randn(3, 4)], "Identity"),
    ("mlp", [randn(2, 4)], "Module"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("builder,inputs,api", CASES, ids=[c[0] for c in CASES])
def test_layer(builder, inputs, api, mode):
    check_module("layers", builder, inputs, mode=mode, api=NN + api)


@pytest.mark.parametrize("builder", [c[0] for c in CASES])
def test_repr_and_shapes_equal_torch(builder):
    """``repr`` (with torch's ``extra_repr``) and every parameter's name, shape, dtype and
    ``requires_grad`` equal torch's, so checkpoints load by name and printouts match."""
    ref_mod, ms_mod = load_cases("layers")
    ref, ms = getattr(ref_mod, builder)(), getattr(ms_mod, builder)()
    assert repr(ms) == repr(ref)
    ref_params = [(n, tuple(p.shape), p.requires_grad) for n, p in ref.named_parameters()]
    ms_params = [(n, tuple(p.shape), p.requires_grad) for n, p in ms.named_parameters()]
    assert ms_params == ref_params
    assert all(p.dtype == torch_ms.float32 for p in ms.parameters())


def _stats(values: np.ndarray):
    return values.min(), values.max(), values.mean(), values.std()


def test_default_init_follows_torch():
    """Linear/Conv: kaiming_uniform(a=sqrt(5)) weight and U(+-1/sqrt(fan_in)) bias, i.e. both
    U(+-1/sqrt(fan_in)); Embedding N(0, 1) with a zero padding row; norms ones/zeros."""
    torch_ms.manual_seed(0)
    for layer, fan_in in ((torch_ms.nn.Linear(256, 512), 256), (torch_ms.nn.Conv2d(16, 64, 3), 16 * 9),
                          (torch_ms.nn.Conv3d(4, 32, (2, 3, 3)), 4 * 18)):
        bound = 1 / np.sqrt(fan_in)
        for values in (layer.weight.asnumpy().ravel(), layer.bias.asnumpy()):
            low, high, mean, std = _stats(values)
            assert -bound <= low and high <= bound, f"{layer}: values outside +-{bound}"
            tol = 4 * bound / np.sqrt(3 * values.size)  # ~4 standard errors of the mean
            assert abs(mean) < tol
            if values.size > 1000:
                assert abs(std - bound / np.sqrt(3)) < 0.03 * bound
                assert high > 0.95 * bound and low < -0.95 * bound
    emb = torch_ms.nn.Embedding(1000, 64, padding_idx=3).weight.asnumpy()
    assert not emb[3].any()
    _, _, mean, std = _stats(np.delete(emb, 3, axis=0))
    assert abs(mean) < 0.02 and abs(std - 1) < 0.02
    norm = torch_ms.nn.LayerNorm(8)
    np.testing.assert_array_equal(norm.weight.asnumpy(), np.ones(8, np.float32))
    np.testing.assert_array_equal(norm.bias.asnumpy(), np.zeros(8, np.float32))
    np.testing.assert_array_equal(torch_ms.nn.RMSNorm(8).weight.asnumpy(), np.ones(8, np.float32))
    assert torch_ms.nn.RMSNorm(8).eps is None and torch_ref.nn.RMSNorm(8).eps is None


def test_checkpoint_from_torch_loads_by_name():
    ref_mod, ms_mod = load_cases("layers")
    ref, ms = ref_mod.mlp(), ms_mod.mlp()
    ms.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    for name, param in ms.named_parameters():
        np.testing.assert_array_equal(param.asnumpy(), ref.state_dict()[name].numpy())


def test_dropout_module_train_and_eval():
    layer = torch_ms.nn.Dropout(0.5).train()
    x = torch_ms.Tensor(np.ones((64, 64), np.float32))
    y = layer(x).asnumpy()
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    np.testing.assert_array_equal(layer.eval()(x).asnumpy(), x.asnumpy())


def test_constructor_errors_match_torch():
    for bad in (lambda nn: nn.Conv2d(3, 4, 3, groups=2), lambda nn: nn.Conv2d(2, 4, 3, stride=2, padding="same"),
                lambda nn: nn.Dropout(1.5),
                lambda nn: nn.GroupNorm(4, 6)):
        with pytest.raises(ValueError) as ref_error:
            bad(torch_ref.nn)
        with pytest.raises(ValueError) as ms_error:
            bad(torch_ms.nn)
        assert str(ms_error.value) == str(ref_error.value)
    # torch prints the valid strings as a set, whose order depends on the hash seed
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        torch_ms.nn.Conv2d(2, 4, 3, padding="full")
