"""mm-convert merge_lora against HF PEFT: adapters written by PEFT itself on tiny HF models
built in code, merged by us, loaded by transformers; compared with the PeftModel's logits
and with PEFT's own ``merge_and_unload()`` weights."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tracemalloc
from typing import Dict

import numpy as np
import peft
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file as load_torch, save_file as save_torch

import tiny_hf
from test_mm_convert import assert_same_tensors, convert, convert_error
from msmm.checkpoint.hf import read_hf_tensors, write_hf
from msmm.convert.cli import main
from msmm.checkpoint.lora_merge import merge_tensors
from msmm.checkpoint.peft import read_adapter

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))  # test_internvl's remote layout


FAMILIES = {  # builder, converter, image tokens in the prompt
    "internvl": (lambda: tiny_hf.internvl(qk_norm=True), "InternVLConverter", 4),
    "qwen2_vl": (lambda: tiny_hf.qwen2_vl("qwen2_vl"), "Qwen2VLConverter", 4),
    "qwen2_5_vl": (lambda: tiny_hf.qwen2_vl("qwen2_5_vl"), "Qwen2_5_VLConverter", 4),
    "llava": (tiny_hf.llava, "LlavaConverter", 16),
}


def inputs(family: str) -> dict:
    gen = torch.Generator().manual_seed(0)
    ids = [1, 2, tiny_hf.VISION_START] + [tiny_hf.IMAGE] * FAMILIES[family][2] + [3, 4]
    if family.startswith("qwen"):  # 1x4x4 patches of 3x2x4x4 values, merged 2x2 into 4 tokens
        return dict(input_ids=torch.tensor([ids]), pixel_values=torch.randn(16, 96, generator=gen),
                    image_grid_thw=torch.tensor([[1, 4, 4]]))
    return dict(input_ids=torch.tensor([ids]), pixel_values=torch.randn(1, 3, 28, 28, generator=gen))


def with_adapter(model, directory: str, seed: int = 1, **lora):
    """``model`` wrapped by PEFT with random non-zero LoRA B (and modules_to_save copies moved
    off the base), saved to ``directory`` in PEFT's layout."""
    peft_model = peft.get_peft_model(model, peft.LoraConfig(**lora))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen).to(p.dtype))
    peft_model.save_pretrained(directory)
    return peft_model.eval()


