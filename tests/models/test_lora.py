"""LoRA / QLoRA-style layers against HF PEFT, on real torch and on MindSpore (PyNative, graph).

The reference is HF ``InternVLForConditionalGeneration`` (tiny, Qwen2 text) wrapped by
``peft.get_peft_model``: LoRA on every text linear layer but lm_head (r=4, alpha=8), LoRA
with another rank on the InternViT's q/k/v/out/fc1/fc2 (r=2, alpha=6), the projector
trained in full (``modules_to_save``). The same non-zero adapter weights go into msmm's
InternVL with ``apply_lora``; loss, logits and every trainable gradient are compared. The
adapter files msmm writes are loaded by ``PeftModel.from_pretrained`` and give msmm's logits.
"""
from __future__ import annotations

import os
import re

import numpy as np
import peft
import pytest
import torch

import ms_backend
from msmm.config.lora_config import LoRAConfig
from msmm.checkpoint.peft import AdapterNaming, LoRAModule, read_adapter, write_adapter
from msmm.models import lora as torch_lora
from msmm.models import quant
from msmm.models import from_pretrained
from msmm.train.adapter import AdapterWriter
from msmm.train.trainer import unique_parameter_names
from parity_utils import RunResult, rel_err
from test_internvl import SEVERAL_IMAGES, hf_internvl, hf_name_to_ours, make_batch, msmm_run


TEXT_LORA = LoRAConfig(r=4, lora_alpha=8)  # all-linear
VISION_TARGETS = ("q_proj", "k_proj", "v_proj", "projection_layer", "fc1", "fc2")
VISION_LORA = LoRAConfig(r=2, lora_alpha=6, target_modules=VISION_TARGETS)
PEFT_TARGETS = r".*language_model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj|.*vision_tower\..*\.(q_proj|k_proj|v_proj|projection_layer|fc1|fc2)"
LOSS_RTOL, GRAD_RTOL, LOGITS_ATOL = 1e-5, 1e-5, 1e-4


def peft_name_to_ours(name: str) -> str:
    """PEFT in-memory parameter name -> msmm name (adapter name and wrappers dropped)."""
    name = name.removeprefix("base_model.model.")
    name = re.sub(r"\.(lora_[AB])\.default\.", r".\1.", name)
    name = name.replace(".modules_to_save.default.", ".")
    return hf_name_to_ours(name)


def apply_msmm_lora(model, lora_module, quantize=None) -> None:
    text, vision = (LoRAConfig(**{**c.__dict__, "quantize": quantize, "nf4_block_size": 16}) for c in (TEXT_LORA, VISION_LORA))
    lora_module.apply_lora(model, [model.language_model], text)
    lora_module.apply_lora(model, [model.vision_tower], vision)


