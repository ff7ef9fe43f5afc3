"""Checkpoint names: one declarative rename table per family, used in both directions by
loading (``msmm.models.load_hf_weights``), ``mm-convert`` (``hf_to_mm`` / ``mm_to_hf``) and the
PEFT adapter files.

MM names are msmm's parameter names (what ``state_dict()`` of the built model gives and what
the trainer saves). A rule is a pair of literal fragments (HF, MM), each optionally anchored
with ``^``/``$``; read HF -> MM it renames a key, read MM -> HF it gives the key back. A group
applies its rules below a prefix (``vision_model.`` -> ``vision_tower.``), so text rules never
touch vision keys. A family's ``Naming`` has:

* ``layouts``: the saved names of each checkpoint layout (``hf``; InternVL also ``remote``, the
  OpenGVLab remote-code files), written by ``mm_to_hf`` and by the adapter writer;
* ``aliases``: extra input prefixes (the in-memory names of transformers >= 4.52), read only;
* ``unfuse``: HF tensors stored fused whose MM form is split in equal row chunks;
* ``text_group``: the MM prefix of the text decoder, below which the text family's rules apply
  (``TEXT_RULES``: InternLM2 renames its modules; Qwen2 and Llama names are ours).

Adding a family adds one ``Naming`` here and names it in its ``msmm.registry`` entry.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .clip import is_openai_clip, openai_clip_to_hf
from .safetensors import Tensor

Rule = Tuple[str, str]  # (HF fragment, MM fragment), "^"/"$" anchors allowed
Group = Tuple[str, str, Sequence[Rule]]  # (HF prefix, MM prefix, rules below the prefix)
IGNORED = re.compile(r"rotary_emb\.inv_freq$")  # stale rotary buffers some checkpoints carry


def _pattern(fragment: str) -> Tuple[re.Pattern, str]:
    start, end = fragment.startswith("^"), fragment.endswith("$")
    core = fragment[1 if start else 0: len(fragment) - (1 if end else 0)]
    return re.compile(("^" if start else "") + re.escape(core) + ("$" if end else "")), core


def _apply(key: str, rules: Sequence[Rule], to_mm: bool) -> str:
    for hf, mm in rules:
        (pattern, _), (_, replacement) = (_pattern(hf), _pattern(mm)) if to_mm else (_pattern(mm), _pattern(hf))
        key = pattern.sub(replacement.replace("\\", "\\\\"), key)
    return key


def rename(key: str, groups: Sequence[Group], to_mm: bool) -> Optional[str]:
    """``key`` under the first group whose prefix starts it, or None (unexpected key)."""
    for hf, mm, rules in groups:
        old, new = (hf, mm) if to_mm else (mm, hf)
        if key.startswith(old):
            return new + _apply(key[len(old):], rules, to_mm)
    return None


@dataclass(frozen=True)
class Unfuse:
    """An HF tensor stored fused whose MM form is split in equal row chunks."""

    mm: re.Pattern  # MM name of the fused tensor, groups (stem, param)
    parts: Tuple[str, ...]  # MM names of the pieces replace the fused module name

    def fused_name(self, name: str) -> Optional[Tuple[str, str]]:
        """(stem, param) when ``name`` is one of the pieces of a fused tensor."""
        for part in self.parts:
            match = re.match(rf"^(.+)\.{re.escape(part)}\.(weight|bias)$", name)
            if match and self.mm.match(f"{match.group(1)}.qkv.{match.group(2)}"):
                return match.group(1), match.group(2)
        return None


INTERNLM2_RULES: List[Rule] = [
    ("^model.tok_embeddings.", "^model.embed_tokens."),
    (".attention.", ".self_attn."),
    (".feed_forward.", ".mlp."),
    (".attention_norm.", ".input_layernorm."),
    (".ffn_norm.", ".post_attention_layernorm."),
    ("^output.", "^lm_head."),
]
# text family -> rules from its checkpoint names to ours (below the text decoder's prefix)
TEXT_RULES: Dict[str, List[Rule]] = {"qwen2": [], "llama": [], "internlm2": INTERNLM2_RULES}


@dataclass(frozen=True)
class Naming:
    """One family's HF <-> MM names (see the module docstring)."""

    layouts: Mapping[str, Sequence[Group]]
    aliases: Mapping[str, Sequence[Group]] = field(default_factory=dict)
    unfuse: Mapping[str, Sequence[Unfuse]] = field(default_factory=dict)
    text_group: Optional[str] = None

    def groups(self, layout: str = "hf", text_family: Optional[str] = None) -> List[Group]:
        """The saved names of ``layout``, with the text family's rules below ``text_group``."""
        if layout not in self.layouts:
            raise ValueError(f"no checkpoint layout {layout!r}; known: {sorted(self.layouts)}")
        groups = list(self.layouts[layout])
        if text_family is not None and self.text_group is not None:
            if text_family not in TEXT_RULES:
                raise ValueError(f"unknown text family {text_family!r}; known: {sorted(TEXT_RULES)}")
            groups = [(hf, mm, list(rules) + TEXT_RULES[text_family]) if mm == self.text_group else (hf, mm, rules)
                      for hf, mm, rules in groups]
        return groups

    def read_groups(self, layout: str = "hf", text_family: Optional[str] = None) -> List[Group]:
        """What reading accepts: the aliases first, then the saved names."""
        return list(self.aliases.get(layout, [])) + self.groups(layout, text_family)

    def unfused(self, layout: str = "hf") -> Sequence[Unfuse]:
        return self.unfuse.get(layout, ())

    def to_mm(self, tensors: Mapping[str, Tensor], layout: str = "hf", text_family: Optional[str] = None,
              strict: bool = True) -> Dict[str, Tensor]:
        """HF tensors -> MM tensors (fused tensors split lazily). A key under no group is an
        error with ``strict``; without, it is kept as it is (a loader reports it)."""
        return to_mm(tensors, self.read_groups(layout, text_family), self.unfused(layout), strict)

    def to_hf(self, tensors: Mapping[str, Tensor], layout: str = "hf", text_family: Optional[str] = None,
              tie_word_embeddings: bool = False) -> Dict[str, Tensor]:
        """MM tensors -> the saved HF names of ``layout`` (pieces fused lazily; a tied head dropped)."""
        return to_hf(tensors, self.groups(layout, text_family), self.unfused(layout), tie_word_embeddings)

    def hf_name(self, name: str, layout: str = "hf", text_family: Optional[str] = None) -> Optional[str]:
        """The saved HF name of the MM name ``name`` (pieces of a fused tensor: their own name), or None."""
        return rename(name, self.groups(layout, text_family), to_mm=False)

    def mm_name(self, key: str, layout: str = "hf", text_family: Optional[str] = None) -> Optional[str]:
        """The MM name of an HF key (saved or in-memory name), or None."""
        return rename(key, self.read_groups(layout, text_family), to_mm=True)


