"""mm-convert against HF transformers checkpoints built in code: bit-identical round trips,
tensor/pipeline split placement, transformers loading the output, trainer checkpoints,
bounded memory, and errors that name the problem."""
from __future__ import annotations

import json
import os
import re
import sys
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import tiny_hf
from msmm.convert.cli import main
from msmm.checkpoint.train_state import CheckpointState, save_checkpoint

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))  # test_internvl's remote layout


def convert(converter: str, command: str, **cfg) -> None:
    args = [converter, command]
    for key, value in cfg.items():
        args += [f"--cfg.{key.replace('__', '.')}", value if isinstance(value, str) else repr(value)]
    assert main(args) == 0


def convert_error(capsys, converter: str, command: str, **cfg) -> str:
    args = [converter, command]
    for key, value in cfg.items():
        args += [f"--cfg.{key.replace('__', '.')}", value if isinstance(value, str) else repr(value)]
    assert main(args) != 0
    return capsys.readouterr().err


def assert_same_tensors(a_dir: str, b_dir: str) -> None:
    a, b = tiny_hf.read_all(a_dir), tiny_hf.read_all(b_dir)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def shard(mm_dir: str, name: str) -> dict:
    return load_file(os.path.join(mm_dir, "release", name, "model_optim_rng.safetensors"))


FAMILIES = {
    "qwen2_vl": (lambda: tiny_hf.qwen2_vl("qwen2_vl"), "Qwen2VLConverter"),
    "qwen2_5_vl": (lambda: tiny_hf.qwen2_vl("qwen2_5_vl"), "Qwen2_5_VLConverter"),
    "internvl": (lambda: tiny_hf.internvl(qk_norm=True), "InternVLConverter"),
    "llava": (tiny_hf.llava, "LlavaConverter"),
}
VIT = {"qwen2_vl": 2, "qwen2_5_vl": 2, "internvl": 2, "llava": 3}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("tp,llm_pp,vit_pp", [(1, None, None), (2, "[[1,3]]", "[[{v},0]]"), (2, "[[1,1],[1,1]]", "[[{v},0],[0,0]]")],
                         ids=["tp1", "tp2_pp2", "tp2_pp2_vpp2"])
def test_round_trip_is_bit_identical(family, tp, llm_pp, vit_pp, tmp_path):
    build, converter = FAMILIES[family]
    hf = tiny_hf.save(build(), str(tmp_path / "hf"))
    cfg = dict(mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf, parallel_config__tp_size=tp)
    if llm_pp:
        cfg.update(parallel_config__llm_pp_layers=llm_pp, parallel_config__vit_pp_layers=vit_pp.format(v=VIT[family]))
    convert(converter, "hf_to_mm", **cfg)
    with open(tmp_path / "mm" / "latest_checkpointed_iteration.txt") as f:
        assert f.read() == "release"
    convert(converter, "mm_to_hf", mm_dir=str(tmp_path / "mm"), save_hf_dir=str(tmp_path / "out"), max_shard_size="100KB")
    assert_same_tensors(hf, str(tmp_path / "out"))
    assert os.path.isfile(tmp_path / "out" / "model.safetensors.index.json")
    assert os.path.isfile(tmp_path / "out" / "tokenizer_config.json")


def test_bf16_round_trip_and_resplit(tmp_path):
    hf = tiny_hf.save(tiny_hf.qwen2_vl().to(torch.bfloat16), str(tmp_path / "hf"))
    convert("Qwen2VLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf,
            parallel_config__tp_size=2, parallel_config__make_vocab_size_divisible_by=64)
    convert("Qwen2VLConverter", "resplit", source_dir=str(tmp_path / "mm"), target_dir=str(tmp_path / "mm2"),
            target_parallel_config__llm_pp_layers="[[2,2]]", target_parallel_config__vit_pp_layers="[[2,0]]")
    assert sorted(os.listdir(tmp_path / "mm2" / "release")) == ["mp_rank_00_000", "mp_rank_00_001"]
    convert("Qwen2VLConverter", "mm_to_hf", mm_dir=str(tmp_path / "mm2"), save_hf_dir=str(tmp_path / "out"))
    assert_same_tensors(hf, str(tmp_path / "out"))