def copy_weights(model, weights, to_tensor) -> None:
    """Set the named parameters of ``model`` (msmm names) to ``weights`` (numpy), in place."""
    params = dict(model.named_parameters())
    for name, value in weights.items():
        params[name].data.copy_(to_tensor(value)) if isinstance(params[name], torch.Tensor) \
            else params[name].set_data(to_tensor(value))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(HF checkpoint dir, PEFT model with random adapters, PEFT run, msmm-named adapter and projector weights)."""
    path = str(tmp_path_factory.mktemp("lora_internvl"))
    hf = hf_internvl("300m_style")
    hf.save_pretrained(path, safe_serialization=True)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=PEFT_TARGETS,
                             rank_pattern={"vision_tower.*": 2}, alpha_pattern={"vision_tower.*": 6},
                             modules_to_save=["multi_modal_projector"])
    model = peft.get_peft_model(hf, config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    model.train()
    batch = make_batch(np.random.default_rng(0), SEVERAL_IMAGES)
    model.zero_grad()
    out = model(**{k: torch.tensor(v) for k, v in batch.items()})
    out.loss.backward()
    trainable = {peft_name_to_ours(n): p for n, p in model.named_parameters() if p.requires_grad}
    run = RunResult(out.logits.detach().numpy(), float(out.loss), {n: p.grad.detach().numpy().copy() for n, p in trainable.items()})
    weights = {n: p.detach().numpy().copy() for n, p in trainable.items()}
    return path, model, batch, run, weights


def assert_lora_parity(ours: RunResult, ref: RunResult, valid: np.ndarray) -> dict:
    """Logits on real tokens (``valid``), loss, and every trainable gradient."""
    assert set(ours.grads) == set(ref.grads), sorted(set(ours.grads) ^ set(ref.grads))[:6]
    valid = valid.astype(bool)
    logits = float(np.abs(ours.logits - ref.logits)[valid].max())
    loss = abs(ours.loss - ref.loss) / abs(ref.loss)
    grads = {n: rel_err(ours.grads[n], ref.grads[n]) for n in ref.grads}
    worst = max(grads, key=grads.get)
    assert logits <= LOGITS_ATOL and loss <= LOSS_RTOL and grads[worst] <= GRAD_RTOL, (logits, loss, worst, grads[worst])
    return {"logits_abs": logits, "loss_rel": loss, "grad_rel": grads[worst], "grads": len(grads)}


def torch_lora_model(path, weights, quantize=None):
    model = from_pretrained(path)
    apply_msmm_lora(model, torch_lora, quantize)
    for p in model.multi_modal_projector.parameters():
        p.requires_grad = True
    copy_weights(model, weights, torch.tensor)
    return model


def ms_lora_model(path, weights, quantize=None):
    ms = ms_backend.converted_models()
    model = ms.pretrained.from_pretrained(path)
    apply_msmm_lora(model, ms.lora, quantize)
    for p in model.multi_modal_projector.parameters():
        p.requires_grad = True
    copy_weights(model, weights, ms.torch.tensor)
    unique_parameter_names(model)  # swapped-in layers carry parent-relative names (as in msmm-train)
    return model


def test_torch_matches_peft(reference):
    path, _, batch, ref, weights = reference
    model = torch_lora_model(path, weights)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(ref.grads)  # adapters and the projector only
    print("\ntorch vs PEFT", assert_lora_parity(msmm_run(model, batch), ref, batch["attention_mask"]))


@pytest.mark.parametrize("mode", ms_backend.MODES)
def test_mindspore_matches_peft(reference, mode):
    path, _, batch, ref, weights = reference
    print(f"\nMindSpore {mode} vs PEFT", assert_lora_parity(ms_backend.run(ms_lora_model(path, weights), batch, mode), ref,
                                                               batch["attention_mask"]))


def test_peft_loads_msmm_adapter_files(reference, tmp_path):
    """msmm's adapter files (HF-native names) -> PeftModel.from_pretrained -> msmm's logits."""
    from transformers import InternVLForConditionalGeneration

    path, _, batch, _, weights = reference
    model = torch_lora_model(path, weights)
    AdapterWriter(model, AdapterNaming("internvl", "hf"), path)(str(tmp_path))
    adapter = read_adapter(str(tmp_path))
    config, tensors = adapter.config, adapter.arrays()
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["rank_pattern"] and config["bias"] == "none"
    assert "language_model.model.layers.0.self_attn.q_proj.lora_A.weight" in tensors
    assert "multi_modal_projector.linear_1.weight" in tensors
    loaded = peft.PeftModel.from_pretrained(InternVLForConditionalGeneration.from_pretrained(path), str(tmp_path))
    got = {peft_name_to_ours(n): p.detach().numpy() for n, p in loaded.named_parameters()
           if "lora_" in n or "modules_to_save" in n}
    assert set(got) == set(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    inputs = {k: torch.tensor(v) for k, v in batch.items() if k != "labels"}
    model.eval()
    loaded.eval()
    with torch.no_grad():
        ours, theirs = model(**inputs).numpy(), loaded(**inputs).logits.numpy()
    err = float(np.abs(ours - theirs)[batch["attention_mask"].astype(bool)].max())
    print(f"\nPEFT from_pretrained vs msmm logits max abs err {err:.2e}")
    assert err <= 1e-4


def test_adapter_written_by_peft_loads_into_msmm(reference, tmp_path):
    """msmm-train --lora-load: PEFT's save_pretrained files (in-memory names of transformers
    4.53, projector under modules_to_save, here moved off the base) set msmm's LoRA and
    projector weights; torch and MindSpore PyNative give the logits of PeftModel.from_pretrained."""
    from safetensors.torch import load_file as load_torch, save_file as save_torch
    from transformers import InternVLForConditionalGeneration

    from msmm.train.adapter import load_adapter

    path, peft_model, batch, _, _ = reference
    peft_model.save_pretrained(str(tmp_path))
    weights = str(tmp_path / "adapter_model.safetensors")
    state = load_torch(weights)
    assert any(k.startswith("base_model.model.model.language_model.") for k in state)  # PEFT's in-memory names
    projector = [k for k in state if "multi_modal_projector" in k]
    save_torch({k: v + 0.05 if k in projector else v for k, v in state.items()}, weights, metadata={"format": "pt"})
    loaded = peft.PeftModel.from_pretrained(InternVLForConditionalGeneration.from_pretrained(path), str(tmp_path)).eval()
    inputs = {k: torch.tensor(v) for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        want = loaded(**inputs).logits.numpy()
    valid = batch["attention_mask"].astype(bool)
    naming = AdapterNaming("internvl", "hf")
    ours = torch_lora_model(path, {})
    assert load_adapter(ours, str(tmp_path), naming) == len(state)
    with torch.no_grad():
        torch_err = float(np.abs(ours.eval()(**inputs).numpy() - want)[valid].max())
    ms_model = ms_lora_model(path, {})
    load_adapter(ms_model, str(tmp_path), naming)
    ms_err = float(np.abs(ms_backend.run(ms_model, batch, "pynative").logits - want)[valid].max())
    print(f"\nPEFT-written adapter loaded into msmm vs PeftModel.from_pretrained logits: torch {torch_err:.2e}, "
          f"MindSpore PyNative {ms_err:.2e}")
    assert torch_err <= 1e-4 and ms_err <= 1e-4
    no_projector = tmp_path / "no_projector"  # the model trains the projector, the adapter lacks it
    no_projector.mkdir()
    (no_projector / "adapter_config.json").write_text((tmp_path / "adapter_config.json").read_text())
    save_torch({k: v for k, v in state.items() if k not in projector}, str(no_projector / "adapter_model.safetensors"),
               metadata={"format": "pt"})
    with pytest.raises(KeyError, match=rf"the adapter has no tensors for {len(projector)} parameters the model trains "
                                       r"in full .*multi_modal_projector"):
        load_adapter(torch_lora_model(path, {}), str(no_projector), naming)
    with pytest.raises(ValueError, match=r"has r=2, lora_alpha=6.*has r=4"):
        model = from_pretrained(path)
        torch_lora.apply_lora(model, [model.language_model, model.vision_tower], TEXT_LORA)
        load_adapter(model, str(tmp_path), naming)


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
def test_qlora_equals_lora_on_dequantized_base_torch_and_mindspore(reference, fmt):
    """LoRA over the quantized base == LoRA over its dequantized weights, torch and MindSpore."""
    path, _, batch, _, weights = reference
    quantized = torch_lora_model(path, weights, quantize=fmt)
    dense = torch_lora_model(path, weights)
    with torch.no_grad():  # the dense model's frozen weights := the quantized model's dequantized ones
        for (name, q), (_, d) in zip(torch_lora.lora_layers(quantized), torch_lora.lora_layers(dense)):
            d.weight.copy_(q.base_weight(torch.float32))
    ref = msmm_run(dense, batch)
    assert set(msmm_run(quantized, batch).grads) == set(ref.grads)
    valid = batch["attention_mask"]
    print(f"\n{fmt} torch", assert_lora_parity(msmm_run(quantized, batch), ref, valid))
    for mode in ms_backend.MODES:
        ms_run = ms_backend.run(ms_lora_model(path, weights, fmt), batch, mode)
        print(f"{fmt} MindSpore {mode}", assert_lora_parity(ms_run, ref, valid))


# ---- quantization formats ---------------------------------------------------------------------

def test_int8_and_nf4_error_within_bound_and_storage_measured():
    w = torch.randn(96, 80, generator=torch.Generator().manual_seed(0)) * 0.05
    q, scale = quant.quantize_int8(w)
    err = (quant.dequantize_int8(q, scale, torch.float32) - w).abs()
    assert q.dtype == torch.int8 and bool((err <= scale / 2 + 1e-7).all())
    packed, absmax = quant.quantize_nf4(w, 64)
    back = quant.dequantize_nf4(packed, absmax, torch.tensor(quant.nf4_byte_table()), (96, 80), torch.float32)
    per_block = (back - w).reshape(-1)
    per_block = torch.cat([per_block, torch.zeros(-per_block.shape[0] % 64)]).reshape(-1, 64).abs().amax(dim=1)
    assert packed.dtype == torch.uint8 and bool((per_block <= absmax * quant.nf4_error_bound() + 1e-7).all())
    fp32 = w.numel() * 4
    int8_bytes = q.numel() + scale.numel() * 4
    nf4_bytes = packed.numel() + absmax.numel() * 4
    print(f"\nstored bytes: fp32 {fp32}, int8 {int8_bytes} ({int8_bytes / fp32:.3f}), nf4 {nf4_bytes} ({nf4_bytes / fp32:.3f})")
    assert int8_bytes / fp32 < 0.27 and nf4_bytes / fp32 < 0.145
    codes = quant.nf4_code_book()  # the published NF4 values (QLoRA, appendix E), to 4 digits
    np.testing.assert_allclose(codes, [-1, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0, 0.0796, 0.1609,
                                       0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1], atol=1e-4)


def test_quant_state_stays_fp32_through_module_to_torch_and_mindspore():
    """--bf16 / --fp16 casts the model after LoRA is applied: the scales and code values of a
    quantized base stay float32, the weight dequantizes to the compute dtype."""
    ms = ms_backend.converted_models()
    w = torch.randn(12, 128, generator=torch.Generator().manual_seed(0))
    for fmt, cls, state in (("int8", "Int8LoRALinear", ("weight_scale",)),
                            ("nf4", "NF4LoRALinear", ("weight_absmax", "byte_table"))):
        for lib, lora, dtype in ((torch, torch_lora, torch.bfloat16), (ms.torch, ms.lora, ms.torch.float16)):
            base = lib.nn.Linear(128, 12)
            base.weight = lib.nn.Parameter(lib.tensor(w.numpy()))
            layer = getattr(lora, cls)(base, 2, 4.0)
            before = {n: np.asarray(getattr(layer, n).numpy()) for n in state}
            want = layer.base_weight(lib.float32).numpy()
            outer = lib.nn.Sequential(layer).to(dtype)  # as model.to(...) reaches it: through the parent
            for n in state:
                assert getattr(layer, n).dtype == lib.float32, (fmt, lib.__name__, n)
                np.testing.assert_array_equal(np.asarray(getattr(layer, n).numpy()), before[n])
            assert n in dict(layer.named_buffers()) and layer.lora_A.weight.dtype == dtype
            assert (n != "byte_table") == (n in layer.state_dict())
            got = layer.base_weight(dtype)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got.float().numpy(), lib.tensor(want).to(dtype).float().numpy())
            assert outer(lib.ones(1, 128, dtype=dtype)).dtype == dtype


def test_lora_layer_math_dropout_and_targets():
    base = torch.nn.Linear(8, 6)
    x = torch.randn(5, 8)
    layer = torch_lora.LoRALinear(base, r=2, alpha=4, dropout=0.5)
    assert torch.equal(layer.eval()(x), base(x))  # B starts at zero
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    want = base(x) + 2.0 * x @ layer.lora_A.weight.T @ layer.lora_B.weight.T
    torch.testing.assert_close(layer(x), want)
    layer.train()
    assert not torch.allclose(layer(x), want)  # dropout on the LoRA input in training mode
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A.weight", "lora_B.weight"]
    assert torch_lora.is_targeted("a.lm_head", None) is False and torch_lora.is_targeted("a.q_proj", "all-linear")
    assert torch_lora.is_targeted("x.self_attn.q_proj", ("self_attn.q_proj",))
    assert not torch_lora.is_targeted("x.attention.q_proj", ("self_attn.q_proj",))
    assert torch_lora.is_targeted("layers.1.q_proj", r"layers\.[01]\.q_proj")
    assert not torch_lora.is_targeted("layers.11.q_proj", r"layers\.[01]\.q_proj")


def test_remote_layout_fuses_qkv_adapters_exactly(tmp_path):
    """InternVL remote code stores vision q/k/v as one attn.qkv: the three adapters become
    one of rank 3r whose delta is the three deltas stacked."""
    rng = np.random.default_rng(0)
    stem = "vision_tower.encoder.layer.0.attention"
    parts = {p: LoRAModule(f"{stem}.{p}", 2, 4.0, 0.0, rng.standard_normal((2, 8)), rng.standard_normal((8, 2)))
             for p in ("q_proj", "k_proj", "v_proj")}
    base = [f"{stem}.{p}.{k}" for p in parts for k in ("weight", "bias")] + ["language_model.lm_head.weight"]
    write_adapter(str(tmp_path), AdapterNaming("internvl", "remote"), list(parts.values()), {}, base)
    adapter = read_adapter(str(tmp_path))
    config, tensors = adapter.config, adapter.arrays()
    a, b = tensors["vision_model.encoder.layers.0.attn.qkv.lora_A.weight"], tensors["vision_model.encoder.layers.0.attn.qkv.lora_B.weight"]
    r, alpha = config["rank_pattern"].get("qkv", config["r"]), config["alpha_pattern"].get("qkv", config["lora_alpha"])
    assert (r, a.shape, b.shape) == (6, (6, 8), (24, 6)) and alpha / r == 2.0
    want = np.concatenate([2.0 * m.lora_B @ m.lora_A for m in parts.values()], axis=0)
    np.testing.assert_allclose(alpha / r * b @ a, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="must target all of"):
        write_adapter(str(tmp_path), AdapterNaming("internvl", "remote"), [parts["q_proj"]], {}, base)


def test_write_adapter_is_atomic_and_mm_convert_is_framework_free(tmp_path, monkeypatch):
    """A standalone adapter directory appears complete or not at all; a failure inside an
    existing (checkpoint) directory leaves no adapter file and no temporary behind."""
    import subprocess
    import sys

    import msmm.checkpoint.peft as peft_adapter

    module = LoRAModule("language_model.model.layers.0.self_attn.q_proj", 2, 4.0, 0.0,
                        np.ones((2, 8), np.float32), np.ones((8, 2), np.float32))
    base = ["language_model.model.layers.0.self_attn.q_proj.weight", "language_model.lm_head.weight"]
    write_adapter(str(tmp_path / "new"), AdapterNaming("internvl", "hf"), [module], {}, base)
    assert sorted(os.listdir(tmp_path)) == ["new"]
    assert sorted(os.listdir(tmp_path / "new")) == ["adapter_config.json", "adapter_model.safetensors"]
    real_dump = peft_adapter.json.dump

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(peft_adapter.json, "dump", fail)
    os.makedirs(tmp_path / "iter")
    for directory in ("other", "iter"):
        with pytest.raises(OSError, match="disk full"):
            write_adapter(str(tmp_path / directory), AdapterNaming("internvl", "hf"), [module], {}, base)
    assert sorted(os.listdir(tmp_path)) == ["iter", "new"] and os.listdir(tmp_path / "iter") == []
    monkeypatch.setattr(peft_adapter.json, "dump", real_dump)

    def fail_second(src, dst, calls=[]):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("rename failed")
        os.rename(src, dst)

    monkeypatch.setattr(peft_adapter.os, "replace", fail_second)
    with pytest.raises(OSError, match="rename failed"):
        write_adapter(str(tmp_path / "iter"), AdapterNaming("internvl", "hf"), [module], {}, base)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["iter", "new"] and os.listdir(tmp_path / "iter") == []
    code = "import sys, msmm.convert.cli; print(sorted({'mindspore', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- configuration: model.json lora blocks, msmm-train --lora-*, --save-total-limit ----------

def test_model_json_lora_blocks_and_errors_name_the_key(tmp_path):
    from msmm.models import ModelConfigError, apply_lora_config, build_model, parse_model_config

    def model_json(text_lora=None, vision_lora=None, projector_extra=None):
        vision = {"model_id": "intern_vit", "num_layers": 1, "hidden_size": 32, "num_attention_heads": 4,
                  "ffn_hidden_size": 64, "image_size": 28, "patch_size": 7, "freeze": True}
        text = {"model_id": "qwen2", "num_layers": 1, "hidden_size": 32, "num_attention_heads": 4,
                "num_query_groups": 2, "ffn_hidden_size": 64, "vocab_size": 64}
        if vision_lora is not None:
            vision["lora"] = vision_lora
        if text_lora is not None:
            text["lora"] = text_lora
        projector = {"model_id": "pixel_shuffle_mlp", **(projector_extra or {})}
        return {"model_id": "internvl", "image_token_id": 63, "text_decoder": text,
                "image_encoder": {"vision_encoder": vision, "vision_projector": projector}}

    config = parse_model_config(model_json({"r": 4, "lora_alpha": 8, "modules_to_save": ["embed_tokens"]},
                                           {"r": 2, "target_modules": ["attention.q_proj", "fc2"]}))
    model = build_model(config)
    adapted = apply_lora_config(model, config)
    assert adapted["text_decoder"] == [f"language_model.model.layers.0.{m}" for m in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]  # all-linear: lm_head left out
    assert adapted["image_encoder.vision_encoder"] == ["vision_tower.encoder.layer.0.attention.q_proj",
                                                       "vision_tower.encoder.layer.0.mlp.fc2"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == ({n for n in trainable if ".lora_" in n} | {"language_model.model.embed_tokens.weight"}
                         | {n for n, _ in model.multi_modal_projector.named_parameters(prefix="multi_modal_projector")})
    assert len([n for n in trainable if ".lora_" in n]) == 2 * (7 + 2)
    bad = {
        "text_decoder.lora.r: must be a positive integer": model_json({"r": 0}),
        "text_decoder.lora.alpha: unknown key (did you mean 'lora_alpha'?)": model_json({"alpha": 4}),
        "text_decoder.lora.quantize: must be one of": model_json({"quantize": "int4"}),
        "text_decoder.lora.target_modules: '(' is not a valid regular expression": model_json({"target_modules": "("}),
        "image_encoder.vision_projector.lora: LoRA is configured on": model_json(projector_extra={"lora": {"r": 2}}),
        "image_encoder.vision_encoder.lora.lora_dropout: must lie in [0, 1)": model_json(vision_lora={"lora_dropout": 1.5}),
    }
    for message, data in bad.items():
        with pytest.raises(ModelConfigError, match=re.escape(message)):
            parse_model_config(data)
    config = parse_model_config(model_json(vision_lora={"target_modules": ["attn.qkv"]}))
    with pytest.raises(ModelConfigError, match=r"image_encoder.vision_encoder.lora.target_modules: 'attn.qkv' matches no"):
        apply_lora_config(build_model(config), config)
    # a fully trained module holding LoRA layers would be saved twice (full + delta): refused, model untouched
    config = parse_model_config(model_json({"r": 2, "modules_to_save": ["mlp"]}))
    model = build_model(config)
    with pytest.raises(ModelConfigError, match=re.escape(
            "text_decoder.lora.modules_to_save: 'mlp' contains LoRA target layers (language_model.model.layers.0."
            "mlp.gate_proj, language_model.model.layers.0.mlp.up_proj, language_model.model.layers.0.mlp.down_proj)")):
        apply_lora_config(model, config)
    assert not [n for n, _ in model.named_parameters() if ".lora_" in n]


def test_train_args_lora_and_save_total_limit():
    from msmm.config.train_args import TrainArgsError, parse_train_args

    base = ["--mm-model", "m.json", "--mm-data", "d.json", "--micro-batch-size", "1", "--global-batch-size", "1",
            "--train-iters", "1", "--lr", "1e-4"]
    args = parse_train_args(base + ["--lora-r", "128", "--lora-dropout", "0.05", "--lora-target-modules", "wqkv", "wo",
                                    "--save", "s", "--save-total-limit", "2"])
    assert (args.lora.r, args.lora.lora_alpha, args.lora.lora_dropout, args.lora.target_modules) == (128, 256.0, 0.05, ("wqkv", "wo"))
    assert args.save_total_limit == 2
    assert parse_train_args(base + ["--lora-r", "8", "--lora-target-modules", "all-linear"]).lora.target_modules == "all-linear"
    assert parse_train_args(base + ["--lora-r", "8", "--lora-target-modules", "self_attn.q_proj"]).lora.target_modules == ("self_attn.q_proj",)
    assert parse_train_args(base + ["--lora-r", "8", "--lora-target-modules", r".*\.(q|v)_proj"]).lora.target_modules == r".*\.(q|v)_proj"
    assert parse_train_args(base).lora is None
    assert parse_train_args(base + ["--lora-r", "8", "--lora-load", "adapter_dir"]).lora_load == "adapter_dir"
    for extra, message in ((["--lora-alpha", "16"], "--lora-alpha need --lora-r"),
                           (["--lora-r", "-1"], "--lora-r: must be a positive integer"),
                           (["--lora-r", "8", "--lora-dropout", "1"], "--lora-dropout: must lie in [0, 1)"),
                           (["--save-total-limit", "2"], "--save-total-limit must be positive and needs --save")):
        with pytest.raises(TrainArgsError, match=re.escape(message)):
            parse_train_args(base + extra)


def test_prune_checkpoints_keeps_the_newest_and_the_tracked(tmp_path):
    from msmm.checkpoint.train_state import TRACKER, prune_checkpoints

    for i in (3, 6, 9, 12):
        os.makedirs(tmp_path / f"iter_{i:07d}")
    (tmp_path / TRACKER).write_text("3")  # e.g. a later save failed: the tracked one survives
    removed = prune_checkpoints(str(tmp_path), 2)
    assert sorted(os.path.basename(r) for r in removed) == ["iter_0000006"]
    assert sorted(os.listdir(tmp_path)) == ["iter_0000003", "iter_0000009", "iter_0000012", TRACKER]


def test_qwen2_vl_adapter_loads_into_peft(tmp_path):
    """Qwen2-VL (Hub names): LoRA on the decoder (all-linear) and the ViT's fused attn.qkv,
    merger trained in full; PeftModel.from_pretrained of the written files gives msmm's logits."""
    from transformers import Qwen2VLForConditionalGeneration

    import test_qwen2_vl as q

    hf = q.hf_model("qwen2_vl")
    path = str(tmp_path / "hf")
    hf.save_pretrained(path, safe_serialization=True)
    model = q.msmm_model(path)
    torch_lora.apply_lora(model, [model.model, model.lm_head], LoRAConfig(r=4, lora_alpha=8))
    torch_lora.apply_lora(model, [model.visual.blocks], LoRAConfig(r=2, lora_alpha=2, target_modules=("attn.qkv",)))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, layer in torch_lora.lora_layers(model):
            layer.lora_B.weight.copy_(0.1 * torch.randn(layer.lora_B.weight.shape, generator=gen))
        for p in model.visual.merger.parameters():
            p.add_(0.1)  # as if trained in full
    for p in model.visual.patch_embed.parameters():
        p.requires_grad = False
    for p in model.visual.merger.parameters():
        p.requires_grad = True
    AdapterWriter(model, AdapterNaming("qwen2_vl"), path)(str(tmp_path / "adapter"))
    adapter = read_adapter(str(tmp_path / "adapter"))
    config, tensors = adapter.config, adapter.arrays()
    assert "visual.blocks.0.attn.qkv.lora_A.weight" in tensors and "model.layers.1.mlp.down_proj.lora_B.weight" in tensors
    assert config["modules_to_save"] == ["merger"] and not any("lm_head" in k for k in tensors)
    loaded = peft.PeftModel.from_pretrained(Qwen2VLForConditionalGeneration.from_pretrained(path), str(tmp_path / "adapter"))
    batch = q.make_inputs(np.random.default_rng(0), q.CASES["one_image"])
    model.eval()
    loaded.eval()
    with torch.no_grad():
        theirs = loaded(**{k: torch.tensor(v) for k, v in batch.items() if k != "labels"}, use_cache=False).logits.numpy()
    ours = q.msmm_run(model, batch).logits
    err = float(np.abs(ours - theirs)[batch["attention_mask"].astype(bool)].max())
    print(f"\nQwen2-VL: PEFT from_pretrained vs msmm logits max abs err {err:.2e}")
    assert err <= 1e-4
