"""``evaluate_*.json``: MindSpeed-MM's evaluation config as published, plus msmm's keys.

MindSpeed-MM's keys read here: ``dataset_path``, ``evaluation_dataset`` (``ai2d_test``,
``mmmu_dev_val``, ``docvqa_val``, ``chartqa_test``; msmm adds ``custom_mcq``, ``custom_vqa``),
``evaluation_model`` (names the output files; ``internvl*``, ``qwen2_vl*``, ``qwen2_5_vl*``,
``llava*`` also give the family), ``result_output_path``, ``model_id`` (``InternVLPipeline``,
``Qwen2VlPipeline``, ``llava``: the family when ``evaluation_model`` does not say), ``template``
(InternVL chat template), ``tokenizer.from_pretrained`` (the HF directory, also of the weights
when it holds a config.json), ``from_pretrained`` (InternVL's: an HF dir or an MM checkpoint dir;
a ``.pt`` pickle is refused), ``min_pixels`` / ``max_pixels`` (Qwen2-VL), ``generation_config``
(HF keys: ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``,
``repetition_penalty``, ``eos_token_id``, ``pad_token_id``; the other HF keys are accepted and
ignored). The model architecture blocks (``image_encoder``, ``text_decoder``, ...) are accepted
and not needed: the architecture comes from the HF directory's config.json.

msmm's keys: ``model`` ``{"family", "from_pretrained" (HF dir), "ckpt_path" (MM checkpoint,
e.g. msmm-train's save dir; MindSpeed-MM's scripts pass it as --load), "adapter" (HF PEFT LoRA
adapter dir)}``, ``batch_size`` (default 1), ``prompt_style`` (``vlmevalkit`` | ``question``),
``system`` (replaces the template's system prompt), ``max_tiles`` (InternVL), ``metric``
(``custom_vqa``: ``exact_match`` | ``relaxed_accuracy`` | ``anls``), ``seed`` (sampling).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Optional

from ..registry import FAMILIES as REGISTRY
from .datasets import DATASETS, DatasetSpec
from .prompts import FAMILIES, PROMPT_STYLES


class EvalConfigError(ValueError):
    pass


GENERATION_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty")


@dataclass
class EvalConfig:
    path: str
    dataset_path: str
    dataset: str
    model_name: str
    output_dir: str
    family: str
    hf_dir: str
    tokenizer_path: str
    ckpt_path: Optional[str] = None
    adapter: Optional[str] = None
    template: Optional[str] = None
    system: Optional[str] = None
    prompt_style: str = "vlmevalkit"
    min_pixels: Optional[int] = None
    max_pixels: Optional[int] = None
    max_tiles: Optional[int] = None
    batch_size: int = 1
    generation: Dict[str, Any] = field(default_factory=dict)
    stop_token_ids: List[int] = field(default_factory=list)
    pad_token_id: Optional[int] = None
    seed: int = 0
    trust_remote_code: bool = False
    metric: Optional[str] = None  # custom_vqa

    @property
    def spec(self) -> DatasetSpec:
        spec = DATASETS[self.dataset]
        return replace(spec, metric=self.metric) if self.metric else spec

    def record(self) -> Dict[str, Any]:
        """What the answers depend on (compared when resuming)."""
        out = asdict(self)
        for key in ("path", "output_dir", "model_name"):
            out.pop(key)
        for key in ("dataset_path", "hf_dir", "tokenizer_path", "ckpt_path", "adapter"):
            if out[key]:
                out[key] = os.path.abspath(out[key])
        return out


def _family_named(name: str) -> Optional[str]:
    """The registry family whose name or alias (lower case) starts ``name``, the longest such:
    ``internvl2_8b`` -> internvl, ``qwen2vl_7b`` / ``qwen2_vl_7b`` -> qwen2_vl,
    ``qwen2_5_vl_7b`` -> qwen2_5_vl, ``llava_1_5`` -> llava."""
    matches = [(len(spelling), spec.name) for spec in REGISTRY.values()
               for spelling in (spec.name.lower(),) + tuple(a.lower() for a in spec.aliases) if name.startswith(spelling)]
    return max(matches)[1] if matches else None


def _family(cfg: Dict[str, Any], where: str) -> str:
    explicit = (cfg.get("model") or {}).get("family") or cfg.get("family")
    if explicit:
        if explicit not in FAMILIES:
            raise EvalConfigError(f"{where}: model.family must be one of {FAMILIES}, got {explicit!r}")
        return explicit
    qwen2_5_text = str((cfg.get("text_decoder") or {}).get("model_id", "")) == "qwen2_5_lm"
    name = str(cfg.get("evaluation_model", "")).lower().replace(".", "_").replace("-", "_")
    # then MindSpeed-MM's pipeline model_id (InternVLPipeline, Qwen2VlPipeline, llava)
    family = _family_named(name) or _family_named(str(cfg.get("model_id", "")).lower())
    if family == "qwen2_vl" and qwen2_5_text:
        return "qwen2_5_vl"  # MindSpeed-MM's Qwen2.5-VL json names its model qwen2_vl_7b / Qwen2VlPipeline
    if family is not None:
        return family
    raise EvalConfigError(f"{where}: cannot tell the model family: set model.family to one of {FAMILIES} "
                          f"(evaluation_model {cfg.get('evaluation_model')!r}, model_id {cfg.get('model_id')!r})")


def _is_hf_dir(path: Optional[str]) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "config.json"))


def load_eval_config(path: str, load: Optional[str] = None, adapter: Optional[str] = None,
                     overrides: Optional[Dict[str, Any]] = None) -> EvalConfig:
    """The evaluation config of ``path``; ``load`` (``--load``): an MM checkpoint over the HF
    weights; ``adapter``: a PEFT LoRA adapter dir; ``overrides``: top-level keys replaced."""
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise EvalConfigError(f"{path}: no such config file") from None
    except json.JSONDecodeError as err:
        raise EvalConfigError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(cfg, dict):
        raise EvalConfigError(f"{path}: expected a JSON object")
    cfg.update(overrides or {})
    for key in ("dataset_path", "evaluation_dataset", "result_output_path"):
        if not isinstance(cfg.get(key), str) or not cfg[key]:
            raise EvalConfigError(f"{path}: {key} is required (a string)")
    if cfg["evaluation_dataset"] not in DATASETS:
        raise EvalConfigError(f"{path}: evaluation_dataset must be one of {sorted(DATASETS)}, "
                              f"got {cfg['evaluation_dataset']!r}")
    family = _family(cfg, path)
    model = cfg.get("model") or {}
    if not isinstance(model, dict):
        raise EvalConfigError(f"{path}: model must be an object {{family, from_pretrained, ckpt_path, adapter}}")
    unknown = sorted(set(model) - {"family", "from_pretrained", "ckpt_path", "adapter"})
    if unknown:
        raise EvalConfigError(f"{path}: model.{unknown[0]}: unknown key; known: adapter, ckpt_path, family, "
                              "from_pretrained")
    tokenizer = cfg.get("tokenizer") or {}
    tokenizer_path = tokenizer.get("from_pretrained")
    hf_dir, ckpt = model.get("from_pretrained"), model.get("ckpt_path") or load
    top = cfg.get("from_pretrained")  # MindSpeed-MM's InternVL json: the weights
    if isinstance(top, str) and top:
        if os.path.isfile(top):
            raise EvalConfigError(f"{path}: from_pretrained {top!r} is a file (a torch pickle); msmm does not "
                                  "unpickle checkpoints: convert the model with mm-convert (hf_to_mm) and pass the "
                                  "MM directory as --load, or set model.from_pretrained to the HF directory")
        if _is_hf_dir(top):
            hf_dir = hf_dir or top
        else:
            ckpt = ckpt or top
    if not hf_dir and _is_hf_dir(tokenizer_path):
        hf_dir = tokenizer_path
    if not hf_dir:
        raise EvalConfigError(f"{path}: no HF model directory: set model.from_pretrained (a directory with "
                              "config.json), or tokenizer.from_pretrained to one")
    if not _is_hf_dir(hf_dir):
        raise EvalConfigError(f"{path}: model.from_pretrained {hf_dir!r} holds no config.json")
    for key, value in (("ckpt_path / --load", ckpt), ("adapter", model.get("adapter") or adapter)):
        if value and not os.path.isdir(value):
            raise EvalConfigError(f"{path}: {key} {value!r} is not a directory")
    style = cfg.get("prompt_style", "vlmevalkit")
    if style not in PROMPT_STYLES:
        raise EvalConfigError(f"{path}: prompt_style must be one of {PROMPT_STYLES}, got {style!r}")
    gen_in = cfg.get("generation_config") or {}
    if not isinstance(gen_in, dict):
        raise EvalConfigError(f"{path}: generation_config must be an object")
    generation = {k: gen_in[k] for k in GENERATION_KEYS if gen_in.get(k) is not None}
    if generation.get("top_p") is None:
        generation.pop("top_p", None)
    eos = gen_in.get("eos_token_id")
    stop = [eos] if isinstance(eos, int) else list(eos or [])
    if not all(isinstance(i, int) for i in stop):
        raise EvalConfigError(f"{path}: generation_config.eos_token_id must be an id or a list of ids, got {eos!r}")
    batch = cfg.get("batch_size", 1)
    if not isinstance(batch, int) or batch < 1:
        raise EvalConfigError(f"{path}: batch_size must be a positive integer, got {batch!r}")
    metric = cfg.get("metric")
    if metric is not None:
        from .metrics import VQA_METRICS

        if cfg["evaluation_dataset"] != "custom_vqa" or metric not in VQA_METRICS:
            raise EvalConfigError(f"{path}: metric is for custom_vqa, one of {sorted(VQA_METRICS)}; got {metric!r}")
    return EvalConfig(
        path=path, dataset_path=cfg["dataset_path"], dataset=cfg["evaluation_dataset"],
        model_name=str(cfg.get("evaluation_model") or family), output_dir=cfg["result_output_path"],
        family=family, hf_dir=hf_dir, tokenizer_path=tokenizer_path or hf_dir, ckpt_path=ckpt,
        adapter=model.get("adapter") or adapter, template=cfg.get("template"), system=cfg.get("system"),
        prompt_style=style, min_pixels=cfg.get("min_pixels"), max_pixels=cfg.get("max_pixels"),
        max_tiles=cfg.get("max_tiles"), batch_size=batch, generation=generation, stop_token_ids=stop,
        pad_token_id=gen_in.get("pad_token_id"), seed=int(cfg.get("seed", 0)),
        trust_remote_code=bool(tokenizer.get("trust_remote_code", False)), metric=metric)
