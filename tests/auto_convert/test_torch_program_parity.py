"""Torch programs written in this suite, converted by auto_convert and run on MindSpore
through adapters, against the same programs on real torch with the same weights: the
loss and every parameter's gradient match, in PyNative and under mindspore.jit (a
parameter used only under no_grad has a zero gradient, torch's None).

Tolerance: fp32, rtol 1e-5 elementwise, with an absolute floor of 1e-5 x the largest
reference magnitude of the tensor (so entries that are ~0 compare at fp32 resolution).
"""
import importlib.util
import sys
from pathlib import Path

import mindspore
import numpy as np
import pytest
import torch

from auto_convert import convert_path

PROGRAMS = Path(__file__).parent / "torch_programs"
RTOL = 1e-5


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("converted")
    run, _ = convert_path(PROGRAMS, dst)
    assert run.complete, run.summary()
    return dst


def _vit_inputs(rng):
    return (rng.standard_normal((2, 3, 16, 16)).astype(np.float32),
            rng.integers(0, 10, (2,)).astype(np.int64))


def _gpt_inputs(rng):
    idx = rng.integers(0, 50, (2, 12)).astype(np.int64)
    targets = np.roll(idx, -1, axis=1)
    targets[:, -3:] = -100  # ignored positions
    return idx, targets


def _mlp_inputs(rng):
    return (rng.standard_normal((2, 5, 16)).astype(np.float32),
            rng.standard_normal((2, 5, 16)).astype(np.float32))


CASES = {
    "vit": ("ViT", _vit_inputs),
    "gpt": ("GPT", _gpt_inputs),
    "megatron_mlp": ("ParallelMLP", _mlp_inputs),
    "idioms": ("GatedAttention", _mlp_inputs),
}


def _torch_reference(program: str, inputs):
    cls_name, _ = CASES[program]
    module = _load(PROGRAMS / f"{program}.py", f"_torch_{program}")
    torch.manual_seed(0)
    model = module.__dict__[cls_name]()
    loss = model(*(torch.from_numpy(x) for x in inputs))
    loss.backward()
    grads = {n: np.zeros(p.shape, np.float32) if p.grad is None else p.grad.numpy()
             for n, p in model.named_parameters()}  # None: used under no_grad only
    weights = {n: t.detach().numpy() for n, t in model.state_dict().items()}
    return loss.item(), grads, weights


def _assert_close(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    floor = RTOL * float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=floor, err_msg=what)


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
@pytest.mark.parametrize("program", sorted(CASES))
def test_converted_program_matches_torch(program, jit, converted, rng):
    cls_name, make_inputs = CASES[program]
    inputs = make_inputs(rng)
    loss_ref, grads_ref, weights = _torch_reference(program, inputs)

    module = _load(converted / f"{program}.py", f"_ms_{program}_{'jit' if jit else 'pynative'}")
    assert "adapters.torch" in (converted / f"{program}.py").read_text()
    model = module.__dict__[cls_name]()
    model.load_state_dict({n: mindspore.Tensor(w) for n, w in weights.items()})
    names, params = zip(*model.named_parameters())
    assert sorted(names) == sorted(grads_ref)

    def forward(*batch):
        return model(*batch)

    step = mindspore.value_and_grad(forward, None, list(params))
    if jit:
        step = mindspore.jit(step)
    loss, grads = step(*(mindspore.Tensor(x) for x in inputs))

    _assert_close(loss.asnumpy(), loss_ref, f"{program} loss")
    for name, grad in zip(names, grads):
        _assert_close(grad.asnumpy(), grads_ref[name], f"{program} grad of {name}")
