"""Qwen2 / Llama decoders vs HF Qwen2ForCausalLM / LlamaForCausalLM, and InternLM2 through
its equivalence with Llama (q/k/v packed into ``wqkv``, gate/up/down into ``w1/w3/w2``)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from msmm.models import load_hf_weights
from msmm.models.text import (
    InternLM2Decoder,
    LlamaDecoder,
    Qwen2Decoder,
    internlm2_config_from_hf,
    llama_config_from_hf,
    qwen2_config_from_hf,
)
from parity_utils import RunResult, assert_parity, torch_grads

VOCAB = 96
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)


def make_batch(rng: np.random.Generator, batch: int = 2, seq: int = 14):
    """Right-padded batch: row 1 has 4 padding tokens; labels -100 on the prompt and padding."""
    input_ids = rng.integers(0, VOCAB, size=(batch, seq))
    attention_mask = np.ones((batch, seq), dtype=np.int64)
    attention_mask[1, -4:] = 0
    labels = input_ids.copy()
    labels[:, :3] = -100
    labels[attention_mask == 0] = -100
    return input_ids, attention_mask, labels


# ---- reference side: HF transformers ----------------------------------------------------

def hf_model(family: str, hf_config: dict, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    classes = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}
    config_cls, model_cls = classes[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**hf_config, attn_implementation="eager")).float()
    # Random, non-trivial norm weights and biases so every parameter matters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def hf_run(model, input_ids, attention_mask, labels) -> RunResult:
    model.zero_grad()
    out = model(
        input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(attention_mask), labels=torch.tensor(labels)
    )
    out.loss.backward()
    return RunResult(out.logits.detach().numpy(), float(out.loss.detach()), torch_grads(model))


# ---- msmm side ----------------------------------------------------------------------------

MSMM = {
    "qwen2": (Qwen2Decoder, qwen2_config_from_hf),
    "llama": (LlamaDecoder, llama_config_from_hf),
    "internlm2": (InternLM2Decoder, internlm2_config_from_hf),
}


def msmm_model(family: str, hf_config: dict, checkpoint: str):
    model_cls, config_fn = MSMM[family]
    model = model_cls(config_fn(hf_config))
    load_hf_weights(model, checkpoint, family)
    return model


def msmm_run(model, input_ids, attention_mask, labels, **extra) -> RunResult:
    model.zero_grad()
    loss, logits = model(
        input_ids=torch.tensor(input_ids),
        attention_mask=torch.tensor(attention_mask),
        labels=torch.tensor(labels),
        **extra,
    )
    loss.backward()
    return RunResult(logits.detach().numpy(), float(loss.detach()), torch_grads(model))


# ---- tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["qwen2", "llama"])
@pytest.mark.parametrize("tied", [False, True])
def test_decoder_matches_hf(family, tied, tmp_path, rng):
    hf_config = dict(BASE, tie_word_embeddings=tied)
    ref_model = hf_model(family, hf_config)
    ref_model.save_pretrained(tmp_path, safe_serialization=True)
    batch = make_batch(rng)
    ref = hf_run(ref_model, *batch)

    ours = msmm_run(msmm_model(family, hf_config, str(tmp_path)), *batch)
    if tied:  # HF names the shared tensor once; ours lists it under both names
        ours.grads.pop("lm_head.weight", None)
    errs = assert_parity(ours, ref, valid=batch[1])
    print(family, "tied" if tied else "untied", errs)


def pack_llama_as_internlm2(state: dict, hf_config: dict) -> dict:
    """HF Llama state dict (numpy) -> InternLM2 checkpoint keys and packed layouts."""
    heads, groups = hf_config["num_attention_heads"], hf_config["num_key_value_heads"]
    head_dim = hf_config["hidden_size"] // heads
    per_group = heads // groups
    out = {
        "model.tok_embeddings.weight": state["model.embed_tokens.weight"],
        "model.norm.weight": state["model.norm.weight"],
        "output.weight": state["lm_head.weight"],
    }
    for i in range(hf_config["num_hidden_layers"]):
        src, dst = f"model.layers.{i}.", f"model.layers.{i}."
        q = state[src + "self_attn.q_proj.weight"].reshape(groups, per_group, head_dim, -1)
        k = state[src + "self_attn.k_proj.weight"].reshape(groups, 1, head_dim, -1)
        v = state[src + "self_attn.v_proj.weight"].reshape(groups, 1, head_dim, -1)
        out[dst + "attention.wqkv.weight"] = np.concatenate([q, k, v], axis=1).reshape(-1, q.shape[-1])
        out[dst + "attention.wo.weight"] = state[src + "self_attn.o_proj.weight"]
        out[dst + "feed_forward.w1.weight"] = state[src + "mlp.gate_proj.weight"]
        out[dst + "feed_forward.w3.weight"] = state[src + "mlp.up_proj.weight"]
        out[dst + "feed_forward.w2.weight"] = state[src + "mlp.down_proj.weight"]
        out[dst + "attention_norm.weight"] = state[src + "input_layernorm.weight"]
        out[dst + "ffn_norm.weight"] = state[src + "post_attention_layernorm.weight"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


INTERNLM2_TO_LLAMA_GRAD = {
    "model.embed_tokens.weight": "model.embed_tokens.weight",
    "self_attn.wo.weight": "self_attn.o_proj.weight",
    "mlp.w1.weight": "mlp.gate_proj.weight",
    "mlp.w3.weight": "mlp.up_proj.weight",
    "mlp.w2.weight": "mlp.down_proj.weight",
}


def unpack_internlm2_grads(grads: dict, hf_config: dict) -> dict:
    """Gradients of the InternLM2 model renamed/unpacked to Llama's parameters."""
    heads, groups = hf_config["num_attention_heads"], hf_config["num_key_value_heads"]
    head_dim, per_group = hf_config["hidden_size"] // heads, heads // groups
    out = {}
    for name, g in grads.items():
        if name.endswith("self_attn.wqkv.weight"):
            prefix = name[: -len("wqkv.weight")]
            packed = g.reshape(groups, per_group + 2, head_dim, -1)
            out[prefix + "q_proj.weight"] = packed[:, :per_group].reshape(-1, g.shape[-1])
            out[prefix + "k_proj.weight"] = packed[:, per_group].reshape(-1, g.shape[-1])
            out[prefix + "v_proj.weight"] = packed[:, per_group + 1].reshape(-1, g.shape[-1])
            continue
        for ours, theirs in INTERNLM2_TO_LLAMA_GRAD.items():
            if name.endswith(ours):
                name = name[: -len(ours)] + theirs
        out[name] = g
    return out