def logits(model, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits.float()


def peft_merged(peft_model, directory: str) -> dict:
    """PEFT's own merge: ``merge_and_unload()`` saved with save_pretrained, read back."""
    peft_model.merge_and_unload().save_pretrained(directory)
    return tiny_hf.read_all(directory)


def assert_close_tensors(ours: dict, reference: dict, atol: float) -> None:
    assert sorted(ours) == sorted(reference)
    for k in ours:
        assert ours[k].dtype == reference[k].dtype, k
        torch.testing.assert_close(ours[k].float(), reference[k].float(), atol=atol, rtol=0, msg=k)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_merged_checkpoint_matches_peft(family, tmp_path):
    build, converter, _ = FAMILIES[family]
    model = build()
    model_cls = type(model)
    base = tiny_hf.save(model, str(tmp_path / "hf"))
    whole = ["multi_modal_projector"] if family in ("internvl", "llava") else []  # a module: its tensors lie below it
    peft_model = with_adapter(model, str(tmp_path / "adapter"), r=4, lora_alpha=8, target_modules="all-linear",
                              modules_to_save=["lm_head"] + whole)
    batch = inputs(family)
    want = logits(peft_model, batch)
    convert(converter, "merge_lora", hf_config__hf_dir=base, lora_dir=str(tmp_path / "adapter"),
            save_hf_dir=str(tmp_path / "out"), max_shard_size="200KB")
    out = str(tmp_path / "out")
    assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))
    assert os.path.isfile(os.path.join(out, "tokenizer_config.json"))
    assert [n for n in os.listdir(tmp_path) if ".tmp" in n or ".old" in n] == []
    loaded = model_cls.from_pretrained(out, attn_implementation="eager").eval()
    got = logits(loaded, batch)
    assert (got - want).abs().max() <= 1e-4
    assert (got - logits(model_cls.from_pretrained(base, attn_implementation="eager").eval(), batch)).abs().max() > 1e-2
    ours, base_tensors = tiny_hf.read_all(out), tiny_hf.read_all(base)
    reference = peft_merged(peft_model, str(tmp_path / "peft_merged"))
    assert_close_tensors(ours, reference, atol=1e-6)
    changed = [k for k in ours if not torch.equal(ours[k], base_tensors[k])]
    head = "lm_head.weight" if family.startswith("qwen") else "language_model.lm_head.weight"
    assert head in changed and any("mlp" in k for k in changed) and any(k.startswith(("visual.", "vision_tower.")) for k in changed)
    projector = [k for k in ours if k.startswith("multi_modal_projector.")]
    assert set(projector) <= set(changed) and (projector != []) == bool(whole)  # replaced, layer norm included
    # the merged directory is an ordinary HF checkpoint: hf_to_mm -> mm_to_hf gives it back bit for bit
    convert(converter, "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=out, parallel_config__tp_size=2)
    convert(converter, "mm_to_hf", mm_dir=str(tmp_path / "mm"), save_hf_dir=str(tmp_path / "back"))
    assert_same_tensors(out, str(tmp_path / "back"))


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounded once, to nearest even."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_steps(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many bf16 values apart ``a`` and ``b`` are at most (0: bit-identical, 1: one ulp)."""
    def ordered(t):  # bf16 bit patterns on one integer line: neighbouring values differ by 1
        bits = t.view(torch.int16).numpy().astype(np.int32) & 0xFFFF
        return np.where(bits & 0x8000, -(bits & 0x7FFF), bits)

    return int(np.abs(ordered(a) - ordered(b)).max()) if a.numel() else 0


def test_bf16_base_stays_bf16(tmp_path):
    """The contract on every machine: the merged bf16 weight is the float32 merge
    ``W + scaling * (B @ A)`` rounded once to bf16, bit for bit (the float32 product recomputed
    here with numpy, the kernels msmm's merge uses on this machine); PEFT's merge (torch's
    float32 kernels, which differ between CPUs) is within one bf16 ulp of it."""
    model = tiny_hf.qwen2_vl().to(torch.bfloat16)
    base = tiny_hf.save(model, str(tmp_path / "hf"))
    peft_model = with_adapter(model, str(tmp_path / "adapter"), r=4, lora_alpha=16,
                              target_modules=["q_proj", "v_proj", "qkv", "down_proj"], modules_to_save=["lm_head"])
    adapter = load_torch(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert {v.dtype for k, v in adapter.items() if "lora_" in k} == {torch.float32}  # PEFT's autocast
    convert("Qwen2VLConverter", "merge_lora", hf_config__hf_dir=base, lora_dir=str(tmp_path / "adapter"),
            save_hf_dir=str(tmp_path / "out"))
    ours = tiny_hf.read_all(str(tmp_path / "out"))
    assert {v.dtype for v in ours.values()} == {torch.bfloat16}
    base_tensors = tiny_hf.read_all(base)
    scaling = 16 / 4
    merged = set()
    for name, a in adapter.items():
        if not name.endswith(".lora_A.weight"):
            continue
        module = name[len("base_model.model."):-len(".lora_A.weight")]
        (key,) = [k for k in ours if k.endswith(".".join(module.split(".")[-4:]) + ".weight")]
        b = adapter[name.replace("lora_A", "lora_B")].numpy()
        want = base_tensors[key].float().numpy() + np.float32(scaling) * (b @ a.numpy())
        np.testing.assert_array_equal(ours[key].view(torch.int16).numpy().view(np.uint16), bf16_bits(want), err_msg=key)
        assert not torch.equal(ours[key], base_tensors[key]), key
        merged.add(key)
    assert len(merged) == sum(k.endswith(".lora_A.weight") for k in adapter) >= 6  # one weight per LoRA pair
    reference = peft_merged(peft_model, str(tmp_path / "peft_merged"))
    assert sorted(reference) == sorted(ours)
    for key in ours:
        assert reference[key].dtype == torch.bfloat16, key
        assert bf16_steps(ours[key], reference[key]) <= (1 if key in merged else 0), key


def test_rslora_rank_and_alpha_patterns(tmp_path):
    model = tiny_hf.qwen2_vl()
    base = tiny_hf.save(model, str(tmp_path / "hf"))
    peft_model = with_adapter(model, str(tmp_path / "adapter"), r=8, lora_alpha=4, use_rslora=True,
                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "qkv", "gate_proj"],
                              rank_pattern={"k_proj": 2}, alpha_pattern={r"layers\.1\.self_attn\.o_proj": 32})
    config = json.load(open(tmp_path / "adapter" / "adapter_config.json"))
    assert config["use_rslora"] and config["rank_pattern"] and config["alpha_pattern"]
    batch = inputs("qwen2_vl")
    want = logits(peft_model, batch)
    convert("Qwen2VLConverter", "merge_lora", hf_config__hf_dir=base, lora_dir=str(tmp_path / "adapter"),
            save_hf_dir=str(tmp_path / "out"))
    loaded = type(model).from_pretrained(str(tmp_path / "out"), attn_implementation="eager").eval()
    assert (logits(loaded, batch) - want).abs().max() <= 1e-4
    assert_close_tensors(tiny_hf.read_all(str(tmp_path / "out")), peft_merged(peft_model, str(tmp_path / "ref")), 1e-6)


def test_fan_in_fan_out_and_biases(tmp_path):
    """GPT-2's Conv1D stores weights [in, out] (fan_in_fan_out); bias='all' saves and replaces
    every bias. merge_tensors is family-independent, so it is checked here directly."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=tiny_hf.VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)).eval()
    base = tiny_hf.save(model, str(tmp_path / "hf"))
    peft_model = with_adapter(model, str(tmp_path / "adapter"), r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"],
                              fan_in_fan_out=True, bias="all")
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # trained biases: move them off the base, then save again
        for name, p in peft_model.named_parameters():
            if name.endswith(".bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    adapter = read_adapter(str(tmp_path / "adapter"))
    assert adapter.config["fan_in_fan_out"] and any(k.endswith("c_attn.base_layer.bias") for k in adapter.tensors)
    batch = {"input_ids": torch.tensor([[5, 7, 11, 13, 17]])}
    want = logits(peft_model, batch)
    merged = merge_tensors(read_hf_tensors(base), adapter, lambda name: None)
    os.makedirs(tmp_path / "out")
    write_hf(str(tmp_path / "out"), merged, 10**9)
    shutil.copyfile(os.path.join(base, "config.json"), tmp_path / "out" / "config.json")
    loaded = GPT2LMHeadModel.from_pretrained(str(tmp_path / "out")).eval()
    assert (logits(loaded, batch) - want).abs().max() <= 1e-4
    assert_close_tensors(tiny_hf.read_all(str(tmp_path / "out")), peft_merged(peft_model, str(tmp_path / "ref")), 1e-6)


# ---- InternVL remote-code layout -----------------------------------------------------------------

NATIVE_SAVED = (("model.language_model.", "language_model.model."), ("model.vision_tower.", "vision_tower."),
                ("model.multi_modal_projector.", "multi_modal_projector."), ("lm_head.", "language_model.lm_head."))


def saved_name(name: str) -> str:
    """transformers 4.53 in-memory InternVL name -> its name in the saved checkpoint."""
    return next(new + name[len(old):] for old, new in NATIVE_SAVED if name.startswith(old))


def remote_layout(state: Dict[str, np.ndarray], text: str) -> Dict[str, np.ndarray]:
    """HF-native InternVL tensors -> the OpenGVLab remote-code checkpoint (vision_model.*, mlp1.*,
    packed ViT attn.qkv; with InternLM2 text also its names and per-KV-group packed wqkv)."""
    from test_internvl import to_remote_layout
    from test_text_decoders import pack_llama_as_internlm2

    out = to_remote_layout(state)
    if text == "internlm2":
        llm = {k[len("language_model."):]: out.pop(k) for k in list(out) if k.startswith("language_model.")}
        out.update({"language_model." + k: v for k, v in pack_llama_as_internlm2(llm, tiny_hf.TEXT).items()})
    return out


def remote_adapter(native_dir: str, remote_dir: str, base: Dict[str, np.ndarray], text: str) -> None:
    """The same adapter for the remote-code model. The layout only renames, concatenates and
    permutes rows, so a LoRA on weights packed into one is A = [A_1; ...; A_n] with B the
    layout of blockdiag(B_1, ..., B_n), of rank n r (rank_pattern) and alpha n alpha
    (alpha_pattern): the scaling, and the packed W + dW, are unchanged."""
    config = json.load(open(os.path.join(native_dir, "adapter_config.json")))
    tensors = {k[len("base_model.model."):]: v.numpy() for k, v in
               load_torch(os.path.join(native_dir, "adapter_model.safetensors")).items()}
    lora: Dict[str, Dict[str, np.ndarray]] = {}
    full = {}
    for key, value in tensors.items():
        m = re.match(r"(.+)\.lora_([AB])\.weight$", key)
        if m:
            lora.setdefault(saved_name(m.group(1)) + ".weight", {})[m.group(2)] = value
        else:
            full[saved_name(key)] = value
    names = list(base)  # which native tensors each remote tensor is made of: lay out markers
    markers = remote_layout({k: np.full(v.shape, i, np.float64) for i, (k, v) in enumerate(base.items())}, text)
    sources = {key: [names[int(i)] for i in np.unique(v)] for key, v in markers.items()}
    replaced, a_of = dict(base, **full), {}
    for key, parts in sources.items():
        if parts[0] not in lora:
            continue
        rank = sum(lora[p]["A"].shape[0] for p in parts)
        a_of[key] = np.concatenate([lora[p]["A"] for p in parts])
        offset = 0
        for p in parts:
            b = lora[p]["B"]
            replaced[p] = np.zeros((b.shape[0], rank), b.dtype)
            replaced[p][:, offset:offset + b.shape[1]] = b
            offset += b.shape[1]
    laid_out = remote_layout(replaced, text)
    out, rank_pattern, alpha_pattern, modules = {}, {}, {}, []
    for key, parts in sources.items():
        module = key[: -len(".weight")]
        if key in a_of:
            out[module + ".lora_A.weight"], out[module + ".lora_B.weight"] = a_of[key], laid_out[key]
            if len(parts) > 1:
                rank_pattern[re.escape(module)] = len(parts) * config["r"]
                alpha_pattern[re.escape(module)] = len(parts) * config["lora_alpha"]
        elif parts[0] in full:
            out[key] = laid_out[key]
            modules.append(module)
    config.update(rank_pattern=rank_pattern, alpha_pattern=alpha_pattern, modules_to_save=modules)
    os.makedirs(remote_dir)
    with open(os.path.join(remote_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f)
    save_file({"base_model.model." + k: np.ascontiguousarray(v) for k, v in out.items()},
              os.path.join(remote_dir, "adapter_model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("text", ["qwen2", "internlm2"])
def test_internvl_remote_code_layout(text, tmp_path, capsys):
    """Remote-code base (vision_model.*, mlp1.*, packed attn.qkv, InternLM2's packed wqkv; its
    *.py copied, never run): merging the adapter translated to that layout gives the remote
    layout of the HF-native merge, which matches the PeftModel."""
    from test_internvl import remote_config

    model = tiny_hf.internvl(text_model_type="llama" if text == "internlm2" else "qwen2")
    native = tiny_hf.save(model, str(tmp_path / "hf"))
    base = {k: v.numpy() for k, v in tiny_hf.read_all(native).items()}
    remote = str(tmp_path / "remote")
    os.makedirs(remote)
    save_file({k: np.ascontiguousarray(v) for k, v in remote_layout(base, text).items()},
              os.path.join(remote, "model.safetensors"))
    llm = (dict(tiny_hf.TEXT, model_type="internlm2", architectures=["InternLM2ForCausalLM"], bias=False)
           if text == "internlm2" else dict(tiny_hf.TEXT, model_type="qwen2", architectures=["Qwen2ForCausalLM"]))
    config = remote_config(model.config, llm)
    config.update(model_type="internvl_chat", auto_map={"AutoModel": "modeling_internvl_chat.InternVLChatModel"})
    with open(os.path.join(remote, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(remote, "modeling_internvl_chat.py"), "w") as f:
        f.write("raise RuntimeError('remote code must never run')\n")
    shutil.copyfile(os.path.join(native, "tokenizer_config.json"), os.path.join(remote, "tokenizer_config.json"))

    peft_model = with_adapter(model, str(tmp_path / "adapter"), r=4, lora_alpha=8, target_modules="all-linear",
                              modules_to_save=["lm_head"])
    batch = inputs("internvl")
    want = logits(peft_model, batch)
    remote_adapter(str(tmp_path / "adapter"), str(tmp_path / "adapter_remote"), base, text)
    err = convert_error(capsys, "InternVLConverter", "merge_lora", hf_config__hf_dir=remote,
                        lora_dir=str(tmp_path / "adapter_remote"), save_hf_dir=str(tmp_path / "out_remote"))
    assert "trust_remote_code True" in err and not os.path.exists(tmp_path / "out_remote")
    convert("InternVLConverter", "merge_lora", hf_config__hf_dir=remote, lora_dir=str(tmp_path / "adapter_remote"),
            save_hf_dir=str(tmp_path / "out_remote"), trust_remote_code="True")
    convert("InternVLConverter", "merge_lora", hf_config__hf_dir=native, lora_dir=str(tmp_path / "adapter"),
            save_hf_dir=str(tmp_path / "out_native"))
    loaded = type(model).from_pretrained(str(tmp_path / "out_native"), attn_implementation="eager").eval()
    assert (logits(loaded, batch) - want).abs().max() <= 1e-4
    merged_native = {k: v.numpy() for k, v in tiny_hf.read_all(str(tmp_path / "out_native")).items()}
    merged_remote = tiny_hf.read_all(str(tmp_path / "out_remote"))
    expected = {k: torch.from_numpy(v) for k, v in remote_layout(merged_native, text).items()}
    assert_close_tensors(merged_remote, expected, 1e-6)
    packed = "language_model.model.layers.0.attention.wqkv.weight" if text == "internlm2" else \
        "vision_model.encoder.layers.0.attn.qkv.weight"
    assert not torch.equal(merged_remote[packed], torch.from_numpy(remote_layout(base, text)[packed]))
    for name in ("modeling_internvl_chat.py", "config.json", "tokenizer_config.json"):
        assert open(tmp_path / "out_remote" / name).read() == open(os.path.join(remote, name)).read()
    assert sorted(os.listdir(tmp_path / "out_remote")) == ["config.json", "model.safetensors", "modeling_internvl_chat.py",
                                                           "tokenizer_config.json"]
    convert("InternVLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=str(tmp_path / "out_remote"),
            trust_remote_code="True")
    convert("InternVLConverter", "mm_to_hf", mm_dir=str(tmp_path / "mm"), save_hf_dir=str(tmp_path / "back"),
            hf_config__hf_dir=str(tmp_path / "out_remote"), trust_remote_code="True")
    assert_same_tensors(str(tmp_path / "out_remote"), str(tmp_path / "back"))


def test_memory_is_bounded_by_the_largest_tensor(tmp_path):
    """~750 tensors (~50 MB, fp32), LoRA on every attention/MLP projection: the peak traced
    allocation of merge_lora is a few of the largest tensor plus per-tensor bookkeeping."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = dict(tiny_hf.TEXT, num_hidden_layers=60, hidden_size=128, intermediate_size=384,
                rope_scaling={"type": "mrope", "mrope_section": [8, 4, 4]})
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=tiny_hf.QWEN_VISION["qwen2_vl"],
                                                          vocab_size=tiny_hf.VOCAB))
    base = tiny_hf.save(model, str(tmp_path / "hf"), max_shard_size="10MB")
    with_adapter(model, str(tmp_path / "adapter"), r=8, lora_alpha=16,
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    sizes = [v.numel() * v.element_size() for v in tiny_hf.read_all(base).values()]
    largest, total = max(sizes), sum(sizes)
    bound = 3 * largest + 5_000 * len(sizes)
    tracemalloc.start()
    try:
        convert("Qwen2VLConverter", "merge_lora", hf_config__hf_dir=base, lora_dir=str(tmp_path / "adapter"),
                save_hf_dir=str(tmp_path / "out"), max_shard_size="10MB")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"{len(sizes)} tensors, model {total / 1e6:.1f} MB, largest {largest / 1e3:.0f} KB; peak traced "
          f"merge_lora {peak / 1e6:.2f} MB (bound {bound / 1e6:.2f} MB)")
    assert total > 10 * bound and peak < bound
    assert len([n for n in os.listdir(tmp_path / "out") if n.endswith(".safetensors")]) > 1


