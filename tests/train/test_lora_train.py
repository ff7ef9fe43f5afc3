"""LoRA fine-tuning end to end: examples/internvl/finetune_internvl_lora_tiny_cpu.sh through
msrun (1 worker) from an HF-native InternVL checkpoint built here, LoRA on the text decoder
(--lora-*) and the InternViT (model.json), projector trained in full, --save-total-limit 2.
Checked: loss falls, base weights bit-identical to the HF checkpoint, adapters changed, old
checkpoints pruned, HF PEFT loads the written adapter and gives msmm's logits, mm-convert
merge_lora of the run's checkpoint loads in transformers with the same logits, and a run
resumed from iteration 6 ends where the uninterrupted one did."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import peft
import pytest
import torch
from safetensors.numpy import load_file

from test_msrun import REPO, _free_port, records

SCRIPT = "examples/internvl/finetune_internvl_lora_tiny_cpu.sh"
PAYLOAD = os.path.join("mp_rank_00", "model_optim_rng.safetensors")


def run_script(tmp: str, save: str, load: str, iters: int = 9) -> None:
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", NPUS_PER_NODE="1",
               MASTER_PORT=str(_free_port()), TINY_DIR=os.path.join(tmp, "assets"), SAVE_PATH=save,
               TRAIN_ITERS=str(iters), GLOBAL_BATCH="4", LOAD_ARGS=f"--load {load}",
               LORA_DROPOUT="0")  # CPU dropout masks inside a compiled graph do not follow the saved RNG state
    proc = subprocess.run(["bash", os.path.join(REPO, SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    log_dir = os.path.join(save, "msrun_log")
    logs = "".join(open(os.path.join(log_dir, f)).read()[-4000:] for f in sorted(os.listdir(log_dir))) \
        if os.path.isdir(log_dir) else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs


def hf_base(model_json: dict):
    """HF-native InternVL with the architecture of the tiny model.json (random weights)."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    vision, text = model_json["image_encoder"]["vision_encoder"], model_json["text_decoder"]
    config = InternVLConfig(
        vision_config=dict(hidden_size=vision["hidden_size"], num_hidden_layers=vision["num_layers"],
                           num_attention_heads=vision["num_attention_heads"], intermediate_size=vision["ffn_hidden_size"],
                           image_size=[vision["image_size"]] * 2, patch_size=[vision["patch_size"]] * 2,
                           attention_bias=True, use_qk_norm=False, norm_type="layer_norm"),
        text_config=dict(model_type="qwen2", hidden_size=text["hidden_size"], num_hidden_layers=text["num_layers"],
                         num_attention_heads=text["num_attention_heads"], num_key_value_heads=text["num_query_groups"],
                         intermediate_size=text["ffn_hidden_size"], vocab_size=text["vocab_size"],
                         rope_theta=text["rotary_base"], rms_norm_eps=1e-6, max_position_embeddings=512,
                         tie_word_embeddings=False),
        image_token_id=model_json["image_token_id"], tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(0)
    return InternVLForConditionalGeneration(config).float()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("lora_train"))
    assets = os.path.join(tmp, "assets")
    subprocess.run([sys.executable, os.path.join(REPO, "examples/tiny/make_tiny_assets.py"), "--family", "internvl",
                    "--vision-lora", "--vision-lora-dropout", "0", "--out", assets], check=True, capture_output=True)
    with open(os.path.join(assets, "model.json")) as f:
        model_json = json.load(f)
    hf_dir = os.path.join(tmp, "hf")
    hf_base(model_json).save_pretrained(hf_dir, safe_serialization=True)
    save = os.path.join(tmp, "save")
    run_script(tmp, save, hf_dir)
    return dict(tmp=tmp, assets=assets, hf_dir=hf_dir, save=save)


def msmm_torch_model(run, iteration_dir: str):
    """msmm's InternVL on real torch: model.json, the HF base, LoRA, then the checkpoint's weights."""
    from msmm.config.lora_config import LoRAConfig
    from msmm.models import apply_lora_config, build_model, load_model_config, load_pretrained

    config = load_model_config(os.path.join(run["assets"], "model.json"))
    config.sections["text_decoder"].lora = LoRAConfig(r=8, lora_alpha=16)  # the script's --lora-*
    model = build_model(config)
    load_pretrained(model, config, run["hf_dir"])
    apply_lora_config(model, config)
    state = load_file(os.path.join(iteration_dir, PAYLOAD))
    model.load_state_dict({k[len("model."):]: torch.tensor(v) for k, v in state.items() if k.startswith("model.")})
    return model.eval()


