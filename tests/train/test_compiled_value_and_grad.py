"""``msmm.train.compiled_value_and_grad``: a model's loss, outputs and gradients in one compiled
graph equal real torch's ``backward``; models built one after another (the previous one freed)
each get their own graph, not a stale one found by a reused id()."""
from __future__ import annotations

import gc
import os
import sys

import numpy as np
import torch

from msmm.models import text
from msmm.models.core import TransformerConfig
from msmm.train import compiled_value_and_grad

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import ms_backend  # noqa: E402

CONFIG = dict(num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2, ffn_hidden_size=64,
              vocab_size=64)


def torch_reference(seed: int, inputs: dict):
    """Real-torch Qwen2Decoder of ``seed``: its state (numpy), loss, logits and gradients."""
    torch.manual_seed(seed)
    model = text.Qwen2Decoder(TransformerConfig(**CONFIG))
    loss, logits = model(**{k: torch.tensor(v) for k, v in inputs.items()})
    loss.backward()
    grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}, float(loss.detach()), logits.detach().numpy(), grads


def test_matches_torch_and_each_model_gets_its_own_graph(rng):
    ids = rng.integers(0, 64, (2, 12))
    inputs = dict(input_ids=ids, attention_mask=np.ones_like(ids), labels=ids)
    ms = ms_backend.converted_models()
    for seed in (0, 1):  # the second model and step may reuse the first's freed ids
        state, loss, logits, grads = torch_reference(seed, inputs)
        with ms_backend.converted_in_sys_modules():
            model = ms.text.Qwen2Decoder(TransformerConfig(**CONFIG))
            model.load_state_dict({k: ms.torch.tensor(v) for k, v in state.items()})
            names = [n for n, p in model.named_parameters() if p.requires_grad]
            step = compiled_value_and_grad(model)
            (got_loss, got_logits), got_grads = step(ms_backend.to_ms(inputs))
        np.testing.assert_allclose(float(got_loss.asnumpy()), loss, rtol=1e-5)
        np.testing.assert_allclose(got_logits.asnumpy(), logits, rtol=1e-4, atol=1e-5)
        assert len(got_grads) == len(names)
        for name, grad in zip(names, got_grads):
            np.testing.assert_allclose(grad.asnumpy(), grads[name], rtol=1e-3, atol=1e-5, err_msg=name)
        del model, step, got_grads
        gc.collect()
