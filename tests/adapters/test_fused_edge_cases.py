"""Edge cases of the fused CPU entries of adapters.torch.nn.functional against real torch:
values and gradients, PyNative and mindspore.jit, for inputs the fused kernels' own tests do
not use: non-contiguous views (transposed, strided, offset slices), broadcasting operands,
1-D / 0-size / 1-element dims, extreme magnitudes, inf / NaN, float64 and float16 (the
fallbacks), multi-dim normalized shapes, sdpa masks of every broadcast shape, GQA, causal
with L != S, dropout statistics; and the auto_convert rules that must (not) fire."""
from typing import Callable, List

import mindspore as ms
import numpy as np
import pytest
import torch

import adapters.torch as T
from adapters.torch.nn import functional as F
from tests.adapters.harness import check_function

torch.set_num_threads(1)
MODES = ("pynative", "jit")


def _pairs(cases, jit=()):
    """(case, mode) pairs: every case in PyNative, the ``jit`` ones under mindspore.jit too
    (compiling is most of this file's time)."""
    return [(c, "pynative") for c in sorted(cases)] + [(c, "jit") for c in sorted(jit)]


_COMPILED: List[Callable] = []  # graphs are cached by id(): keep compiled callables alive
TF = torch.nn.functional


def randn(*shape, seed=0, dtype=np.float32, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


# ---- norms -----------------------------------------------------------------------------
def _v_transpose01(x):
    return T.transpose(x, 0, 1)


def _v_strided_rows(x):
    return x[::2]


def _v_strided_last(x):
    return x[:, ::2]


def _v_offset_last(x):
    return x[..., 1:]


def _v_transposed_last(x):
    return T.transpose(x, -1, -2)


def _views():
    """name -> (adapters view, torch view, input shape); each view keeps a last dim of 8.
    (Named functions: graph mode cannot parse lambdas defined inside a dict.)"""
    return {
        "transpose01": (_v_transpose01, lambda x: x.transpose(0, 1), (3, 5, 8)),
        "strided_rows": (_v_strided_rows, lambda x: x[::2], (7, 8)),
        "strided_last": (_v_strided_last, lambda x: x[:, ::2], (3, 16)),
        "offset_last": (_v_offset_last, lambda x: x[..., 1:], (2, 3, 9)),
        "transposed_last": (_v_transposed_last, lambda x: x.transpose(-1, -2), (2, 8, 3)),
    }


VIEWS = _views()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_rms_norm_views(view, mode):
    ms_view, t_view, shape = VIEWS[view]

    def fn(x, w):
        return F.rms_norm(ms_view(x), (8,), w, 1e-6)

    check_function(fn, lambda x, w: TF.rms_norm(t_view(x), (8,), w, 1e-6), [randn(*shape), randn(8, seed=1)], mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_layer_norm_views(view, mode):
    ms_view, t_view, shape = VIEWS[view]

    def fn(x, w, b):
        return F.layer_norm(ms_view(x), (8,), w, b, 1e-5)

    check_function(fn, lambda x, w, b: TF.layer_norm(t_view(x), (8,), w, b, 1e-5),
          [randn(*shape), randn(8, seed=1), randn(8, seed=2)], mode)


NORM_CASES = {
    # name -> (x shape, normalized_shape, weight?, bias?, eps, dtype, scale)
    "int_shape": ((3, 8), 8, True, True, 1e-5, np.float32, 1.0),
    "multi_dim": ((2, 3, 4), (3, 4), True, True, 1e-5, np.float32, 1.0),
    "one_d": ((8,), (8,), True, True, 1e-5, np.float32, 1.0),
    "one_elem_last": ((4, 1), (1,), True, True, 1e-5, np.float32, 1.0),
    "zero_rows": ((0, 8), (8,), True, True, 1e-5, np.float32, 1.0),
    "weight_no_bias": ((3, 8), (8,), True, False, 1e-5, np.float32, 1.0),
    "no_affine": ((3, 8), (8,), False, False, 1e-5, np.float32, 1.0),
    "eps_big": ((3, 8), (8,), True, True, 10.0, np.float32, 1.0),
    "eps_tiny": ((3, 8), (8,), True, True, 1e-12, np.float32, 1e-3),
    "big_values": ((3, 8), (8,), True, True, 1e-5, np.float32, 1e15),
    "float64": ((3, 8), (8,), True, True, 1e-5, np.float64, 1.0),
    "float16": ((3, 8), (8,), True, True, 1e-5, np.float16, 1.0),
}


NORM_JIT = ("int_shape", "multi_dim", "one_d", "weight_no_bias", "zero_rows")


def _norm_inputs(shape, normalized, weight, bias, dtype, scale):
    normalized = (normalized,) if isinstance(normalized, int) else normalized
    inputs = [randn(*shape, dtype=dtype, scale=scale)]
    if weight:
        inputs.append(randn(*normalized, seed=1, dtype=dtype))
    if bias:
        inputs.append(randn(*normalized, seed=2, dtype=dtype))
    return inputs


def _shape(normalized):
    return (normalized,) if isinstance(normalized, int) else normalized


def _tol(dtype):
    return dict(rtol=2e-2, atol=2e-2) if dtype == np.float16 else dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case,mode", _pairs(NORM_CASES, NORM_JIT))
def test_rms_norm_cases(case, mode):
    shape, normalized, weight, _, eps, dtype, scale = NORM_CASES[case]
    inputs = _norm_inputs(shape, normalized, weight, False, dtype, scale)
    rtol = 1e-4 if case == "eps_tiny" else None

    def fn(x, *w):
        return F.rms_norm(x, normalized, w[0] if w else None, eps)

    def ref(x, *w):
        return TF.rms_norm(x, _shape(normalized), w[0] if w else None, eps)

    tol = _tol(dtype)
    if rtol:
        tol["rtol"] = rtol
    check_function(fn, ref, inputs, mode, **tol)


@pytest.mark.parametrize("mode", MODES)
def test_rms_norm_default_eps(mode):
    def fn(x, w):
        return F.rms_norm(x, (8,), w)

    check_function(fn, lambda x, w: TF.rms_norm(x, (8,), w), [randn(3, 8, scale=1e-4), randn(8, seed=1)], mode,
          rtol=1e-4)


@pytest.mark.parametrize("case,mode", _pairs(NORM_CASES, NORM_JIT))
def test_layer_norm_cases(case, mode):
    shape, normalized, weight, bias, eps, dtype, scale = NORM_CASES[case]
    inputs = _norm_inputs(shape, normalized, weight, bias, dtype, scale)

    def split(args):
        w = args[0] if weight else None
        b = args[1 if weight else 0] if bias else None
        return w, b

    def fn(x, *args):
        w, b = split(args)
        return F.layer_norm(x, normalized, w, b, eps)

    def ref(x, *args):
        w, b = split(args)
        return TF.layer_norm(x, _shape(normalized), w, b, eps)

    tol = _tol(dtype)
    if case in ("eps_tiny", "big_values"):
        tol["rtol"] = 1e-4
    check_function(fn, ref, inputs, mode, **tol)


@pytest.mark.parametrize("mode", MODES)
def test_layer_norm_bias_without_weight(mode):
    def fn(x, b):
        return F.layer_norm(x, (8,), None, b)

    check_function(fn, lambda x, b: TF.layer_norm(x, (8,), None, b), [randn(3, 8), randn(8, seed=2)], mode)


def test_rms_norm_mixed_dtypes_keep_the_input_dtype():
    check_function(lambda x, w: F.rms_norm(x, (8,), w, 1e-5), lambda x, w: TF.rms_norm(x, (8,), w, 1e-5),
          [randn(3, 8, dtype=np.float16), randn(8, seed=1)], "pynative", rtol=2e-2, atol=2e-2)


def test_norm_shape_mismatch_raises():
    x = ms.Tensor(randn(3, 8))
    for call in (lambda: F.rms_norm(x, (8,), ms.Tensor(randn(4))),
                 lambda: F.layer_norm(x, (8,), ms.Tensor(randn(8)), ms.Tensor(randn(4))),
                 lambda: F.rms_norm(x, (4,), ms.Tensor(randn(4)))):
        with pytest.raises(Exception):
            call().asnumpy()


# ---- activations ----------------------------------------------------------------------
SPECIAL = np.array([0.0, -0.0, 1e-30, -1e-30, 5.0, -5.0, 20.0, -20.0, 88.0, -88.0, 100.0, -100.0,
                    1e4, -1e4, 3e38, -3e38, np.inf, -np.inf, np.nan], np.float32)

def _gelu(x):
    return F.gelu(x)


def _gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


def _quick_gelu(x):
    return F.quick_gelu(x)


def _silu_mul_self(x):
    return F.silu_mul(x, x)


ACTIVATIONS = {
    "gelu": (_gelu, lambda x: TF.gelu(x)),
    "gelu_tanh": (_gelu_tanh, lambda x: TF.gelu(x, approximate="tanh")),
    "quick_gelu": (_quick_gelu, lambda x: x * torch.sigmoid(1.702 * x)),
    "silu_mul_self": (_silu_mul_self, lambda x: TF.silu(x) * x),
}
# torch's own GELU overflows to inf / NaN at x >= ~1.7e38 / +inf (x * (1 + erf) before the
# halving); those two are not part of the contract
GELU_SPECIAL = SPECIAL[np.isfinite(SPECIAL) & (np.abs(SPECIAL) < 1e38) | np.isnan(SPECIAL)
                       | (SPECIAL == -np.inf)]


@pytest.mark.parametrize("name,mode", _pairs(ACTIVATIONS, ("quick_gelu", "silu_mul_self")))
def test_activation_special_values(name, mode):
    ms_fn, t_fn = ACTIVATIONS[name]

    def fn(x):
        return ms_fn(x)

    # values only: torch's own gradients at +-inf / huge inputs are NaN or inf by formula
    check_function(fn, t_fn, [GELU_SPECIAL if name.startswith("gelu") else SPECIAL], mode, rtol=1e-5, atol=1e-6,
          wrt=())
    finite = SPECIAL[np.abs(SPECIAL) < 1e3]
    check_function(fn, t_fn, [finite], mode, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("view,mode", _pairs(VIEWS, ("strided_last", "transpose01")))
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_views(name, view, mode):
    ms_fn, t_fn = ACTIVATIONS[name]
    ms_view, t_view, shape = VIEWS[view]

    def fn(x):
        return ms_fn(ms_view(x))

    check_function(fn, lambda x: t_fn(t_view(x)), [randn(*shape)], mode, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["pynative"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=["float64", "float16"])
def test_activation_dtypes(name, dtype, mode):
    ms_fn, t_fn = ACTIVATIONS[name]

    def fn(x):
        return ms_fn(x)

    check_function(fn, t_fn, [randn(3, 5, dtype=dtype)], mode, **_tol(dtype))


@pytest.mark.parametrize("mode", ["pynative"])
@pytest.mark.parametrize("name", ["gelu", "quick_gelu", "silu_mul_self"])
@pytest.mark.parametrize("shape", [(0, 4), (1,), (1, 1), ()], ids=str)
def test_activation_small_shapes(shape, name, mode):
    ms_fn, t_fn = ACTIVATIONS[name]

    def fn(x):
        return ms_fn(x)

    check_function(fn, t_fn, [randn(*shape) if shape else np.array(0.7, np.float32)], mode)


SILU_MUL = {
    # name -> (a shape, b shape or a float)
    "b_row_broadcast": ((3, 8), (8,)),
    "b_col_broadcast": ((3, 8), (3, 1)),
    "a_broadcast": ((8,), (3, 8)),
    "b_zero_dim": ((3, 8), ()),
    "both_broadcast": ((3, 1), (1, 8)),
}


@pytest.mark.parametrize("case,mode", _pairs(SILU_MUL, ("b_row_broadcast", "b_zero_dim")))
def test_silu_mul_broadcast(case, mode):
    a_shape, b_shape = SILU_MUL[case]

    def fn(a, b):
        return F.silu_mul(a, b)

    b = randn(*b_shape, seed=1) if b_shape else np.array(1.5, np.float32)
    check_function(fn, lambda a, b: TF.silu(a) * b, [randn(*a_shape), b], mode)


@pytest.mark.parametrize("mode", MODES)
def test_silu_mul_python_scalar(mode):
    def fn(a):
        return F.silu_mul(a, 2.5)

    check_function(fn, lambda a: TF.silu(a) * 2.5, [randn(3, 8)], mode)


@pytest.mark.parametrize("mode", MODES)
def test_silu_mul_mixed_dtypes(mode):
    def fn(a, b):
        return F.silu_mul(a, b)

    check_function(fn, lambda a, b: TF.silu(a) * b, [randn(3, 8, dtype=np.float16), randn(3, 8, seed=1)], mode,
          rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("mode", MODES)
def test_silu_mul_views_of_both(mode):
    def fn(a, b):
        return F.silu_mul(T.transpose(a, 0, 1), b[:, ::2])

    check_function(fn, lambda a, b: TF.silu(a.transpose(0, 1)) * b[:, ::2], [randn(8, 3), randn(3, 16, seed=1)], mode)


# ---- linear ---------------------------------------------------------------------------
LINEAR = {
    # name -> (x shape, weight shape [N, K], bias?)
    "one_d": ((16,), (5, 16), True),
    "one_d_no_bias": ((16,), (5, 16), False),
    "rows_8_3d": ((2, 4, 16), (5, 16), True),
    "rows_9_3d": ((3, 3, 16), (5, 16), True),
    "one_row_2d": ((1, 16), (5, 16), False),
    "zero_rows": ((0, 16), (5, 16), True),
    "one_out": ((2, 16), (1, 16), True),
    "k_one": ((2, 1), (5, 1), True),
    # more than 8 rows: one MatMul(transpose_b) over the rows (its backward has no Transpose)
    "rows_12_2d_no_bias": ((12, 16), (7, 16), False),
    "rows_24_4d": ((2, 3, 4, 16), (7, 16), True),
    "rows_132_3d_wide": ((2, 66, 16), (40, 16), True),
}


@pytest.mark.parametrize("case,mode", _pairs(LINEAR, ("one_d", "rows_8_3d", "rows_9_3d", "rows_24_4d")))
def test_linear_cases(case, mode):
    x_shape, w_shape, bias = LINEAR[case]
    inputs = [randn(*x_shape), randn(*w_shape, seed=1)] + ([randn(w_shape[0], seed=2)] if bias else [])

    def fn(x, w, *b):
        return F.linear(x, w, b[0] if b else None)

    check_function(fn, lambda x, w, *b: TF.linear(x, w, b[0] if b else None), inputs, mode, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("view,mode", _pairs(["weight_transposed", "x_strided", "x_transposed", "weight_sliced"],
                                             ["weight_transposed", "x_strided"]))
def test_linear_views(view, mode):
    if view == "weight_transposed":  # a [K, N] parameter used as weight.T
        inputs = [randn(2, 16), randn(16, 5, seed=1), randn(5, seed=2)]
        ms_fn = lambda x, w, b: F.linear(x, T.transpose(w, 0, 1), b)  # noqa: E731
        t_fn = lambda x, w, b: TF.linear(x, w.transpose(0, 1), b)  # noqa: E731
    elif view == "x_strided":
        inputs = [randn(2, 32), randn(5, 16, seed=1), randn(5, seed=2)]
        ms_fn = lambda x, w, b: F.linear(x[:, ::2], w, b)  # noqa: E731
        t_fn = lambda x, w, b: TF.linear(x[:, ::2], w, b)  # noqa: E731
    elif view == "x_transposed":
        inputs = [randn(16, 3), randn(5, 16, seed=1), randn(5, seed=2)]
        ms_fn = lambda x, w, b: F.linear(T.transpose(x, 0, 1), w, b)  # noqa: E731
        t_fn = lambda x, w, b: TF.linear(x.transpose(0, 1), w, b)  # noqa: E731
    else:
        inputs = [randn(2, 16), randn(5, 17, seed=1), randn(5, seed=2)]
        ms_fn = lambda x, w, b: F.linear(x, w[:, 1:], b)  # noqa: E731
        t_fn = lambda x, w, b: TF.linear(x, w[:, 1:], b)  # noqa: E731

    def fn(x, w, b):
        return ms_fn(x, w, b)

    check_function(fn, t_fn, inputs, mode)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=["float64", "float16"])
def test_linear_dtypes(dtype):
    def fn(x, w, b):
        return F.linear(x, w, b)

    check_function(fn, TF.linear, [randn(2, 16, dtype=dtype), randn(5, 16, seed=1, dtype=dtype),
                          randn(5, seed=2, dtype=dtype)], "pynative", **_tol(dtype))


def test_linear_mismatched_width_raises():
    x, w = ms.Tensor(randn(2, 16)), ms.Tensor(randn(5, 12))
    with pytest.raises(Exception):
        F.linear(x, w).asnumpy()
    with pytest.raises(Exception):
        F.linear(ms.Tensor(randn(16)), w).asnumpy()


# ---- scaled_dot_product_attention ------------------------------------------------------
def _bool_mask(shape, seed, dead=True):
    m = np.random.default_rng(seed).random(shape) > 0.4
    m[..., 0] = True
    if dead:
        m[..., 1, :] = False  # query 1 attends to nothing
    return m


def _float_mask(shape, seed, dead=True):
    rng = np.random.default_rng(seed)
    m = np.where(rng.random(shape) > 0.3, 0.0, -np.inf) + rng.standard_normal(shape)
    m[..., 0] = 0.5
    if dead:
        m[..., 1, :] = -np.inf
    return m.astype(np.float32)


B, H, L, S, D = 2, 4, 5, 6, 8
SDPA = {
    # name -> (q, k, v, mask or None, kwargs); the mask's gradient is checked when float
    "mask_LS_bool": ((B, H, L, D), (B, H, S, D), _bool_mask((L, S), 1), {}),
    "mask_LS_float": ((B, H, L, D), (B, H, S, D), _float_mask((L, S), 1), {}),
    "mask_B1LS_bool": ((B, H, L, D), (B, H, S, D), _bool_mask((B, 1, L, S), 2), {}),
    "mask_BHLS_float": ((B, H, L, D), (B, H, S, D), _float_mask((B, H, L, S), 3), {}),
    "mask_111S_bool": ((B, H, L, D), (B, H, S, D), _bool_mask((1, 1, 1, S), 4, dead=False), {}),
    "mask_111S_float": ((B, H, L, D), (B, H, S, D), _float_mask((1, 1, 1, S), 4, dead=False), {}),
    "mask_1HLS_float": ((B, H, L, D), (B, H, S, D), _float_mask((1, H, L, S), 5), {}),
    "mask_B11S_bool_gqa": ((B, H, L, D), (B, 2, S, D), _bool_mask((B, 1, 1, S), 6, dead=False),
                           {"enable_gqa": True}),
    "mask_BHLS_bool_gqa": ((B, H, L, D), (B, 2, S, D), _bool_mask((B, H, L, S), 7), {"enable_gqa": True}),
    "mask_LS_float_gqa": ((B, H, L, D), (B, 1, S, D), _float_mask((L, S), 8), {"enable_gqa": True}),
    "mask_last_dim_1": ((B, H, L, D), (B, H, S, D), _float_mask((B, 1, L, 1), 9, dead=False), {}),
    "mask_all_dead_bool": ((B, H, L, D), (B, H, S, D), np.zeros((B, 1, L, S), bool), {}),
    "causal_L_lt_S": ((B, H, 3, D), (B, H, S, D), None, {"is_causal": True}),
    "causal_L_gt_S": ((B, H, 7, D), (B, H, 4, D), None, {"is_causal": True}),
    "causal_gqa": ((B, H, L, D), (B, 2, L, D), None, {"is_causal": True, "enable_gqa": True}),
    "scale_given": ((B, H, L, D), (B, H, S, D), _float_mask((B, 1, L, S), 10), {"scale": 0.37}),
    "no_batch_3d": ((H, L, D), (H, S, D), _bool_mask((L, S), 11), {}),
    "no_batch_3d_causal": ((H, L, D), (H, S, D), None, {"is_causal": True}),
    "one_query": ((B, H, 1, D), (B, H, S, D), _float_mask((B, 1, 1, S), 12, dead=False), {}),
    "one_key": ((B, H, L, D), (B, H, 1, D), None, {}),
    "batch_broadcast_kv": ((B, H, L, D), (1, H, S, D), None, {}),
    "value_dim_differs": ((B, H, L, D), (B, H, S, D), _bool_mask((L, S), 13), {"value_dim": 3}),
    "mask_5d": ((1, B, H, L, D), (1, B, H, S, D), _float_mask((1, 1, 1, L, S), 14), {}),
    "scale_zero_float_mask": ((B, H, L, D), (B, H, S, D), _float_mask((B, 1, L, S), 15, dead=False),
                              {"scale": 0.0}),
    "mask_BHLS_float_gqa": ((B, H, L, D), (B, 2, S, D), _float_mask((B, H, L, S), 16), {"enable_gqa": True}),
    "mask_1HLS_float_gqa": ((B, H, L, D), (B, 2, S, D), _float_mask((1, H, L, S), 17), {"enable_gqa": True}),
    "mask_B11S_float_gqa": ((B, H, L, D), (B, 2, S, D), _float_mask((B, 1, 1, S), 18, dead=False),
                            {"enable_gqa": True}),
    "causal_gqa_L_lt_S": ((B, H, 3, D), (B, 2, S, D), None, {"is_causal": True, "enable_gqa": True}),
    "gqa_flag_same_heads": ((B, H, L, D), (B, H, S, D), _bool_mask((L, S), 19), {"enable_gqa": True}),
    "mask_HLS_3d": ((B, H, L, D), (B, H, S, D), _float_mask((H, L, S), 20), {}),
}


def _sdpa_inputs(case, big=1.0, dtype=np.float32):
    q_shape, k_shape, mask, kwargs = SDPA[case]
    kwargs = dict(kwargs)
    dv = kwargs.pop("value_dim", k_shape[-1])
    v_shape = k_shape[:-1] + (dv,)
    inputs = [randn(*q_shape, dtype=dtype, scale=big), randn(*k_shape, seed=1, dtype=dtype, scale=big),
              randn(*v_shape, seed=2, dtype=dtype)]
    if mask is not None:
        inputs.append(mask.astype(dtype) if mask.dtype != bool else mask)
    return inputs, kwargs


def _sdpa_fns(has_mask, kwargs):
    def fn(q, k, v, *m):
        return F.scaled_dot_product_attention(q, k, v, m[0] if m else None, **kwargs)

    def ref(q, k, v, *m):
        return TF.scaled_dot_product_attention(q, k, v, m[0] if m else None, **kwargs)

    return fn, ref


SDPA_JIT = ("mask_LS_float_gqa", "mask_B11S_bool_gqa", "mask_BHLS_bool_gqa", "causal_L_gt_S", "causal_gqa",
            "mask_all_dead_bool")


@pytest.mark.parametrize("case,mode", _pairs(SDPA, SDPA_JIT))
def test_sdpa_cases(case, mode):
    inputs, kwargs = _sdpa_inputs(case)
    fn, ref = _sdpa_fns(len(inputs) == 4, kwargs)
    check_function(fn, ref, inputs, mode, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case,mode", _pairs(["mask_B1LS_bool", "mask_LS_float", "causal_L_gt_S"], ["mask_LS_float"]))
def test_sdpa_huge_scores(case, mode):
    """Scores of ~1e4 (softmax overflow if not max-subtracted)."""
    inputs, kwargs = _sdpa_inputs(case, big=40.0)
    fn, ref = _sdpa_fns(len(inputs) == 4, kwargs)
    check_function(fn, ref, inputs, mode, rtol=1e-3, atol=1e-3, wrt=())


@pytest.mark.parametrize("mode", MODES)
def test_sdpa_nan_propagates(mode):
    inputs, kwargs = _sdpa_inputs("mask_B1LS_bool")
    inputs[0][0, 0, 2, 3] = np.nan
    inputs[2][1, 2, 4, 0] = np.nan
    fn, ref = _sdpa_fns(True, kwargs)
    check_function(fn, ref, inputs, mode, rtol=1e-4, atol=1e-5, wrt=())


@pytest.mark.parametrize("mode", ["pynative"])  # a Python-level guard: the same under jit
@pytest.mark.parametrize("empty", ["keys", "queries"])
def test_sdpa_empty(empty, mode):
    """No keys: torch gives zeros (MindSpore's matmul over an empty inner dim left garbage)."""
    s, l = (0, L) if empty == "keys" else (S, 0)
    for _ in range(3):  # garbage shows up once the allocator reuses dirty memory
        check_function(_sdpa_fns(False, {})[0], _sdpa_fns(False, {})[1],
              [randn(B, H, l, D), randn(B, H, s, D, seed=1), randn(B, H, s, D, seed=2)], mode, wrt=())
        ms.Tensor(np.full((256, 256), 7.0, np.float32)).asnumpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=["float64", "float16"])
@pytest.mark.parametrize("case", ["mask_B1LS_bool", "causal_L_lt_S"])
def test_sdpa_dtypes(case, dtype):
    inputs, kwargs = _sdpa_inputs(case, dtype=dtype)
    fn, ref = _sdpa_fns(len(inputs) == 4, kwargs)
    check_function(fn, ref, inputs, "pynative", **({"rtol": 1e-2, "atol": 1e-2} if dtype == np.float16 else {}))


@pytest.mark.parametrize("view,mode", _pairs(["q_transposed", "k_sliced", "v_strided"], ["q_transposed"]))
def test_sdpa_views(view, mode):
    q, k, v = randn(B, L, H, D), randn(B, H, S + 1, D, seed=1), randn(B, H, S, 2 * D, seed=2)
    mask = _float_mask((B, 1, L, S), 3)

    def fn(q, k, v, m):
        q = T.transpose(q, 1, 2) if view == "q_transposed" else T.transpose(q, 1, 2).contiguous()
        k = k[:, :, 1:] if view == "k_sliced" else k[:, :, :S]
        v = v[..., ::2] if view == "v_strided" else v[..., :D]
        return F.scaled_dot_product_attention(q, k, v, m)

    def ref(q, k, v, m):
        return TF.scaled_dot_product_attention(q.transpose(1, 2), k[:, :, 1:] if view == "k_sliced" else k[:, :, :S],
                                               v[..., ::2] if view == "v_strided" else v[..., :D], m)

    check_function(fn, ref, [q, k, v, mask], mode, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_sdpa_dropout_statistics(mode):
    """With v = identity the output is the dropped-out probabilities: about p of them zero,
    the kept ones torch's probabilities / (1 - p)."""
    p = 0.5
    q, k = randn(2, 2, 16, 8), randn(2, 2, 16, 8, seed=1)
    v = np.broadcast_to(np.eye(16, dtype=np.float32), (2, 2, 16, 16)).copy()

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)

    call = ms.jit(fn) if mode == "jit" else fn
    _COMPILED.append(call)
    out = call(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v)).asnumpy()
    probs = TF.scaled_dot_product_attention(torch.tensor(q), torch.tensor(k), torch.tensor(v)).numpy()
    assert out.shape == probs.shape and out.dtype == np.float32
    kept = out != 0
    assert 0.4 < 1 - kept.mean() < 0.6, 1 - kept.mean()
    np.testing.assert_allclose(out[kept], probs[kept] / (1 - p), rtol=1e-5, atol=1e-6)


# ---- rotary_embedding ------------------------------------------------------------------
def _rotate_half(x):
    x1, x2 = x.chunk(2, -1)
    return torch.cat((-x2, x1), -1)


def _rope_ref(x, cos, sin, transpose_heads=False):
    if transpose_heads:
        x, cos, sin = x.transpose(1, 2), cos.unsqueeze(1), sin.unsqueeze(1)
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)


ROPE = {
    # name -> (x shape, table shape, transpose_heads)
    "tables_LD": ((2, 3, 5, 8), (5, 8), False),
    "tables_B1LD": ((2, 3, 5, 8), (2, 1, 5, 8), False),
    "tables_1LD": ((2, 3, 5, 8), (1, 5, 8), False),
    "tables_per_head": ((2, 3, 5, 8), (3, 5, 8), False),
    "x_3d": ((3, 5, 8), (5, 8), False),
    "heads_first_BLD": ((2, 5, 3, 8), (2, 5, 8), True),
    "heads_first_1LD": ((2, 5, 3, 8), (1, 5, 8), True),
    "one_position": ((2, 1, 3, 8), (1, 1, 8), True),
    "dim_2": ((2, 3, 5, 2), (5, 2), False),
}


@pytest.mark.parametrize("case,mode", _pairs(ROPE, ("heads_first_1LD", "tables_B1LD", "tables_per_head")))
def test_rotary_cases(case, mode):
    x_shape, t_shape, heads = ROPE[case]

    def fn(x, c, s):
        return F.rotary_embedding(x, c, s, heads)

    check_function(fn, lambda x, c, s: _rope_ref(x, c, s, heads),
          [randn(*x_shape), randn(*t_shape, seed=1), randn(*t_shape, seed=2)], mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("heads", [False, True])
def test_rotary_views(heads, mode):
    # x arrives transposed (a view of [B, L, H, D] read as [B, H, L, D] or the reverse)
    def fn(x, c, s):
        return F.rotary_embedding(T.transpose(x, 1, 2), c, s, heads)

    x = randn(2, 5, 3, 8) if not heads else randn(2, 3, 5, 8)
    t = (5, 8) if not heads else (1, 5, 8)  # L = 5 either way
    check_function(fn, lambda x, c, s: _rope_ref(x.transpose(1, 2), c, s, heads),
          [x, randn(*t, seed=1), randn(*t, seed=2)], mode)


@pytest.mark.parametrize("mode", MODES)
def test_rotary_sliced_tables(mode):
    def fn(x, c, s):
        return F.rotary_embedding(x, c[:5], s[1:6], False)

    check_function(fn, lambda x, c, s: _rope_ref(x, c[:5], s[1:6]), [randn(2, 3, 5, 8), randn(7, 8, seed=1),
                                                              randn(7, 8, seed=2)], mode)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=["float64", "float16"])
def test_rotary_dtypes(dtype):
    def fn(x, c, s):
        return F.rotary_embedding(x, c, s, False)

    check_function(fn, _rope_ref, [randn(2, 3, 5, 8, dtype=dtype), randn(5, 8, seed=1), randn(5, 8, seed=2)],
          "pynative", **_tol(dtype))


# ---- auto_convert rules ----------------------------------------------------------------
def _convert(source: str) -> str:
    from auto_convert import convert_python
    return convert_python(source)[0]


CONVERT_UNCHANGED = {
    "silu_not_torch": "import torch\nimport mylib as F\ny = F.silu(a) * b\n",
    "silu_local_F": "import torch\nimport torch.nn.functional as F\ndef f(F, a, b):\n    return F.silu(a) * b\n",
    "silu_keyword": "import torch\nimport torch.nn.functional as F\ny = F.silu(a, inplace=False) * b\n",
    "silu_times_left": "import torch\nimport torch.nn.functional as F\ny = b * F.silu(a)\n",
    "silu_matmul": "import torch\nimport torch.nn.functional as F\ny = F.silu(a) @ b\n",
    "silu_after_mul": "import torch\nimport torch.nn.functional as F\ny = c * F.silu(a) * b\n",
    "quick_gelu_other_var": "import torch\ny = x * torch.sigmoid(1.702 * z)\n",
    "quick_gelu_other_scale": "import torch\ny = x * torch.sigmoid(1.7 * x)\n",
    "quick_gelu_not_torch": "import torch\nfrom mylib import sigmoid\ny = x * sigmoid(1.702 * x)\n",
    "quick_gelu_prefix_product": "import torch\ny = a * x * torch.sigmoid(1.702 * x)\n",
    "quick_gelu_subscript": "import torch\ny = x[0] * torch.sigmoid(1.702 * x[1])\n",
}

CONVERT_CHANGED = {
    "silu_F": ("import torch\nimport torch.nn.functional as F\ny = F.silu(a) * b\n", "silu_mul(a, b)"),
    "silu_from_import": ("import torch\nfrom torch.nn.functional import silu\ny = silu(a) * b\n",
                         "silu_mul(a, b)"),
    "silu_in_expr": ("import torch\nimport torch.nn.functional as F\ny = F.silu(a) * b + 1\n",
                     "silu_mul(a, b) + 1"),
    "quick_gelu": ("import torch\ny = x * torch.sigmoid(1.702 * x)\n", "quick_gelu(x)"),
    "quick_gelu_attr": ("import torch\ny = self.x * torch.sigmoid(1.702 * self.x)\n", "quick_gelu(self.x)"),
}


@pytest.mark.parametrize("case", sorted(CONVERT_UNCHANGED))
def test_convert_does_not_fuse(case):
    out = _convert(CONVERT_UNCHANGED[case])
    assert "silu_mul" not in out and "quick_gelu" not in out, out


@pytest.mark.parametrize("case", sorted(CONVERT_CHANGED))
def test_convert_fuses(case):
    source, fragment = CONVERT_CHANGED[case]
    out = _convert(source)
    assert fragment in out, out
    compile(out, "<converted>", "exec")


# ---- strided parameters ----------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_norm_strided_weight(mode):
    def fn(x, w, b):
        return F.layer_norm(x, (8,), w[::2], b[1:9]) + F.rms_norm(x, (8,), w[1::2], 1e-6)

    check_function(fn, lambda x, w, b: TF.layer_norm(x, (8,), w[::2], b[1:9]) + TF.rms_norm(x, (8,), w[1::2], 1e-6),
          [randn(3, 8), randn(16, seed=1), randn(10, seed=2)], mode)


@pytest.mark.parametrize("mode", MODES)
def test_rotary_transposed_tables(mode):
    def fn(x, c, s):
        return F.rotary_embedding(x, T.transpose(c, 0, 1), T.transpose(s, 0, 1), False)

    check_function(fn, lambda x, c, s: _rope_ref(x, c.transpose(0, 1), s.transpose(0, 1)),
          [randn(2, 3, 5, 8), randn(8, 5, seed=1), randn(8, 5, seed=2)], mode)


def test_sdpa_dropout_gqa_shape():
    q, k, v = randn(2, 4, 6, 8), randn(2, 2, 6, 8, seed=1), np.ones((2, 2, 6, 8), np.float32)
    out = F.scaled_dot_product_attention(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v), dropout_p=0.3,
                                         enable_gqa=True).asnumpy()
    assert out.shape == (2, 4, 6, 8) and np.all(np.isfinite(out))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_mask_views(kind, mode):
    """HF slices a preallocated mask to the key length (mask[:, :, :, :S]) or transposes one."""
    big = _bool_mask((B, 1, L, S + 3), 21) if kind == "bool" else _float_mask((B, 1, L, S + 3), 21)
    tr = _bool_mask((S, L), 22, dead=False) if kind == "bool" else _float_mask((S, L), 22, dead=False)

    def fn(q, k, v, m, t):
        return (F.scaled_dot_product_attention(q, k, v, m[:, :, :, 1:S + 1])
                + F.scaled_dot_product_attention(q, k, v, T.transpose(t, 0, 1)))

    def ref(q, k, v, m, t):
        return (TF.scaled_dot_product_attention(q, k, v, m[:, :, :, 1:S + 1])
                + TF.scaled_dot_product_attention(q, k, v, t.transpose(0, 1)))

    check_function(fn, ref, [randn(B, H, L, D), randn(B, H, S, D, seed=1), randn(B, H, S, D, seed=2), big, tr], mode,
          wrt=(0, 1, 2), rtol=1e-4, atol=1e-5)
