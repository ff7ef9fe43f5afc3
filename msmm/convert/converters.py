"""The converters ``mm-convert`` names: ``hf_to_mm``, ``mm_to_hf``, ``resplit`` and ``merge_lora`` for each family."""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..checkpoint.hf import copy_side_files, load_config, parse_size, read_hf_tensors, write_hf
from ..checkpoint.lora_merge import merge_tensors
from ..checkpoint.mm import HF_CONFIG_DIR, ModelInfo, check_complete, check_divisible, read_mm, write_mm
from ..checkpoint.parallel import ParallelConfig
from ..checkpoint.peft import read_adapter
from ..checkpoint.safetensors import STORAGE, Tensor, open_file
from ..registry import FAMILIES, FamilySpec


@dataclass
class HfConfig:
    hf_dir: Optional[str] = None  # the HF checkpoint directory (config.json, safetensors, tokenizer)
    vision_dir: Optional[str] = None  # LlavaConverter without hf_dir: HF CLIP checkpoint (vision_model.*)
    llm_dir: Optional[str] = None  # LlavaConverter without hf_dir: HF Llama/Vicuna checkpoint
    projector_path: Optional[str] = None  # LlavaConverter without hf_dir: mm_projector.bin / .safetensors
    image_token_index: int = 32000  # LlavaConverter without hf_dir: id of <image> in the tokenizer


@dataclass
class HfToMmConfig:
    mm_dir: str  # where the MM checkpoint is written
    hf_config: HfConfig = field(default_factory=HfConfig)
    parallel_config: ParallelConfig = field(default_factory=ParallelConfig)
    trust_remote_code: bool = False  # required for checkpoints that ship code (config.json auto_map); never run


@dataclass
class MmToHfConfig:
    mm_dir: str  # the MM checkpoint (from hf_to_mm or msmm-train)
    save_hf_dir: str  # where the HF checkpoint is written
    hf_config: HfConfig = field(default_factory=HfConfig)  # hf_dir: config/tokenizer source (default mm_dir/hf_config)
    parallel_config: Optional[ParallelConfig] = None  # if given, must match the checkpoint's split
    max_shard_size: str = "5GB"
    trust_remote_code: bool = False  # also copy *.py files of hf_dir (remote-code checkpoints)


@dataclass
class ResplitConfig:
    source_dir: str
    target_dir: str
    target_parallel_config: ParallelConfig = field(default_factory=ParallelConfig)
    source_parallel_config: Optional[ParallelConfig] = None  # if given, must match the source's split


@dataclass
class MergeLoraConfig:
    lora_dir: str  # the adapter: adapter_config.json + adapter_model.safetensors, or an msmm-train checkpoint
    save_hf_dir: str  # where the merged HF checkpoint is written
    hf_config: HfConfig = field(default_factory=HfConfig)  # hf_dir: the base HF checkpoint the adapter was trained on
    max_shard_size: str = "5GB"
    trust_remote_code: bool = False  # required for (and copies the *.py files of) remote-code checkpoints; never run
    overwrite: bool = False  # replace an existing non-empty save_hf_dir


def _check_trust(config: dict, where: str, trust: bool) -> None:
    if "auto_map" in config and not trust:
        raise PermissionError(
            f"{where} declares remote code (auto_map {sorted(config['auto_map'])}). mm-convert never runs it (it "
            "reads config.json and safetensors only), but converting a remote-code checkpoint needs "
            "--cfg.trust_remote_code True to confirm you trust where it came from")


def _check_expected(found: ParallelConfig, given: Optional[ParallelConfig], where: str) -> None:
    if given is None:
        return
    for key in ("tp_size", "llm_pp_layers", "vit_pp_layers"):
        want = getattr(given, key)
        if want is not None and want != getattr(found, key):
            raise ValueError(f"{where}: parallel_config.{key}={want} but the checkpoint has {getattr(found, key)}")


def _nested(a: str, b: str) -> bool:
    """Whether real paths ``a`` and ``b`` are the same directory or one lies inside the other."""
    return os.path.commonpath([a, b]) in (a, b)


