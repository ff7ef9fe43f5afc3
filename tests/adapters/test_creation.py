"""Contract tests of adapters.torch creation and random ops against real torch.

Random streams cannot match torch's: the random tests check what torch promises
instead (same seed, same numbers; shapes, dtypes, ranges and moments of the draws).
"""
import mindspore as ms
import numpy as np
import pytest
import torch as torch_ref

import adapters.torch as torch_ms
from tests.adapters import harness
from tests.adapters.harness import MODES, check, load_cases, randn

CASES = [
    # (case, inputs, apis, options)
    ("from_python", [], ("torch.tensor", "torch.as_tensor"), {}),
    ("from_tensor", [randn(2, 3)], ("torch.tensor", "torch.as_tensor"), {}),
    ("filled", [], ("torch.zeros", "torch.ones", "torch.full", "torch.empty", "torch.eye"), {}),
    ("ranges", [], ("torch.arange", "torch.linspace"), {}),
    # the outputs do not depend on the values of x: no gradient in torch
    ("likes", [randn(2, 3), np.arange(6, dtype=np.int64).reshape(2, 3)],
     ("torch.zeros_like", "torch.ones_like", "torch.full_like", "torch.empty_like"), dict(grad=False)),
]


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")  # torch.tensor(t): under test
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case, inputs, apis, options", CASES, ids=[c[0] for c in CASES])
def test_creation(case, inputs, apis, options, mode):
    check("creation", case, inputs, mode=mode, api=apis[0], **options)
    for api in apis[1:]:
        harness.record(api, mode)


def test_from_numpy_keeps_dtype_and_memory():
    """torch.tensor(numpy) keeps the array's dtype; from_numpy shares its memory."""
    for array in (np.arange(4.0), np.arange(4, dtype=np.int32), np.ones(2, np.float16)):
        got, want = torch_ms.tensor(array), torch_ref.tensor(array)
        assert harness._dtype_name(got) == harness._dtype_name(want)
        assert harness._dtype_name(torch_ms.from_numpy(array)) == harness._dtype_name(torch_ref.from_numpy(array))
        assert harness._dtype_name(torch_ms.as_tensor(array)) == harness._dtype_name(torch_ref.as_tensor(array))
    array = np.zeros(3, np.float32)
    shared = torch_ms.from_numpy(array)
    array[1] = 5.0
    np.testing.assert_array_equal(shared.asnumpy(), array)
    harness.record("torch.from_numpy", "pynative")
    harness.record("torch.as_tensor", "pynative")


def _run(name: str, mode: str, *args):
    fn = getattr(load_cases("creation")[1], name)
    run = ms.jit(fn) if mode == "graph" else fn
    harness._COMPILED.append(run)  # see harness._COMPILED
    out = run(*args)
    return [o.asnumpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("mode", MODES)
def test_manual_seed_replays(mode):
    """Same seed, same numbers; the next draw differs. A compiled graph takes its random
    state when it is compiled, so graph mode replays by compiling after the seed."""
    draws = []
    for _ in range(2):
        torch_ms.manual_seed(1234)
        if mode == "graph":  # a fresh compile after the seed
            fn = getattr(load_cases("creation")[1], "normal_draws")
            jitted = ms.jit(fn)
            harness._COMPILED.append(jitted)
            draws.append([o.asnumpy() for o in jitted(2)] + [o.asnumpy() for o in jitted(2)])
        else:
            draws.append(_run("normal_draws", mode, 2) + _run("normal_draws", mode, 2))
    for first, second in zip(*draws):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(draws[0][0], draws[0][2]), "a second draw must give new numbers"
    torch_ms.manual_seed(4321)
    assert torch_ms.initial_seed() == 4321
    harness.record("torch.initial_seed", mode)
    assert not np.array_equal(_run("normal_draws", "pynative", 2)[0], draws[0][0])
    harness.record("torch.manual_seed", mode)


@pytest.mark.parametrize("mode", MODES)
def test_random_distributions(mode):
    """Moments of 2000 draws, against the same statistics of torch's draws."""
    torch_ms.manual_seed(0)
    torch_ref.manual_seed(0)
    uniform = _run("uniform", mode, 2)[0]
    want = load_cases("creation")[0].uniform(2).numpy()
    assert uniform.dtype == want.dtype and uniform.shape == want.shape
    assert uniform.min() >= 0.0 and uniform.max() < 1.0
    assert abs(uniform.mean() - 0.5) < 0.03 and abs(uniform.var() - 1 / 12) < 0.01
    standard, shifted = _run("normal_draws", mode, 2)
    assert abs(standard.mean()) < 0.1 and abs(standard.std() - 1.0) < 0.05
    assert abs(shifted.mean() - 2.0) < 0.3 and abs(shifted.std() - 3.0) < 0.15
    for api in ("torch.rand", "torch.randn", "torch.normal"):
        harness.record(api, mode)


@pytest.mark.parametrize("mode", MODES)
def test_random_shapes_and_dtypes(mode):
    x = randn(3, 4)
    ref = load_cases("creation")[0].random_shapes(torch_ref.tensor(x))
    torch_ms.manual_seed(0)
    got = _run("random_shapes", mode, ms.Tensor(x))
    names = ["rand", "rand", "randn", "rand_like", "randn_like", "randint", "randint", "randint",
             "normal", "normal", "normal", "randint_like", "randperm", "bernoulli", "bernoulli"]
    for name, g, w in zip(names, got, ref):
        assert g.shape == tuple(w.shape), f"{name}: shape {g.shape} != torch {tuple(w.shape)}"
        assert str(g.dtype) == str(w.numpy().dtype), f"{name}: dtype {g.dtype} != torch {w.dtype}"
    assert got[5].min() >= 0 and got[5].max() < 5 and got[6].max() < 7 and got[7].min() >= -3
    np.testing.assert_array_equal(np.sort(got[12]), np.arange(6))
    assert set(np.unique(got[13])) == {0.0, 1.0} and abs(got[13].mean() - 0.3) < 0.05
    assert not got[14].any(), "bernoulli with p=0 draws only zeros"
    for name in sorted(set(names)):
        harness.record(f"torch.{name}", mode)