def to_mm(tensors: Mapping[str, Tensor], groups: Sequence[Group], unfuse: Sequence[Unfuse],
          strict: bool = True) -> Dict[str, Tensor]:
    out: Dict[str, Tensor] = {}

    def add(name: str, t: Tensor, key: str) -> None:
        if name in out:
            raise ValueError(f"{t.source}: {key!r} maps to {name!r}, which {out[name].source} also maps to")
        out[name] = t

    for key, t in tensors.items():
        if IGNORED.search(key):
            continue
        name = rename(key, groups, to_mm=True)
        if name is None:
            if strict:
                raise KeyError(f"{t.source}: unexpected key {key!r} (expected names under "
                               f"{sorted({g[0] for g in groups})})")
            name = key
        rule = next((u for u in unfuse if u.mm.match(name)), None)
        if rule is None:
            add(name, t, key)
            continue
        stem, param = rule.mm.match(name).groups()
        k = len(rule.parts)
        if t.shape[0] % k:
            raise ValueError(f"{t.source}: fused {key!r} rows {t.shape[0]} do not split into {k} parts")
        rows = t.shape[0] // k
        for i, part in enumerate(rule.parts):
            load = (lambda t=t, i=i: t.load()[i * rows:(i + 1) * rows])
            add(f"{stem}.{part}.{param}", Tensor(t.dtype, (rows,) + t.shape[1:], load, t.source), key)
    return out