def test_tensor_parallel_shards_hold_the_right_slices(tmp_path):
    hf = tiny_hf.save(tiny_hf.qwen2_vl(), str(tmp_path / "hf"))
    convert("Qwen2VLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf,
            parallel_config__tp_size=2, parallel_config__make_vocab_size_divisible_by=64)
    full = {k: v.float().numpy() for k, v in tiny_hf.read_all(hf).items()}
    ranks = [shard(str(tmp_path / "mm"), f"mp_rank_0{r}") for r in range(2)]
    layer = "model.layers.1.self_attn."
    for r, s in enumerate(ranks):
        for name, dim in ((layer + "q_proj.weight", 0), (layer + "k_proj.bias", 0),
                          ("model.layers.1.mlp.gate_proj.weight", 0), (layer + "o_proj.weight", 1),
                          ("model.layers.1.mlp.down_proj.weight", 1), ("visual.merger.mlp.2.weight", 1)):
            half = np.split(full[name], 2, axis=dim)[r]
            np.testing.assert_array_equal(s["model." + name], half, err_msg=name)
        np.testing.assert_array_equal(s["model.model.norm.weight"], full["model.norm.weight"])
        # vocab 100 padded to 128 (64 * tp): rank 0 rows 0..63, rank 1 rows 64..99 then 28 zero rows
        emb = s["model.model.embed_tokens.weight"]
        assert emb.shape == (64, 32)
        np.testing.assert_array_equal(emb[: 64 if r == 0 else 36], full["model.embed_tokens.weight"][64 * r: 64 * r + 64])
        assert r == 0 or not emb[36:].any()
        # the ViT's fused qkv [q; k; v]: each rank holds its heads of q, of k and of v
        qkv = full["visual.blocks.0.attn.qkv.weight"]
        q, k, v = np.split(qkv, 3)
        want = np.concatenate([np.split(p, 2)[r] for p in (q, k, v)])
        np.testing.assert_array_equal(s["model.visual.blocks.0.attn.qkv.weight"], want)


def test_pipeline_split_puts_layers_where_asked(tmp_path):
    hf = tiny_hf.save(tiny_hf.internvl(), str(tmp_path / "hf"))
    convert("InternVLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf,
            parallel_config__llm_pp_layers="[[0,1],[2,1]]", parallel_config__vit_pp_layers="[[2,0],[0,0]]")
    full = tiny_hf.read_all(hf)
    stages = [shard(str(tmp_path / "mm"), f"mp_rank_00_00{s}") for s in range(2)]

    def layers(s: dict, chunk: int, pattern: str) -> set:
        return {int(m.group(1)) for k in s for m in [re.match(rf"model{chunk}\.{pattern}\.(\d+)\.", k)] if m}

    llm, vit = r"language_model\.model\.layers", r"vision_tower\.encoder\.layer"
    assert (layers(stages[0], 0, llm), layers(stages[1], 0, llm)) == (set(), {0})
    assert (layers(stages[0], 1, llm), layers(stages[1], 1, llm)) == ({0, 1}, {0})
    assert layers(stages[0], 0, vit) == {0, 1} and not layers(stages[1], 0, vit)
    # chunk 1 stage 0 holds global layers 1, 2 (renumbered 0, 1); chunk 1 stage 1 holds layer 3
    key = "language_model.model.layers.{}.mlp.up_proj.weight"
    for s, chunk, local, glob in ((0, 1, 0, 1), (0, 1, 1, 2), (1, 1, 0, 3), (1, 0, 0, 0)):
        assert torch.equal(torch.from_numpy(stages[s][f"model{chunk}." + key.format(local)]), full[key.format(glob)])
    assert "model0.vision_tower.embeddings.cls_token" in stages[0]  # first stage with ViT layers
    assert "model0.multi_modal_projector.linear_1.weight" in stages[0]  # last stage with ViT layers
    assert "model1.language_model.model.embed_tokens.weight" not in stages[0]
    assert "model0.language_model.model.embed_tokens.weight" in stages[1]  # first stage with LLM layers
    assert "model1.language_model.lm_head.weight" in stages[1]  # last stage with LLM layers


