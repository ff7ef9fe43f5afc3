"""The converters ``mm-convert`` names: ``hf_to_mm``, ``mm_to_hf``, ``resplit`` and ``merge_lora`` for each family."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from ..checkpoint.hf import copy_side_files, load_config, parse_size, read_hf_tensors, read_weights_file, write_hf
from ..checkpoint.lora_merge import merge_tensors
from ..checkpoint.layout import RELEASE, TRACKER, training_checkpoint_in
from ..checkpoint.mm import (HF_CONFIG_DIR, ModelInfo, check_complete, check_divisible, check_text_shapes, read_mm,
                             write_mm)
from ..checkpoint.parallel import ParallelConfig
from ..checkpoint.peft import read_adapter
from ..checkpoint.names import llava_from_pieces
from ..checkpoint.safetensors import Tensor
from ..registry import FAMILIES, FamilySpec, text_section


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
    overwrite: bool = False  # replace a previous mm-convert output in mm_dir


@dataclass
class MmToHfConfig:
    mm_dir: str  # the MM checkpoint (from hf_to_mm or msmm-train)
    save_hf_dir: str  # where the HF checkpoint is written
    hf_config: HfConfig = field(default_factory=HfConfig)  # hf_dir: config/tokenizer source (default mm_dir/hf_config)
    parallel_config: Optional[ParallelConfig] = None  # if given, must match the checkpoint's split
    max_shard_size: str = "5GB"
    trust_remote_code: bool = False  # also copy *.py files of hf_dir (remote-code checkpoints)
    overwrite: bool = False  # replace an existing non-empty save_hf_dir


@dataclass
class ResplitConfig:
    source_dir: str
    target_dir: str
    target_parallel_config: ParallelConfig = field(default_factory=ParallelConfig)
    source_parallel_config: Optional[ParallelConfig] = None  # if given, must match the source's split
    overwrite: bool = False  # replace a previous mm-convert output in target_dir


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


# what an mm-convert output directory holds (".release.tmp": left by an older mm-convert)
MM_OUTPUT = (TRACKER, RELEASE, HF_CONFIG_DIR, ".release.tmp")


def output_dir(key: str, path: str, overwrite: bool, inputs: Mapping[str, Optional[str]], mm_output: bool) -> str:
    """The real path of the output directory ``path`` (``--cfg.<key>``), checked before
    anything is read or written: it may not be, contain or lie inside any of ``inputs``
    ({key: path}, compared as real paths); it is never a directory holding a training
    checkpoint (tracker naming an iteration, ``iter_*``), and for an MM output (``mm_output``)
    nothing but a previous mm-convert output (tracker ``release``, ``release/``, ``hf_config/``);
    a non-empty one is replaced only with ``overwrite``."""
    out = os.path.realpath(path)
    for name, source in inputs.items():
        if source is not None and _nested(os.path.realpath(source), out):
            raise ValueError(f"{key} {path} and {name} {source} are the same directory or one contains the other; "
                             f"write to another {key}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"{key} {path} exists and is not a directory")
    if not os.path.isdir(out) or not os.listdir(out):
        return out
    training = training_checkpoint_in(out)
    if training is not None:
        raise FileExistsError(f"{key} {path} holds a training checkpoint ({training}); mm-convert never writes into "
                              f"one (not even with --cfg.overwrite True): choose another {key}")
    unrelated = sorted(n for n in os.listdir(out) if n not in MM_OUTPUT) if mm_output else []
    if unrelated:
        raise FileExistsError(f"{key} {path} holds {os.path.join(path, unrelated[0])}, which is not part of an "
                              f"mm-convert output ({TRACKER} 'release', {RELEASE}/, {HF_CONFIG_DIR}/): choose another "
                              f"{key}")
    if not overwrite:
        what = "a previous mm-convert output" if mm_output else "not empty"
        raise FileExistsError(f"{key} {path} exists and is {what}; remove it or pass --cfg.overwrite True")
    return out


def publish(out: str, write: Callable[[str], None]) -> None:
    """``write(directory)`` into ``out.tmp-<pid>``, then rename that to ``out``: an existing
    ``out`` is renamed aside first, removed once the new one is in place, and put back if
    that rename fails. On any failure the temporary directory is removed and ``out`` is as it
    was."""
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        write(tmp)
        if os.path.isdir(out):
            old = f"{out}.old-{os.getpid()}"
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
        hf_cfg = cfg.hf_config
        out_dir = output_dir("mm_dir", cfg.mm_dir, cfg.overwrite, {
            "hf_config.hf_dir": hf_cfg.hf_dir, "hf_config.vision_dir": hf_cfg.vision_dir,
            "hf_config.llm_dir": hf_cfg.llm_dir, "hf_config.projector_path": hf_cfg.projector_path}, mm_output=True)
        config, hf_tensors, side_dir = self.read_source(hf_cfg)
        where = os.path.join(side_dir, "config.json")
        _check_trust(config, where, cfg.trust_remote_code)
        info = self.info(config, where)
        tensors = self.spec.naming.to_mm(hf_tensors, info.layout, self.spec.text_family(config, where))
        check_complete(tensors, info, side_dir)
        prefix, text = text_section(config)
        check_text_shapes(tensors, text, prefix, config, where)
        parallel = cfg.parallel_config.resolved(info.llm_layers, info.vit_layers)
        check_divisible(info, parallel.tp_size)

        def write(directory: str) -> None:
            write_mm(directory, tensors, parallel, info, self.name)
            side = os.path.join(directory, HF_CONFIG_DIR)
            copy_side_files(side_dir, side, with_code=False)
            with open(os.path.join(side, "config.json"), "w") as f:
                json.dump(config, f, indent=2)

        publish(out_dir, write)
        return os.path.join(cfg.mm_dir, RELEASE)

    def mm_to_hf(self, cfg: MmToHfConfig) -> str:
        source = cfg.hf_config.hf_dir or os.path.join(cfg.mm_dir, HF_CONFIG_DIR)
        out_dir = output_dir("save_hf_dir", cfg.save_hf_dir, cfg.overwrite,
                             {"mm_dir": cfg.mm_dir, "hf_config.hf_dir": source}, mm_output=False)
        config = load_config(source)
        where = os.path.join(source, "config.json")
        _check_trust(config, where, cfg.trust_remote_code)
        info = self.info(config, where)
        tensors, found, _ = read_mm(cfg.mm_dir)
        _check_expected(found, cfg.parallel_config, cfg.mm_dir)
        check_complete(tensors, info, cfg.mm_dir)
        prefix, text = text_section(config)
        check_text_shapes(tensors, text, prefix, config, where)
        hf = self.spec.naming.to_hf(tensors, info.layout, self.spec.text_family(config, where), info.tie_word_embeddings)
        size = parse_size(cfg.max_shard_size)

        def write(directory: str) -> None:
            write_hf(directory, hf, size)
            copy_side_files(source, directory, with_code=cfg.trust_remote_code)

        publish(out_dir, write)
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
        out_dir = output_dir("save_hf_dir", cfg.save_hf_dir, cfg.overwrite,
                             {"hf_config.hf_dir": base_dir, "lora_dir": cfg.lora_dir}, mm_output=False)
        adapter = read_adapter(cfg.lora_dir)
        naming, text_family = self.spec.naming, self.spec.text_family(config, where)

        def resolve(name: str) -> Optional[str]:  # in-memory name (transformers >= 4.52) -> saved name
            mm = naming.mm_name(name, info.layout, text_family)
            return None if mm is None else naming.hf_name(mm, info.layout, text_family)

        merged = merge_tensors(read_hf_tensors(base_dir), adapter, resolve)
        size = parse_size(cfg.max_shard_size)

        def write(directory: str) -> None:
            write_hf(directory, merged, size, desc="merge_lora")
            copy_side_files(base_dir, directory, with_code=cfg.trust_remote_code)

        publish(out_dir, write)
        return cfg.save_hf_dir

    def resplit(self, cfg: ResplitConfig) -> str:
        out_dir = output_dir("target_dir", cfg.target_dir, cfg.overwrite, {"source_dir": cfg.source_dir},
                             mm_output=True)
        tensors, found, meta = read_mm(cfg.source_dir)
        _check_expected(found, cfg.source_parallel_config, cfg.source_dir)
        info = ModelInfo(**meta["model"]) if meta.get("model") else None
        llm_layers, vit_layers = sum(map(sum, found.llm_pp_layers)), sum(map(sum, found.vit_pp_layers))
        parallel = cfg.target_parallel_config.resolved(llm_layers, vit_layers)
        if info is not None:
            check_divisible(info, parallel.tp_size)
        side = os.path.join(cfg.source_dir, HF_CONFIG_DIR)

        def write(directory: str) -> None:
            write_mm(directory, tensors, parallel, info, self.name, meta.get("vocab_size"))
            if os.path.isdir(side):
                copy_side_files(side, os.path.join(directory, HF_CONFIG_DIR), with_code=False)

        publish(out_dir, write)
        return os.path.join(cfg.target_dir, RELEASE)


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
        tensors = llava_from_pieces(read_hf_tensors(hf.vision_dir), read_hf_tensors(hf.llm_dir),
                                    read_weights_file(hf.projector_path), hf.vision_dir, hf.projector_path)
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


# converters that read more than an HF directory (FamilySpec.converter -> class); the rest are ``Converter``
CONVERTER_CLASSES: Dict[str, type] = {cls.__name__: cls for cls in (LlavaConverter,)}


def converter(name: str) -> Converter:
    """The converter ``mm-convert`` calls ``name`` (``Qwen2VLConverter``, ...)."""
    return CONVERTER_CLASSES.get(name, Converter)(CONVERTERS[name])


CONVERTERS: Dict[str, FamilySpec] = {spec.converter: spec for spec in FAMILIES.values()}