def to_hf(tensors: Mapping[str, Tensor], groups: Sequence[Group], unfuse: Sequence[Unfuse],
          tie_word_embeddings: bool = False) -> Dict[str, Tensor]:
    out: Dict[str, Tensor] = {}
    consumed = set()
    for name, t in tensors.items():
        if name in consumed or (tie_word_embeddings and re.search(r"(^|\.)lm_head\.weight$", name)):
            continue
        for rule in unfuse:
            fused = rule.fused_name(name)
            if fused is not None:
                stem, param = fused
                names = [f"{stem}.{p}.{param}" for p in rule.parts]
                missing = [n for n in names if n not in tensors]
                if missing:
                    raise KeyError(f"{t.source}: missing key {missing[0]!r} (fused with {name!r})")
                consumed.update(names)
                parts = [tensors[n] for n in names]
                load = (lambda parts=parts: np.concatenate([p.load() for p in parts], axis=0))
                rows = sum(p.shape[0] for p in parts)
                name, t = f"{stem}.qkv.{param}", Tensor(t.dtype, (rows,) + t.shape[1:], load, t.source)
                break
        key = rename(name, groups, to_mm=False)
        if key is None:
            raise KeyError(f"{t.source}: unexpected key {name!r}")
        out[key] = t
    return out


# ---- the families' tables -------------------------------------------------------------------

QWEN2_VL = Naming(  # Qwen2-VL and Qwen2.5-VL: our names are the Hub's
    layouts={"hf": [("visual.", "visual.", []), ("model.", "model.", []), ("lm_head.", "lm_head.", [])]},
    aliases={"hf": [("model.visual.", "visual.", []), ("model.language_model.", "model.", [])]},
)

_REMOTE_VISION_RULES: List[Rule] = [
    ("^embeddings.class_embedding$", "^embeddings.cls_token$"),
    ("^embeddings.patch_embedding.", "^embeddings.patch_embeddings.projection."),
    ("^embeddings.position_embedding$", "^embeddings.position_embeddings$"),
    ("^encoder.layers.", "^encoder.layer."),
    (".attn.proj.", ".attention.projection_layer."),
    (".attn.", ".attention."),
    (".norm1.", ".layernorm_before."),
    (".norm2.", ".layernorm_after."),
    (".ls1$", ".lambda_1$"),
    (".ls2$", ".lambda_2$"),
]
INTERNVL = Naming(  # InternVL2 / 2.5 / 3: HF-native (our names) or OpenGVLab remote code
    layouts={
        "hf": [("vision_tower.", "vision_tower.", []), ("multi_modal_projector.", "multi_modal_projector.", []),
               ("language_model.", "language_model.", [])],
        "remote": [("vision_model.", "vision_tower.", _REMOTE_VISION_RULES),
                   ("mlp1.", "multi_modal_projector.", [("^0.", "^layer_norm."), ("^1.", "^linear_1."),
                                                        ("^3.", "^linear_2.")]),
                   ("language_model.", "language_model.", [])],
    },
    aliases={"hf": [("model.vision_tower.", "vision_tower.", []),
                    ("model.multi_modal_projector.", "multi_modal_projector.", []),
                    ("model.language_model.", "language_model.model.", []),
                    ("lm_head.", "language_model.lm_head.", [])]},
    unfuse={"remote": [Unfuse(re.compile(r"^(vision_tower\.encoder\.layer\.\d+\.attention)\.qkv\.(weight|bias)$"),
                              ("q_proj", "k_proj", "v_proj"))]},
    text_group="language_model.",
)