def test_lora_run_trains_adapters_only_and_prunes_checkpoints(run):
    from msmm.models import build_model, load_model_config, load_pretrained

    log = records(run["save"])
    print("\nLoRA losses:", [round(r["loss"], 4) for r in log])
    assert [r["iteration"] for r in log] == list(range(1, 10))
    assert log[-1]["loss"] < log[0]["loss"] - 0.05
    assert sorted(n for n in os.listdir(run["save"]) if n.startswith("iter_")) == ["iter_0000006", "iter_0000009"]
    final = load_file(os.path.join(run["save"], "iter_0000009", PAYLOAD))
    config = load_model_config(os.path.join(run["assets"], "model.json"))
    initial = build_model(config)
    load_pretrained(initial, config, run["hf_dir"])  # the HF weights under msmm's names
    mapped = {k: v.numpy() for k, v in initial.state_dict().items()}
    lora = [k for k in final if ".lora_" in k and k.startswith("model.")]
    assert len(lora) == 2 * (14 + 12)  # 7 linears x 2 text layers, 6 x 2 vision layers
    for key in lora:
        assert f"optimizer.exp_avg.{key[len('model.'):]}" in final
        if ".lora_B." in key:
            assert np.abs(final[key]).max() > 0, key  # started at zero
    base = [k for k in final if k.startswith("model.") and ".lora_" not in k]
    for key in base:
        name = key[len("model."):]
        if name.startswith("multi_modal_projector."):
            assert not np.array_equal(final[key], mapped[name]), name  # trained in full
        else:
            np.testing.assert_array_equal(final[key], mapped[name], err_msg=name)  # frozen: bit-identical
            assert f"optimizer.exp_avg.{name}" not in final


@pytest.fixture(scope="module")
def logits(run):
    """One image-and-text input and its logits from the HF base, msmm (base + the run's final
    adapter, on real torch) and HF PEFT (``PeftModel.from_pretrained`` of the adapter files)."""
    from transformers import InternVLForConditionalGeneration

    iteration = os.path.join(run["save"], "iter_0000009")
    rng = np.random.default_rng(0)
    image_token = json.load(open(os.path.join(run["assets"], "model.json")))["image_token_id"]
    ids = np.array([[1, 2] + [image_token] * 4 + rng.integers(3, 200, 10).tolist()])
    inputs = {"input_ids": torch.tensor(ids), "pixel_values": torch.tensor(rng.standard_normal((1, 3, 56, 56)), dtype=torch.float32),
              "attention_mask": torch.ones(ids.shape, dtype=torch.long)}
    base = InternVLForConditionalGeneration.from_pretrained(run["hf_dir"]).eval()
    with torch.no_grad():
        out = dict(inputs=inputs, base=base(**inputs).logits.numpy(), msmm=msmm_torch_model(run, iteration)(**inputs).numpy())
        out["peft"] = peft.PeftModel.from_pretrained(base, iteration).eval()(**inputs).logits.numpy()
    return out


def test_peft_loads_the_adapter_msmm_train_wrote(run, logits):
    iteration = os.path.join(run["save"], "iter_0000009")
    with open(os.path.join(iteration, "adapter_config.json")) as f:
        config = json.load(f)
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == run["hf_dir"]
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) in ((8, 16.0, 0.0), (4, 8.0, 0.0))
    err = float(np.abs(logits["peft"] - logits["msmm"]).max())
    print(f"\nPEFT from_pretrained(msmm-train adapter) vs msmm logits: max abs err {err:.2e} "
          f"(adapter changes them by {np.abs(logits['peft'] - logits['base']).max():.2e})")
    assert err <= 1e-4
    assert np.abs(logits["peft"] - logits["base"]).max() > 1e-3