def test_internlm2_equals_llama(tmp_path, rng):
    hf_config = dict(BASE, num_attention_heads=6, num_key_value_heads=2)  # 3 queries per group
    ref_model = hf_model("llama", hf_config)
    state = {k: v.detach().numpy() for k, v in ref_model.state_dict().items()}
    save_file(pack_llama_as_internlm2(state, hf_config), os.path.join(tmp_path, "model.safetensors"))
    batch = make_batch(rng)
    ref = hf_run(ref_model, *batch)

    internlm2_config = dict(hf_config, bias=False)
    ours = msmm_run(msmm_model("internlm2", internlm2_config, str(tmp_path)), *batch)
    ours.grads = unpack_internlm2_grads(ours.grads, hf_config)
    errs = assert_parity(ours, ref, valid=batch[1])
    print("internlm2 vs llama", errs)


def test_packed_sequences_match_separate_runs(tmp_path, rng):
    """Two sequences packed in one row (segment ids, restarting positions) give the logits
    HF computes for each sequence alone."""
    ref_model = hf_model("qwen2", BASE)
    ref_model.save_pretrained(tmp_path, safe_serialization=True)
    lengths = (9, 7)
    seqs = [rng.integers(0, VOCAB, size=(1, n)) for n in lengths]
    with torch.no_grad():
        ref_logits = [ref_model(input_ids=torch.tensor(s)).logits.numpy() for s in seqs]

    model = msmm_model("qwen2", BASE, str(tmp_path))
    packed = torch.tensor(np.concatenate(seqs, axis=1))
    segment_ids = torch.tensor(np.repeat(np.arange(len(lengths)), lengths)[None])
    position_ids = torch.tensor(np.concatenate([np.arange(n) for n in lengths])[None])
    with torch.no_grad():
        logits = model(input_ids=packed, position_ids=position_ids, segment_ids=segment_ids).numpy()
    err = np.abs(logits - np.concatenate(ref_logits, axis=1)).max()
    assert err <= 1e-4, err
