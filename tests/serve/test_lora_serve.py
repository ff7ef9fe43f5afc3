"""The tutorial's flow on the tiny InternVL (docs/serving.md): LoRA fine-tuning through
examples/internvl/finetune_internvl_lora_tiny_cpu.sh from the ``make_tiny_assets --hf-model``
checkpoint, ``mm-convert merge_lora``, then ``msmm-serve`` of the merged model answers an
image question as msmm-infer does on it, and ``msmm-serve --adapter`` of the base gives the
same answer. Slow (msrun fine-tuning, two servers): run with --run-slow."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import openai
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from serve_process import REPO, free_port, live_server  # noqa: E402

QUESTION = "What colour is the square in the picture?"


def answer(url: str, image: str) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
    with open(image, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return client.chat.completions.create(model=client.models.list().data[0].id, temperature=0, max_tokens=8, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
                                     {"type": "text", "text": QUESTION}]}]).choices[0].message.content


@pytest.mark.slow
def test_train_lora_merge_and_serve(tmp_path, capsys):
    import ms_backend

    from msmm.convert.cli import main as mm_convert
    from msmm.infer.cli import infer

    assets, save, merged = str(tmp_path / "assets"), str(tmp_path / "save"), str(tmp_path / "merged")
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", MASTER_PORT=str(free_port()),
               TINY_DIR=assets, SAVE_PATH=save, TRAIN_ITERS="3", ASSET_ARGS="--hf-model",
               LOAD_ARGS=f"--load {os.path.join(assets, 'hf')}", LORA_DROPOUT="0")
    proc = subprocess.run(["bash", "examples/internvl/finetune_internvl_lora_tiny_cpu.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert mm_convert(["InternVLConverter", "merge_lora", "--cfg.hf_config.hf_dir", os.path.join(assets, "hf"),
                       "--cfg.lora_dir", save, "--cfg.save_hf_dir", merged]) == 0
    image = os.path.join(assets, "images", "0.png")
    config = {"model": {"family": "internvl", "from_pretrained": merged}, "tokenizer": {"from_pretrained": merged},
              "data": os.path.join(assets, "data.json"), "prompts": [{"prompt": QUESTION, "images": [image]}],
              "generation_config": {"max_new_tokens": 8}}
    with open(tmp_path / "inference.json", "w") as f:
        json.dump(config, f)
    capsys.readouterr()
    with ms_backend.converted_in_sys_modules():
        assert infer([str(tmp_path / "inference.json")]) == 0
    expected = capsys.readouterr().out.split("\n", 1)[1][:-1]
    with live_server(["--model", merged, "--max-batch", "2", "--max-model-len", "512"], str(tmp_path / "a.log")) as url:
        assert answer(url, image) == expected
    with live_server(["--model", os.path.join(assets, "hf"), "--adapter", save, "--max-batch", "2",
                      "--max-model-len", "512"], str(tmp_path / "b.log")) as url:
        assert answer(url, image) == expected