# ---- where the adapter comes from, and errors ----------------------------------------------------

@pytest.mark.parametrize("inside", ["", "adapter"])
def test_adapter_inside_a_training_checkpoint(inside, tmp_path, capsys):
    """An msmm-train checkpoint SAVE/iter_0000100/ holding the adapter files (or adapter/): lora_dir
    may name SAVE (the tracker's iteration), the iteration or the adapter directory."""
    model = tiny_hf.qwen2_vl()
    base = tiny_hf.save(model, str(tmp_path / "hf"))
    save, iteration = tmp_path / "save", tmp_path / "save" / "iter_0000100"
    (iteration / "mp_rank_00").mkdir(parents=True)
    (iteration / "mp_rank_00" / "model_optim_rng.safetensors").write_bytes(b"")
    (save / "latest_checkpointed_iteration.txt").write_text("100")
    err = convert_error(capsys, "Qwen2VLConverter", "merge_lora", hf_config__hf_dir=base, lora_dir=str(save),
                        save_hf_dir=str(tmp_path / "out"))
    assert f"the msmm-train checkpoint {iteration} holds no adapter_config.json" in err
    with_adapter(model, str(iteration / inside), r=2, lora_alpha=4, target_modules=["q_proj"])
    key = "model.layers.0.self_attn.q_proj.weight"
    for lora_dir in (save, iteration, iteration / inside):
        out = tmp_path / f"out{len(os.listdir(tmp_path))}"
        convert("Qwen2VLConverter", "merge_lora", hf_config__hf_dir=base, lora_dir=str(lora_dir), save_hf_dir=str(out))
        assert not torch.equal(tiny_hf.read_all(str(out))[key], tiny_hf.read_all(base)[key])