def test_transformers_loads_the_output_with_the_same_logits(tmp_path):
    from transformers import InternVLForConditionalGeneration

    model = tiny_hf.internvl()
    hf = tiny_hf.save(model, str(tmp_path / "hf"))
    convert("InternVLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf, parallel_config__tp_size=2)
    convert("InternVLConverter", "mm_to_hf", mm_dir=str(tmp_path / "mm"), save_hf_dir=str(tmp_path / "out"))
    loaded = InternVLForConditionalGeneration.from_pretrained(str(tmp_path / "out"), attn_implementation="eager").eval()
    ids = torch.tensor([[1, 2] + [tiny_hf.IMAGE] * 4 + [3, 4]])
    pixels = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, pixel_values=pixels).logits, loaded(input_ids=ids, pixel_values=pixels).logits)


def test_internvl_remote_code_layout(tmp_path):
    """The OpenGVLab layout (vision_model.*, mlp1.*, packed attn.qkv): same MM tensors as the
    HF-native checkpoint, written back in the remote layout bit for bit; needs trust_remote_code."""
    from test_internvl import remote_config, to_remote_layout

    model = tiny_hf.internvl()
    native = tiny_hf.save(model, str(tmp_path / "hf"))
    state = {k: v.numpy() for k, v in tiny_hf.read_all(native).items()}
    remote = str(tmp_path / "remote")
    os.makedirs(remote)
    save_file({k: np.ascontiguousarray(v) for k, v in to_remote_layout(state).items()},
              os.path.join(remote, "model.safetensors"), metadata={"format": "pt"})
    config = remote_config(model.config, dict(tiny_hf.TEXT, model_type="qwen2", architectures=["Qwen2ForCausalLM"]))
    config["model_type"] = "internvl_chat"
    config["auto_map"] = {"AutoModel": "modeling_internvl_chat.InternVLChatModel"}
    with open(os.path.join(remote, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(remote, "modeling_internvl_chat.py"), "w") as f:
        f.write("raise RuntimeError('remote code must never run')\n")
    assert main(["InternVLConverter", "hf_to_mm", "--cfg.mm_dir", str(tmp_path / "mm"),
                 "--cfg.hf_config.hf_dir", remote]) == 1  # trust_remote_code defaults to False
    convert("InternVLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=remote,
            trust_remote_code="True", parallel_config__tp_size=2)
    convert("InternVLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm_native"), hf_config__hf_dir=native,
            parallel_config__tp_size=2)
    for r in range(2):
        a, b = shard(str(tmp_path / "mm"), f"mp_rank_0{r}"), shard(str(tmp_path / "mm_native"), f"mp_rank_0{r}")
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    convert("InternVLConverter", "mm_to_hf", mm_dir=str(tmp_path / "mm"), save_hf_dir=str(tmp_path / "out"),
            hf_config__hf_dir=remote, trust_remote_code="True")
    assert_same_tensors(remote, str(tmp_path / "out"))
    assert os.path.isfile(tmp_path / "out" / "modeling_internvl_chat.py")


