"""``msmm-train --dry-run``'s per-rank parameter counts equal what ``mm-convert hf_to_mm`` really
writes into each ``mp_rank_*`` directory (tiny HF checkpoints of every family, TP/PP/VPP
layouts), and the shape-only torch builds exactly the real models.

The plan places and splits the tensors of the model built on the shape-only torch
(``adapters.meta_torch``); mm-convert splits the HF checkpoint's arrays. Counting the elements
of the safetensors files mm-convert wrote is the independent side."""
from __future__ import annotations

import glob
import json
import math
import os
import sys

import pytest
import torch

from adapters.meta_torch import MetaTorchError, models_on_meta
from msmm.checkpoint.layout import shard_dirs
from msmm.checkpoint.parallel import LLM_LAYER, VIT_LAYER, ParallelConfig, layer_stages
from msmm.checkpoint.safetensors import open_file
from msmm.convert.cli import main as mm_convert
from msmm.registry import family_of_hf_config
from msmm.train.plan import model_tensors, split_tensors

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "convert"))
import tiny_hf  # noqa: E402  (tests/convert: tiny HF checkpoints built in code)

FAMILIES = {
    "qwen2_vl": (lambda: tiny_hf.qwen2_vl("qwen2_vl"), "Qwen2VLConverter"),
    "qwen2_vl_tied": (lambda: tiny_hf.qwen2_vl("qwen2_vl", tie=True), "Qwen2VLConverter"),
    "qwen2_5_vl": (lambda: tiny_hf.qwen2_vl("qwen2_5_vl"), "Qwen2_5_VLConverter"),
    "internvl": (lambda: tiny_hf.internvl(qk_norm=True), "InternVLConverter"),
    # 3 vision heads: TP 2 splits them unevenly (MindSpeed-MM's --unaligned-linear), q/k norms too
    "internvl_3_heads": (lambda: tiny_hf.internvl(qk_norm=True, vision_heads=3), "InternVLConverter"),
    "llava": (tiny_hf.llava, "LlavaConverter"),
}
VIT = {"qwen2_vl": 2, "qwen2_vl_tied": 2, "qwen2_5_vl": 2, "internvl": 2, "internvl_3_heads": 2, "llava": 3}
# (tp, llm_pp_layers, vit_pp_layers with {v} = the vision layers): TP only, TP x PP (vision on stage 0
# with one text layer), PP with the vision encoder split over two stages, TP x PP x VPP
LAYOUTS = {
    "tp2": (2, None, None),
    "tp2_pp2": (2, [[1, 3]], "[[{v},0]]"),
    "pp2_vit_split": (1, [[0, 4]], "[[1,{r}]]"),
    "tp2_pp2_vpp2": (2, [[1, 1], [1, 1]], "[[{v},0],[0,0]]"),
}


def _mm_counts(mm_dir: str, parallel: ParallelConfig, unused) -> dict:
    """{(pp stage, tp rank): (tensors, elements)} of what mm-convert wrote, without the checkpoint
    tensors the model does not build (LLaVA's and InternVL's vision layers after the feature layer)."""
    offsets = {pattern: {(c, s, i): g for g, (c, s, i) in enumerate(layer_stages(pp_layers))}
               for pattern, pp_layers in ((LLM_LAYER, parallel.llm_pp_layers), (VIT_LAYER, parallel.vit_pp_layers))}
    out = {}
    for (rank, stage), path in shard_dirs(os.path.join(mm_dir, "release")).items():
        tensors = elements = 0
        for key, t in open_file(os.path.join(path, "model_optim_rng.safetensors")).items():
            prefix, _, name = key.partition(".")
            chunk = int(prefix[len("model"):] or 0)
            for pattern, table in offsets.items():  # the stage-local layer index -> the model's
                m = pattern.match(name)
                if m:
                    name = f"{m.group(1)}{table[(chunk, stage, int(m.group(2)))]}{m.group(3)}"
            if unused is not None and unused.match(name):
                continue
            tensors += 1
            elements += math.prod(t.shape)
        out[(stage, rank)] = (tensors, elements)
    return out


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_per_rank_counts_equal_mm_convert_split(family, layout, tmp_path):
    build, converter = FAMILIES[family]
    tp, llm, vit = LAYOUTS[layout]
    vit = None if vit is None else json.loads(vit.format(v=VIT[family], r=VIT[family] - 1))
    hf = tiny_hf.save(build(), str(tmp_path / "hf"))
    args = [converter, "hf_to_mm", "--cfg.mm_dir", str(tmp_path / "mm"), "--cfg.hf_config.hf_dir", hf,
            "--cfg.parallel_config.tp_size", str(tp)]
    if llm is not None:
        args += ["--cfg.parallel_config.llm_pp_layers", json.dumps(llm), "--cfg.parallel_config.vit_pp_layers",
                 json.dumps(vit)]
    assert mm_convert(args) == 0

    with open(os.path.join(hf, "config.json")) as f:
        hf_config = json.load(f)
    with models_on_meta() as models:
        spec = family_of_hf_config(hf_config, "config.json")
        model_file = models.pretrained.model_file(spec)
        model = model_file.from_hf_config(hf_config, "config.json", tiny_hf.IMAGE)
        tensors = model_tensors(model)
        unused = getattr(model_file, "unused_checkpoint_keys", lambda config: None)(model.config)
    parallel = ParallelConfig(tp, llm, vit).resolved(tiny_hf.LLM_LAYERS, VIT[family])
    shares, _ = split_tensors(tensors, parallel, vision_heads=hf_config["vision_config"].get("num_attention_heads"))
    # a tied lm_head on a stage without the embedding is a device copy mm-convert does not write
    planned = {key: (len(share.names) - (share.tied_copy > 0), share.params - share.tied_copy)
               for key, share in shares.items()}
    written = _mm_counts(str(tmp_path / "mm"), parallel, unused)
    assert planned == written
    assert len(written) == parallel.tp_size * parallel.pp_size and all(n for _, n in written.values())


def _real_meta_state(path: str) -> dict:
    from msmm.models import build_model, load_model_config

    with torch.device("meta"):
        model = build_model(load_model_config(path))
    return {k: (tuple(v.shape), v.requires_grad) for k, v in model.state_dict(keep_vars=True).items()}


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "examples", "*", "model*.json"))),
                         ids=lambda p: os.path.relpath(p, os.path.join(ROOT, "examples")))
def test_shape_only_torch_builds_the_real_model(path):
    """Every shipped model.json: the same state_dict names, shapes and requires_grad as the model
    built with real torch on its meta device."""
    with models_on_meta() as models:
        model = models.build_model(models.load_model_config(path))
        ours = {k: (tuple(v.shape), v.requires_grad) for k, v in model.state_dict().items()}
        meta_params = sum(p.numel() for p in model.parameters())
    real = _real_meta_state(path)
    assert ours == real
    with torch.device("meta"):
        from msmm.models import build_model, load_model_config

        assert meta_params == sum(p.numel() for p in build_model(load_model_config(path)).parameters())


def test_binding_is_undone_and_running_is_refused():
    import msmm.models as real_models

    with models_on_meta() as models:
        assert models is not real_models
        model = models.build_model(models.load_model_config(os.path.join(ROOT, "examples", "llava1.5", "model.json")))
        assert sys.modules["torch"].__name__ == "torch" and sys.modules["torch"].__version__.endswith("+meta")
        with pytest.raises(MetaTorchError, match="cannot run"):
            model(input_ids=None)
    assert sys.modules["torch"] is torch and sys.modules["msmm.models"] is real_models
    import msmm

    assert msmm.models is real_models