@pytest.mark.filterwarnings("ignore:Setting `save_embedding_layers`")  # PEFT, for the embedding adapter
def test_errors_name_the_problem(tmp_path, capsys, monkeypatch):
    model = tiny_hf.qwen2_vl()
    base = tiny_hf.save(model, str(tmp_path / "hf"))
    good = str(tmp_path / "adapter")
    with_adapter(model, good, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    state = load_torch(os.path.join(good, "adapter_model.safetensors"))
    config = json.load(open(os.path.join(good, "adapter_config.json")))
    q_a = "base_model.model.model.language_model.layers.1.self_attn.q_proj.lora_A.weight"

    def variant(tensors=None, **config_changes) -> str:
        directory = str(tmp_path / f"bad{len(os.listdir(tmp_path))}")
        os.makedirs(directory)
        with open(os.path.join(directory, "adapter_config.json"), "w") as f:
            json.dump(dict(config, **config_changes), f)
        save_torch(state if tensors is None else tensors, os.path.join(directory, "adapter_model.safetensors"))
        return directory

    def error(lora_dir: str, converter: str = "Qwen2VLConverter", **cfg) -> str:
        return convert_error(capsys, converter, "merge_lora", hf_config__hf_dir=cfg.pop("hf_dir", base),
                             lora_dir=lora_dir, save_hf_dir=str(tmp_path / "out"), **cfg)

    renamed = {k.replace("layers.1.", "layers.9."): v for k, v in state.items()}
    assert (f"adapter key {q_a.replace('layers.1', 'layers.9')!r} has no base tensor "
            "'model.language_model.layers.9.self_attn.q_proj.weight' (saved name 'model.layers.9.self_attn.q_proj.weight')"
            ) in error(variant(renamed))
    assert "rank_pattern key '(q_proj' is not a regular expression" in error(variant(rank_pattern={"(q_proj": 2}))
    wrong = dict(state, **{q_a: torch.zeros(4, 33)})
    assert "shape mismatch at 'model.language_model.layers.1.self_attn.q_proj': lora_A [4, 33]" in error(variant(wrong))
    assert "lora_A [2, 32]" in error(variant(rank_pattern={"q_proj": 2}))  # r from the config must match
    assert "peft_type 'LOHA': msmm reads LoRA adapters only" in error(variant(peft_type="LOHA"))
    unpaired = {k: v for k, v in state.items() if k != q_a}
    assert f"{q_a.replace('lora_A', 'lora_B')!r} has no partner" in error(variant(unpaired))
    assert "init_lora_weights='pissa'" in error(variant(init_lora_weights="pissa"))
    stray = dict(state, **{"base_model.model.model.language_model.norm.weight": torch.ones(32)})
    assert "unexpected adapter key 'base_model.model.model.language_model.norm.weight'" in error(variant(stray))
    # adapters PEFT writes for what merge_lora does not merge: DoRA, a convolution, an embedding
    for name, lora, expected in (
            ("dora", dict(target_modules=["q_proj"], use_dora=True), "use_dora=True: DoRA is not supported"),
            ("conv", dict(target_modules=["patch_embed.proj"]),
             "target module 'model.visual.patch_embed.proj' is not a Linear weight"),
            ("embed", dict(target_modules=["embed_tokens"]), "the target module is an Embedding, not a Linear weight")):
        with_adapter(tiny_hf.qwen2_vl(), str(tmp_path / name), r=2, lora_alpha=4, **lora)
        assert expected in error(str(tmp_path / name)), name
    dora = json.load(open(tmp_path / "dora" / "adapter_config.json"))
    with open(tmp_path / "dora" / "adapter_config.json", "w") as f:
        json.dump(dict(dora, use_dora=False), f)
    assert "is a DoRA magnitude; DoRA is not supported" in error(str(tmp_path / "dora"))
    # missing files
    os.makedirs(tmp_path / "empty")
    assert f"lora_dir {tmp_path / 'empty'}: no adapter_config.json (and not an msmm-train checkpoint)" in \
        error(str(tmp_path / "empty"))
    no_weights = variant()
    os.remove(os.path.join(no_weights, "adapter_model.safetensors"))
    assert f"{no_weights}: no adapter_model.safetensors" in error(no_weights)
    assert f"{tmp_path / 'empty'}: no config.json" in error(good, hf_dir=str(tmp_path / "empty"))
    assert "model_type 'qwen2_vl', this converter reads ('llava',)" in error(good, "LlavaConverter")
    assert not os.path.exists(tmp_path / "out")  # nothing written by any failure
    # an existing output is replaced only with overwrite
    os.makedirs(tmp_path / "out")
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert "exists and is not empty" in error(good)
    convert("Qwen2VLConverter", "merge_lora", hf_config__hf_dir=base, lora_dir=good, save_hf_dir=str(tmp_path / "out"),
            overwrite="True")
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "generation_config.json", "model.safetensors",
                                                    "tokenizer_config.json"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith("out.")]
    # a failure after the weights are written leaves the previous output as it was, and no temporary
    import msmm.convert.converters as converters

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(converters, "copy_side_files", fail)
    before = tiny_hf.read_all(str(tmp_path / "out"))
    with pytest.raises(OSError, match="disk full"):
        main(["Qwen2VLConverter", "merge_lora", "--cfg.hf_config.hf_dir", base, "--cfg.lora_dir", variant(lora_alpha=64),
              "--cfg.save_hf_dir", str(tmp_path / "out"), "--cfg.overwrite", "True"])
    assert not [n for n in os.listdir(tmp_path) if n.startswith("out.")]
    assert all(torch.equal(before[k], v) for k, v in tiny_hf.read_all(str(tmp_path / "out")).items())
    # the final rename failing puts the previous output back
    real_replace = os.replace
    monkeypatch.undo()

    def fail_publish(src, dst):
        if ".tmp-" in str(src):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(converters.os, "replace", fail_publish)
    with pytest.raises(OSError, match="rename failed"):
        main(["Qwen2VLConverter", "merge_lora", "--cfg.hf_config.hf_dir", base, "--cfg.lora_dir", good,
              "--cfg.save_hf_dir", str(tmp_path / "out"), "--cfg.overwrite", "True"])
    monkeypatch.undo()
    assert not [n for n in os.listdir(tmp_path) if n.startswith("out.")]
    assert all(torch.equal(before[k], v) for k, v in tiny_hf.read_all(str(tmp_path / "out")).items())
    # an output that is, contains or lies inside the base or the adapter is refused before anything is written
    os.symlink(base, tmp_path / "link")
    for out, name, path in ((tmp_path, "hf_config.hf_dir", base), (tmp_path / "adapter", "lora_dir", good),
                            (tmp_path / "hf" / "sub", "hf_config.hf_dir", base), (tmp_path / "link", "hf_config.hf_dir", base)):
        message = convert_error(capsys, "Qwen2VLConverter", "merge_lora", hf_config__hf_dir=base, lora_dir=good,
                                save_hf_dir=str(out), overwrite="True")
        assert f"save_hf_dir {out} and {name} {path} are the same directory or one contains the other" in message
    assert os.path.isfile(os.path.join(base, "config.json")) and os.path.isdir(good)
    assert not os.path.exists(tmp_path / "hf" / "sub")
