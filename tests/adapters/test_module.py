"""nn.Module contract: names, state_dict, buffers, loading, modes and dtypes against torch."""
import mindspore as ms
import numpy as np
import pytest
import torch as torch_ref

import adapters.torch as torch_ms
from adapters.torch._dispatch import UnsupportedOpError, kernel
from tests.adapters.harness import MODES, check_module, load_cases, randn


def _pair():
    ref_mod, ms_mod = load_cases("modules")
    return ref_mod.tower(), ms_mod.tower()


def test_names_match_torch():
    ref, net = _pair()
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in net.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert list(net.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in net.named_modules()] == [n for n, _ in ref.named_modules()]
    assert [n for n, _ in net.blocks.named_parameters()] == [n for n, _ in ref.blocks.named_parameters()]
    assert isinstance(net.scale, torch_ms.nn.Parameter) and not net.scale.requires_grad
    assert len(net.blocks) == 2 and net.get_parameter("seq.1.weight") is net.seq[1].weight


@pytest.mark.parametrize("mode", MODES)
def test_forward_and_grads_match_torch(mode):
    check_module("modules", "tower", [randn(2, 3)], mode=mode, api="torch.nn.Module")


def test_load_state_dict_after_compile_reaches_graph():
    _, net = _pair()
    x = ms.Tensor(randn(2, 3))
    compiled = ms.jit(net)
    before = compiled(x).asnumpy()
    net.load_state_dict({k: np.asarray(v.asnumpy()) * 2 for k, v in net.state_dict().items()})
    np.testing.assert_allclose(compiled(x).asnumpy(), net(x).asnumpy(), rtol=1e-6)
    assert not np.allclose(before, net(x).asnumpy())


def test_load_state_dict_errors_name_the_key():
    _, net = _pair()
    sd = {k: v.asnumpy() for k, v in net.state_dict().items()}
    sd["seq.0.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(RuntimeError, match=r"size mismatch for seq.0.weight"):
        net.load_state_dict(sd)
    sd = {k: v.asnumpy() for k, v in net.state_dict().items()}
    del sd["blocks.0.offset"]
    sd["extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(RuntimeError, match=r"missing keys: blocks.0.offset[\s\S]*unexpected keys: extra.weight"):
        net.load_state_dict(sd)
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["blocks.0.offset"] and result.unexpected_keys == ["extra.weight"]


def test_train_eval_requires_grad_and_dtype_follow_torch():
    ref, net = _pair()
    assert net.training == ref.training
    net.eval(), ref.eval()
    assert not net.training and not net.blocks[0].training
    net.seq.requires_grad_(False), ref.seq.requires_grad_(False)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == \
           [n for n, p in ref.named_parameters() if p.requires_grad]
    net.to(torch_ms.float16), ref.to(torch_ref.float16)
    ms_dtypes = {n: str(t.dtype).lower() for n, t in list(net.named_parameters()) + list(net.named_buffers())}
    ref_dtypes = {n: str(t.dtype).replace("torch.", "") for n, t in list(ref.named_parameters()) + list(ref.named_buffers())}
    assert ms_dtypes == ref_dtypes
    net.float()
    assert all(p.dtype == ms.float32 for p in net.parameters())


def test_unsupported_op_names_op_and_device():
    with pytest.raises(UnsupportedOpError, match=r"op 'no_such_op' has no kernel on device 'Ascend'"):
        kernel("no_such_op", "Ascend")()


def test_slicing_containers_keeps_names_like_torch():
    ref, net = _pair()
    before = [p.name for p in net.parameters()]
    first, rest = net.blocks[:1], net.blocks[1:]
    head = net.seq[:1]
    assert [n for n, _ in rest.named_parameters()] == [n for n, _ in ref.blocks[1:].named_parameters()]
    assert isinstance(head, type(net.seq)) and len(head) == 1 and len(first) == 1
    x = ms.Tensor(randn(2, 3))
    np.testing.assert_allclose(head(x).asnumpy(), net.seq[0](x).asnumpy())
    assert [p.name for p in net.parameters()] == before  # the model's own names are untouched


def test_parameters_inside_plain_cells_are_listed_and_cast():
    _, net = _pair()
    net.plain = ms.nn.SequentialCell([ms.nn.Dense(2, 2)])
    names = [n for n, _ in net.named_parameters()]
    assert "plain.0.weight" in names and "plain.0.bias" in names
    assert [k for k in net.state_dict() if k.startswith("plain.")] == ["plain.0.weight", "plain.0.bias"]
    net.to(torch_ms.float16)
    assert net.plain[0].weight.dtype == ms.float16