def test_merge_lora_of_the_run_loads_in_transformers(run, logits, tmp_path):
    """docs/lora.md "Merge and export": mm-convert InternVLConverter merge_lora on the run's
    iteration directory, and on SAVE (the tracker's iteration); transformers loads the merged
    directory and gives msmm's base + adapter logits, and PEFT's."""
    from transformers import InternVLForConditionalGeneration

    from msmm.convert.cli import main as mm_convert

    for name, lora_dir in (("from_iteration", os.path.join(run["save"], "iter_0000009")), ("from_save", run["save"])):
        out = str(tmp_path / name)
        assert mm_convert(["InternVLConverter", "merge_lora", "--cfg.hf_config.hf_dir", run["hf_dir"],
                           "--cfg.lora_dir", lora_dir, "--cfg.save_hf_dir", out]) == 0
        with torch.no_grad():
            merged = InternVLForConditionalGeneration.from_pretrained(out).eval()(**logits["inputs"]).logits.numpy()
        err_msmm, err_peft = (float(np.abs(merged - logits[k]).max()) for k in ("msmm", "peft"))
        print(f"\nmerge_lora {name}: transformers(merged) vs msmm base+adapter logits max abs err {err_msmm:.2e}, "
              f"vs PEFT {err_peft:.2e}")
        assert err_msmm <= 1e-4 and err_peft <= 1e-4
    trained = load_file(os.path.join(run["save"], "iter_0000009", PAYLOAD))
    projector = load_file(os.path.join(out, "model.safetensors"))["multi_modal_projector.linear_1.weight"]
    np.testing.assert_array_equal(projector, trained["model.multi_modal_projector.linear_1.weight"])  # modules_to_save


def test_resumed_lora_run_ends_where_the_uninterrupted_one_did(run):
    stopped = os.path.join(run["tmp"], "stopped")  # what a run stopped after iteration 6 leaves behind
    shutil.copytree(os.path.join(run["save"], "iter_0000006"), os.path.join(stopped, "iter_0000006"))
    with open(os.path.join(stopped, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("6")
    run_script(run["tmp"], stopped, stopped)
    log = records(stopped)
    assert [r["iteration"] for r in log] == [7, 8, 9]
    full = [r for r in records(run["save"]) if r["iteration"] > 6]
    np.testing.assert_allclose([r["loss"] for r in log], [r["loss"] for r in full], rtol=1e-5)
    want = load_file(os.path.join(run["save"], "iter_0000009", "adapter_model.safetensors"))
    got = load_file(os.path.join(stopped, "iter_0000009", "adapter_model.safetensors"))
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5, err_msg=key)
    with open(os.path.join(stopped, "iter_0000009", "adapter_config.json")) as f:
        assert json.load(f)["base_model_name_or_path"] == run["hf_dir"]  # recorded by the first run


def test_merge_lora_remote_code_layout_of_the_run(run, tmp_path):
    """The same trained model with a remote-code base (OpenGVLab layout, what the InternVL2-2B
    recipe --loads and LMDeploy serves): msmm's adapter in that layout (ViT q/k/v as one
    rank-3r attn.qkv adapter, projector as mlp1) merged into the remote base equals the remote
    layout of the HF-native merge."""
    from transformers import InternVLConfig

    from msmm.convert.cli import main as mm_convert
    from msmm.checkpoint.peft import AdapterNaming
    from msmm.train.adapter import AdapterWriter

    sys.path.insert(0, os.path.join(REPO, "tests", "models"))
    from test_internvl import remote_config, saved_tensors, to_remote_layout, write_remote_checkpoint

    hf_config = InternVLConfig.from_pretrained(run["hf_dir"])
    llm = dict(hf_config.text_config.to_dict(), architectures=["Qwen2ForCausalLM"])
    remote = write_remote_checkpoint(str(tmp_path / "remote"), to_remote_layout(saved_tensors(run["hf_dir"])),
                                     dict(remote_config(hf_config, llm), model_type="internvl_chat"))
    adapter = str(tmp_path / "adapter_remote")
    AdapterWriter(msmm_torch_model(run, os.path.join(run["save"], "iter_0000009")),
                  AdapterNaming("internvl", "remote", "qwen2"), remote)(adapter)
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        config = json.load(f)
    assert config["modules_to_save"] == ["mlp1"] and config["rank_pattern"]["qkv"] == 3 * config["rank_pattern"]["fc1"]
    for base, lora_dir, out in ((run["hf_dir"], run["save"], "merged_native"), (remote, adapter, "merged_remote")):
        assert mm_convert(["InternVLConverter", "merge_lora", "--cfg.hf_config.hf_dir", base, "--cfg.lora_dir", lora_dir,
                           "--cfg.save_hf_dir", str(tmp_path / out)]) == 0
    merged = load_file(str(tmp_path / "merged_remote" / "model.safetensors"))
    expected = to_remote_layout(load_file(str(tmp_path / "merged_native" / "model.safetensors")))
    assert sorted(merged) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(merged[key], expected[key], rtol=0, atol=1e-6, err_msg=key)
    qkv = "vision_model.encoder.layers.0.attn.qkv.weight"
    assert np.abs(merged[qkv] - to_remote_layout(saved_tensors(run["hf_dir"]))[qkv]).max() > 1e-4