LLAVA = Naming(  # LLaVA-1.5: HF's names without the CLIP wrapper level
    layouts={"hf": [("vision_tower.vision_model.", "vision_tower.", []),
                    ("multi_modal_projector.", "multi_modal_projector.", []),
                    ("language_model.", "language_model.", [])]},
    aliases={"hf": [("model.vision_tower.vision_model.", "vision_tower.", []),
                    ("model.multi_modal_projector.", "multi_modal_projector.", []),
                    ("model.language_model.", "language_model.model.", []),
                    ("lm_head.", "language_model.lm_head.", [])]},
    text_group="language_model.",
)

# LLaVA-1.5 from its pieces (mm-convert LlavaConverter without hf_dir, model.json section
# ckpt_path): a CLIP checkpoint (HF, or OpenAI's .pt), an HF Llama/Vicuna checkpoint and LLaVA's
# projector file (mm_projector.bin, or MindSpeed-MM's converted mlp.pt), named as one HF LLaVA checkpoint
_CLIP_TEXT_SIDE = re.compile(r"^(text_model\.|text_projection\.|visual_projection\.|logit_scale$)")
LLAVA_PROJECTOR_KEYS = {"model.mm_projector.0.weight": "multi_modal_projector.linear_1.weight",
                        "model.mm_projector.0.bias": "multi_modal_projector.linear_1.bias",
                        "model.mm_projector.2.weight": "multi_modal_projector.linear_2.weight",
                        "model.mm_projector.2.bias": "multi_modal_projector.linear_2.bias",
                        "encoder.linear_fc1.weight": "multi_modal_projector.linear_1.weight",
                        "encoder.linear_fc1.bias": "multi_modal_projector.linear_1.bias",
                        "encoder.linear_fc2.weight": "multi_modal_projector.linear_2.weight",
                        "encoder.linear_fc2.bias": "multi_modal_projector.linear_2.bias"}


def clip_to_llava(clip: Mapping[str, Tensor], path: str) -> Dict[str, Tensor]:
    """HF LLaVA names of a CLIP checkpoint's vision tensors (HF ``CLIPModel`` /
    ``CLIPVisionModel``, or OpenAI's ``visual.*``); the text side is dropped, another key is an
    error naming ``path``."""
    if is_openai_clip(clip):
        clip = openai_clip_to_hf(clip, path)
    tensors: Dict[str, Tensor] = {}
    for key, t in clip.items():
        if key.startswith("vision_model."):
            tensors["vision_tower." + key] = t
        elif not _CLIP_TEXT_SIDE.match(key) and not key.endswith("position_ids"):
            raise KeyError(f"{t.source}: unexpected key {key!r} in a CLIP checkpoint")
    return tensors


def llm_to_llava(llm: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """HF LLaVA names of a causal LM checkpoint's tensors."""
    return {"language_model." + key: t for key, t in llm.items()}


def projector_to_llava(projector: Mapping[str, Tensor], path: str) -> Dict[str, Tensor]:
    """HF LLaVA names of a projector file's tensors; an unknown key is an error naming ``path``."""
    tensors: Dict[str, Tensor] = {}
    for key, t in projector.items():
        if key not in LLAVA_PROJECTOR_KEYS:
            raise KeyError(f"{path}: unexpected key {key!r} (expected {sorted(LLAVA_PROJECTOR_KEYS)})")
        tensors[LLAVA_PROJECTOR_KEYS[key]] = t
    return tensors


def llava_from_pieces(clip: Mapping[str, Tensor], llm: Mapping[str, Tensor], projector: Mapping[str, Tensor],
                      clip_path: str, projector_path: str) -> Dict[str, Tensor]:
    """The HF LLaVA names of the pieces' tensors (CLIP's text side dropped); an unexpected key
    is an error naming its file."""
    return {**clip_to_llava(clip, clip_path), **llm_to_llava(llm), **projector_to_llava(projector, projector_path)}


# a text decoder's own checkpoint (a CausalLM: model.*, lm_head.*)
TEXT_NAMINGS: Dict[str, Naming] = {family: Naming(layouts={"hf": [("", "", rules)]})
                                   for family, rules in TEXT_RULES.items()}