def test_llava_from_pieces(tmp_path):
    """CLIP + Vicuna + mm_projector.bin (read with torch.load(weights_only=True)) -> MM ->
    an HF LLaVA checkpoint equal to the one the pieces came from."""
    from transformers import LlavaForConditionalGeneration

    model = tiny_hf.llava()
    hf = tiny_hf.save(model, str(tmp_path / "hf"))
    state = tiny_hf.read_all(hf)
    pieces = {"vision": {}, "llm": {}, "proj": {}}
    for k, v in state.items():
        if k.startswith("vision_tower."):
            pieces["vision"][k[len("vision_tower."):]] = v
        elif k.startswith("language_model."):
            pieces["llm"][k[len("language_model."):]] = v
        else:
            idx = {"linear_1": 0, "linear_2": 2}[k.split(".")[1]]
            pieces["proj"][f"model.mm_projector.{idx}.{k.split('.')[-1]}"] = v
    from safetensors.torch import save_file as save_torch

    for piece, cfg in (("vision", model.config.vision_config), ("llm", model.config.text_config)):
        os.makedirs(tmp_path / piece)
        save_torch(pieces[piece], str(tmp_path / piece / "model.safetensors"), metadata={"format": "pt"})
        cfg.to_json_file(str(tmp_path / piece / "config.json"))
    with open(tmp_path / "llm" / "tokenizer_config.json", "w") as f:
        json.dump({"model_max_length": 64}, f)
    torch.save(pieces["proj"], str(tmp_path / "mm_projector.bin"))
    convert("LlavaConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__vision_dir=str(tmp_path / "vision"),
            hf_config__llm_dir=str(tmp_path / "llm"), hf_config__projector_path=str(tmp_path / "mm_projector.bin"),
            hf_config__image_token_index=tiny_hf.IMAGE)
    convert("LlavaConverter", "mm_to_hf", mm_dir=str(tmp_path / "mm"), save_hf_dir=str(tmp_path / "out"))
    assert_same_tensors(hf, str(tmp_path / "out"))
    loaded = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "out"), attn_implementation="eager").eval()
    ids = torch.tensor([[1, 2] + [tiny_hf.IMAGE] * 16 + [3]])
    pixels = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, pixel_values=pixels).logits, loaded(input_ids=ids, pixel_values=pixels).logits)


def test_reads_what_the_trainer_writes(tmp_path):
    hf = tiny_hf.save(tiny_hf.qwen2_vl(), str(tmp_path / "hf"))
    state = {k: v.numpy() for k, v in tiny_hf.read_all(hf).items()}  # msmm names = saved Qwen2-VL names
    save_checkpoint(str(tmp_path / "run"), CheckpointState(
        iteration=7, model=state, optimizer={"optimizer.step": np.array([7], np.int64)},
        rng={"numpy.keys": np.arange(4, dtype=np.uint32)}))
    convert("Qwen2VLConverter", "mm_to_hf", mm_dir=str(tmp_path / "run"), save_hf_dir=str(tmp_path / "out"),
            hf_config__hf_dir=hf)
    assert_same_tensors(hf, str(tmp_path / "out"))