class Converter:
    """hf_to_mm / mm_to_hf / resplit / merge_lora for one family (its ``msmm.registry`` entry)."""

    def __init__(self, spec: FamilySpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.converter

    def info(self, config: dict, where: str) -> ModelInfo:
        self.spec.check_hf_config(config, where)
        return self.spec.hf_info(config, where)

    def read_source(self, hf: HfConfig) -> Tuple[dict, Dict[str, Tensor], str]:
        """(config.json dict, HF tensors, directory whose tokenizer files to keep)."""
        if hf.hf_dir is None:
            raise ValueError("hf_to_mm needs --cfg.hf_config.hf_dir")
        return load_config(hf.hf_dir), read_hf_tensors(hf.hf_dir), hf.hf_dir

    def hf_to_mm(self, cfg: HfToMmConfig) -> str:
        config, hf_tensors, side_dir = self.read_source(cfg.hf_config)
        where = os.path.join(side_dir, "config.json")
        _check_trust(config, where, cfg.trust_remote_code)
        info = self.info(config, where)
        tensors = self.spec.naming.to_mm(hf_tensors, info.layout, self.spec.text_family(config, where))
        check_complete(tensors, info, side_dir)
        parallel = cfg.parallel_config.resolved(info.llm_layers, info.vit_layers)
        check_divisible(info, parallel.tp_size)
        os.makedirs(cfg.mm_dir, exist_ok=True)
        out = write_mm(cfg.mm_dir, tensors, parallel, info, self.name)
        side = os.path.join(cfg.mm_dir, HF_CONFIG_DIR)
        shutil.rmtree(side, ignore_errors=True)
        copy_side_files(side_dir, side, with_code=False)
        with open(os.path.join(side, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        return out

    def mm_to_hf(self, cfg: MmToHfConfig) -> str:
        source = cfg.hf_config.hf_dir or os.path.join(cfg.mm_dir, HF_CONFIG_DIR)
        config = load_config(source)
        where = os.path.join(source, "config.json")
        _check_trust(config, where, cfg.trust_remote_code)
        info = self.info(config, where)
        tensors, found, _ = read_mm(cfg.mm_dir)
        _check_expected(found, cfg.parallel_config, cfg.mm_dir)
        check_complete(tensors, info, cfg.mm_dir)
        hf = self.spec.naming.to_hf(tensors, info.layout, self.spec.text_family(config, where), info.tie_word_embeddings)
        os.makedirs(cfg.save_hf_dir, exist_ok=True)
        write_hf(cfg.save_hf_dir, hf, parse_size(cfg.max_shard_size))
        copy_side_files(source, cfg.save_hf_dir, with_code=cfg.trust_remote_code)
        return cfg.save_hf_dir

    def merge_lora(self, cfg: MergeLoraConfig) -> str:
        """The base HF checkpoint with the adapter merged in, written in the base's HF layout
        (config, safetensors shards + index, tokenizer/processor files, ``*.py`` with
        trust_remote_code) to a temporary directory renamed to ``save_hf_dir`` when complete."""
        base_dir = cfg.hf_config.hf_dir
        if base_dir is None or any(p is not None for p in (cfg.hf_config.vision_dir, cfg.hf_config.llm_dir,
                                                            cfg.hf_config.projector_path)):
            raise ValueError("merge_lora needs --cfg.hf_config.hf_dir (the base HF checkpoint the adapter was "
                             "trained on) and no hf_config.vision_dir/llm_dir/projector_path")
        config = load_config(base_dir)
        where = os.path.join(base_dir, "config.json")
        _check_trust(config, where, cfg.trust_remote_code)
        info = self.info(config, where)
        out_dir = os.path.realpath(cfg.save_hf_dir)
        for name, path in (("hf_config.hf_dir", base_dir), ("lora_dir", cfg.lora_dir)):
            if _nested(os.path.realpath(path), out_dir):
                raise ValueError(f"save_hf_dir {cfg.save_hf_dir} and {name} {path} are the same directory or one "
                                 "contains the other; write the merged checkpoint elsewhere")
        if os.path.isdir(out_dir) and os.listdir(out_dir) and not cfg.overwrite:
            raise FileExistsError(f"save_hf_dir {cfg.save_hf_dir} exists and is not empty; remove it or pass "
                                  "--cfg.overwrite True")
        adapter = read_adapter(cfg.lora_dir)
        naming, text_family = self.spec.naming, self.spec.text_family(config, where)

        def resolve(name: str) -> Optional[str]:  # in-memory name (transformers >= 4.52) -> saved name
            mm = naming.mm_name(name, info.layout, text_family)
            return None if mm is None else naming.hf_name(mm, info.layout, text_family)

        merged = merge_tensors(read_hf_tensors(base_dir), adapter, resolve)
        size = parse_size(cfg.max_shard_size)
        tmp = f"{out_dir}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            write_hf(tmp, merged, size, desc="merge_lora")
            copy_side_files(base_dir, tmp, with_code=cfg.trust_remote_code)
            if os.path.isdir(out_dir):
                old = f"{out_dir}.old-{os.getpid()}"
                os.replace(out_dir, old)
                try:
                    os.replace(tmp, out_dir)
                except BaseException:
                    os.replace(old, out_dir)
                    raise
                shutil.rmtree(old)
            else:
                os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cfg.save_hf_dir

    def resplit(self, cfg: ResplitConfig) -> str:
        tensors, found, meta = read_mm(cfg.source_dir)
        _check_expected(found, cfg.source_parallel_config, cfg.source_dir)
        info = ModelInfo(**meta["model"]) if meta.get("model") else None
        llm_layers, vit_layers = sum(map(sum, found.llm_pp_layers)), sum(map(sum, found.vit_pp_layers))
        parallel = cfg.target_parallel_config.resolved(llm_layers, vit_layers)
        if info is not None:
            check_divisible(info, parallel.tp_size)
        os.makedirs(cfg.target_dir, exist_ok=True)
        out = write_mm(cfg.target_dir, tensors, parallel, info, self.name, meta.get("vocab_size"))
        side = os.path.join(cfg.source_dir, HF_CONFIG_DIR)
        if os.path.isdir(side):
            copy_side_files(side, os.path.join(cfg.target_dir, HF_CONFIG_DIR), with_code=False)
        return out


_CLIP_TEXT_SIDE = re.compile(r"^(text_model\.|text_projection\.|visual_projection\.|logit_scale$)")
_PROJECTOR_KEYS = {"model.mm_projector.0.weight": "multi_modal_projector.linear_1.weight",
                   "model.mm_projector.0.bias": "multi_modal_projector.linear_1.bias",
                   "model.mm_projector.2.weight": "multi_modal_projector.linear_2.weight",
                   "model.mm_projector.2.bias": "multi_modal_projector.linear_2.bias"}


def _read_projector(path: str) -> Dict[str, Tensor]:
    """``mm_projector.bin``-style keys from safetensors, or from a torch pickle read with
    ``torch.load(weights_only=True)`` (tensors only, no code); without torch only safetensors."""
    if path.endswith(".safetensors"):
        return open_file(path)
    try:
        import torch
    except ImportError as err:
        raise ValueError(f"{path}: reading a .bin needs torch (torch.load(weights_only=True)); "
                         "or convert it to .safetensors") from err
    state = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for key, value in state.items():
        if value.dtype == torch.bfloat16:
            array, code = value.view(torch.int16).numpy().view(np.uint16), "BF16"
        else:
            array = value.numpy()
            code = next(c for c, d in STORAGE.items() if c != "BF16" and np.dtype(d) == array.dtype)
        out[key] = Tensor(code, tuple(array.shape), (lambda a=array: a), f"{path}:{key}")
    return out


class LlavaConverter(Converter):
    """LLaVA-1.5: an HF LLaVA checkpoint (hf_dir), or its pieces: an HF CLIP checkpoint
    (vision_dir), an HF Vicuna/Llama checkpoint (llm_dir) and the projector
    (projector_path, keys model.mm_projector.0/2.*)."""

    def read_source(self, hf: HfConfig) -> Tuple[dict, Dict[str, Tensor], str]:
        pieces = (hf.vision_dir, hf.llm_dir, hf.projector_path)
        if hf.hf_dir is not None:
            if any(p is not None for p in pieces):
                raise ValueError("give either hf_config.hf_dir or hf_config.vision_dir/llm_dir/projector_path")
            return super().read_source(hf)
        if any(p is None for p in pieces):
            raise ValueError("LlavaConverter needs hf_config.hf_dir, or all of hf_config.vision_dir, "
                             "hf_config.llm_dir and hf_config.projector_path")
        tensors: Dict[str, Tensor] = {}
        for key, t in read_hf_tensors(hf.vision_dir).items():
            if key.startswith("vision_model."):
                tensors["vision_tower." + key] = t
            elif not _CLIP_TEXT_SIDE.match(key) and not key.endswith("position_ids"):
                raise KeyError(f"{t.source}: unexpected key {key!r} in a CLIP checkpoint")
        for key, t in read_hf_tensors(hf.llm_dir).items():
            tensors["language_model." + key] = t
        for key, t in _read_projector(hf.projector_path).items():
            if key not in _PROJECTOR_KEYS:
                raise KeyError(f"{hf.projector_path}: unexpected key {key!r} (expected {sorted(_PROJECTOR_KEYS)})")
            tensors[_PROJECTOR_KEYS[key]] = t
        vision_cfg = load_config(hf.vision_dir)
        text_cfg = load_config(hf.llm_dir)
        config = {
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "vision_config": dict(vision_cfg.get("vision_config", vision_cfg), model_type="clip_vision_model"),
            "text_config": text_cfg,
            "image_token_index": hf.image_token_index,
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "projector_hidden_act": "gelu",
            "tie_word_embeddings": text_cfg.get("tie_word_embeddings", False),
        }
        return config, tensors, hf.llm_dir


def converter(name: str) -> Converter:
    """The converter ``mm-convert`` calls ``name`` (``Qwen2VLConverter``, ...)."""
    spec = CONVERTERS[name]
    return (LlavaConverter if spec.name == "llava" else Converter)(spec)


CONVERTERS: Dict[str, FamilySpec] = {spec.converter: spec for spec in FAMILIES.values()}