def test_memory_is_bounded_by_the_largest_tensor(tmp_path):
    """A checkpoint of ~750 tensors (~50 MB): the peak traced allocation of either
    conversion is a few of the largest tensor plus small per-tensor bookkeeping (names,
    shapes, headers, TP pieces: a few KB a tensor), far below the model size."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = dict(tiny_hf.TEXT, num_hidden_layers=60, hidden_size=128, intermediate_size=384,
                rope_scaling={"type": "mrope", "mrope_section": [8, 4, 4]})
    config = Qwen2VLConfig(text_config=text, vision_config=tiny_hf.QWEN_VISION["qwen2_vl"], vocab_size=tiny_hf.VOCAB)
    hf = tiny_hf.save(Qwen2VLForConditionalGeneration(config), str(tmp_path / "hf"), max_shard_size="10MB")
    sizes = [v.numel() * v.element_size() for v in tiny_hf.read_all(hf).values()]
    largest, total = max(sizes), sum(sizes)
    bound = 3 * largest + 5_000 * len(sizes)
    tracemalloc.start()
    try:
        convert("Qwen2VLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf,
                parallel_config__tp_size=2, parallel_config__llm_pp_layers="[[30,30]]",
                parallel_config__vit_pp_layers="[[2,0]]")
        _, peak_split = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        convert("Qwen2VLConverter", "mm_to_hf", mm_dir=str(tmp_path / "mm"), save_hf_dir=str(tmp_path / "out"))
        _, peak_merge = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"{len(sizes)} tensors, model {total / 1e6:.1f} MB, largest {largest / 1e3:.0f} KB; peak traced "
          f"hf_to_mm {peak_split / 1e6:.2f} MB, mm_to_hf {peak_merge / 1e6:.2f} MB (bound {bound / 1e6:.2f} MB)")
    assert total > 10 * bound
    assert peak_split < bound and peak_merge < bound
    assert_same_tensors(hf, str(tmp_path / "out"))


def test_errors_name_the_problem(tmp_path, capsys):
    hf = tiny_hf.save(tiny_hf.qwen2_vl(), str(tmp_path / "hf"))
    err = convert_error(capsys, "Qwen2VLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf,
                        parallel_config__llm_pp_layers="[[1,2]]", parallel_config__vit_pp_layers="[[2,0]]")
    assert "llm_pp_layers=[[1, 2]] adds up to 3 layers, the model has 4" in err
    err = convert_error(capsys, "Qwen2VLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf,
                        parallel_config__tp_size=4)
    assert "tp_size 4 does not divide the model's num_key_value_heads (2)" in err
    err = convert_error(capsys, "Qwen2VLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf,
                        parallel_config__tp_sise=2)
    assert "--cfg.parallel_config.tp_sise: unknown key" in err
    err = convert_error(capsys, "InternVLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf)
    assert "config.json: model_type 'qwen2_vl', this converter reads ('internvl', 'internvl_chat')" in err
    # a missing and an unexpected tensor
    state = {k: v.numpy() for k, v in tiny_hf.read_all(hf).items()}
    for change, expected in ((lambda s: s.pop("model.layers.2.mlp.up_proj.weight"), "missing key model.layers.2.mlp.up_proj.weight"),
                             (lambda s: s.__setitem__("model.layers.1.self_attn.rope.weight", np.zeros(2, np.float32)),
                              "unexpected key 'model.layers.1.self_attn.rope.weight'"),
                             (lambda s: s.__setitem__("vision_head.weight", np.zeros(2, np.float32)),
                              "unexpected key 'vision_head.weight'")):
        broken = dict(state)
        change(broken)
        bad = tmp_path / f"bad{len(os.listdir(tmp_path))}"
        os.makedirs(bad)
        save_file(broken, str(bad / "model.safetensors"))
        os.link(os.path.join(hf, "config.json"), bad / "config.json")
        err = convert_error(capsys, "Qwen2VLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=str(bad))
        assert expected in err, err
    # mm_to_hf with a parallel_config that does not match the checkpoint
    convert("Qwen2VLConverter", "hf_to_mm", mm_dir=str(tmp_path / "mm"), hf_config__hf_dir=hf, parallel_config__tp_size=2)
    err = convert_error(capsys, "Qwen2VLConverter", "mm_to_hf", mm_dir=str(tmp_path / "mm"),
                        save_hf_dir=str(tmp_path / "o"), parallel_config__tp_size=1)
    assert "parallel_config.tp_size=1 but the checkpoint has 2" in err


def test_help_on_every_command(capsys):
    assert main(["--help"]) == 0
    assert "InternVLConverter" in capsys.readouterr().out
    for command, key in (("hf_to_mm", "--cfg.parallel_config.llm_pp_layers"), ("mm_to_hf", "--cfg.save_hf_dir"),
                         ("resplit", "--cfg.target_parallel_config.tp_size"), ("merge_lora", "--cfg.lora_dir")):
        assert main(["InternVLConverter", command, "--help"]) == 0
        assert key in capsys.readouterr().out
