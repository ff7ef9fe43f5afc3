"""docs/compat.md: every MindSpeed-MM launch flag, model.json, data.json and inference-JSON key
msmm knows, and what it does with it (honoured / no effect, why / refused, why), from the
tables the readers use, so the page cannot drift from the code.

    python tools/compat_table.py            # write docs/compat.md
    python tools/compat_table.py --check    # exit 1 if docs/compat.md is not what the code says now
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Iterable, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from msmm.config import data_config, launch_flags, mindspeed_model  # noqa: E402
from msmm.config.train_args import build_parser  # noqa: E402
from msmm.infer import mindspeed_json  # noqa: E402

DOC = os.path.join(ROOT, "docs", "compat.md")
HEADER = """# MindSpeed-MM compatibility

What msmm does with each launch-script flag, `model.json`, `data.json` and inference-JSON key of
MindSpeed-MM's recipes for Qwen2-VL, Qwen2.5-VL, InternVL2/2.5/3 and LLaVA-1.5: **honoured**, **no
effect** (accepted and logged with the reason), **checked** (the value msmm's model computes with;
any other is refused naming the key) or **refused** (with the reason). Anything else is an error
naming the file and key, with the closest known one (a model.json or data.json key: a warning
with `msmm-train --allow-unknown-keys`). Generated from the readers' tables by
`tools/compat_table.py` (a test fails when this page is stale).
"""


def table(rows: Iterable[Tuple[str, str]], head: Tuple[str, str] = ("key", "msmm")) -> List[str]:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| `{key}` | {what} |" for key, what in rows]
    return lines + [""]


def launch_flags_section() -> List[str]:
    parser = build_parser()
    special = {**launch_flags.NO_EFFECT, **launch_flags.REFUSED}
    honoured = sorted(f for f in parser._option_string_actions if f.startswith("--") and f not in special
                      and f != "--help")
    rows = [(f, "honoured") for f in honoured]
    rows += [(f, f"no effect: {why}") for f, (_, why) in sorted(launch_flags.NO_EFFECT.items())]
    rows += [(f, f"refused: {why}") for f, (_, why) in sorted(launch_flags.REFUSED.items())]
    return ["## Launch-script flags (`msmm-train`)", "",
            "The launch scripts' `GPT_ARGS`, `MM_ARGS` and `OUTPUT_ARGS`; an architecture flag whose number "
            "differs from model.json's is logged naming both (model.json's is used).", "", *table(rows, ("flag", "msmm"))]


def model_json_section() -> List[str]:
    out = ["## model.json (MindSpeed-MM's spelling)", "",
           "Read by `msmm/config/mindspeed_model.py` into msmm's model.json. Families: "
           + ", ".join(f"`{k}` -> `{v}`" for k, v in mindspeed_model.FAMILIES.items()) + ".", ""]
    top = [("img_context_token_id", "honoured: `image_token_id`"), ("image_token_id", "honoured"),
           ("video_token_id", "honoured (Qwen2-VL; default 151656)"),
           ("vision_start_token_id", "honoured (Qwen2-VL; default 151652)"),
           ("text_encoder", "checked: only `null`"), ("video_encoder", "checked: only `null`"),
           ("patch", "no effect: switches of MindSpeed-MM's code patches")]
    top += [(k, h.doc) for k, h in mindspeed_model.INTERNVL_TOP.items()]
    out += ["### Top level", "", *table(top)]
    ids = {}
    for family, sections in mindspeed_model.SECTION_IDS.items():
        for path, mapping in sections.items():
            for upstream, ours in mapping.items():
                ids.setdefault(ours, set()).add(f"`{upstream or '(none)'}` in {family}")
    tables = {}  # one table per key set (the text decoders share one)
    for ours, keys in mindspeed_model.SECTION_KEYS.items():
        tables.setdefault(id(keys), (keys, []))[1].append(ours)
    for keys, models in tables.values():
        names = sorted(n for ours in models for n in ids.get(ours, ()))
        out += [f"### Section model_id {', '.join(names)} (msmm {', '.join(f'`{m}`' for m in models)})", ""]
        out += table((k, h.doc) for k, h in sorted(keys.items()))
    rows = [(k, f"no effect: {why}") for k, why in sorted(mindspeed_model.NO_EFFECT.items())]
    out += ["### Every section", "", *table(rows)]
    return out


def data_json_section() -> List[str]:
    rows = []
    for cls in (data_config.DataConfig, data_config.DatasetParam, data_config.BasicParameters,
                data_config.PreprocessParameters, data_config.TokenizerConfig, data_config.Attributes,
                data_config.DataloaderParam, data_config.CollateParam):
        section = cls.__name__
        rows += [(f"{section}.{f.name}", "honoured") for f in dataclasses.fields(cls) if f.name != "source"]
        rows += [(f"{section}.{k}", "no effect: msmm does not use it")
                 for k in sorted(data_config.UPSTREAM_UNUSED_KEYS.get(section, ()))]
    rows += [(f"{section}.{k}", f"no effect here: msmm reads it as `{where}` (a warning)")
             for (section, k), where in sorted(data_config.UPSTREAM_MOVED_KEYS.items())]
    return ["## data.json", "",
            "Keys by the section they belong to (`dataset_param` is `DatasetParam`, its `attr` `Attributes`...). "
            "`attr.images` / `attr.videos` may be `null` (no such column). A mistyped key is an error with a "
            "did-you-mean; `msmm-train --allow-unknown-keys` makes it a warning.", "", *table(rows)]


def inference_section() -> List[str]:
    m = mindspeed_json
    rows = [(k, "honoured (model sections, see model.json)") for k in m.MODEL_KEYS]
    rows += [(k, f"no effect: {why}") for k, why in sorted(m.NO_EFFECT.items())]
    rows += [("tokenizer." + k, "honoured" if k in ("from_pretrained", "model_max_length", "trust_remote_code")
              else "checked") for k in m.TOKENIZER_KEYS]
    rows += [(k, "honoured") for k in ("prompt", "prompts", "image_path", "file_path", "infer_data_type",
                                      "from_pretrained", "template", "dtype", "num_segments", "min_pixels",
                                      "max_pixels")]
    rows += [("image_processer_path", "no effect: msmm's CLIP preprocessing")]
    rows += [(f"generation_config.{k}", "honoured") for k in (*m.GENERATION_MAPPED, "eos_token_id", "max_length")]
    rows += [(f"generation_config.{k}", f"no effect: {why}") for k, why in sorted(m.GENERATION_NO_EFFECT.items())]
    rows += [(f"generation_config.{k}", "checked: equals the model's") for k in m.GENERATION_TOKEN_IDS]
    rows += [(f"generation_config.{k}", f"checked: only HF's default `{v}`, else refused")
             for k, v in sorted(m.GENERATION_DEFAULTS.items(), key=lambda kv: kv[0])]
    return ["## Inference JSON (`msmm-infer JSON [--load DIR]`)", "", *table(rows)]


def render() -> str:
    lines = [HEADER, *launch_flags_section(), *model_json_section(), *data_json_section(), *inference_section()]
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with docs/compat.md instead of writing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        with open(DOC) as f:
            stale = f.read() != text
        if stale:
            print(f"{DOC} is stale: run python tools/compat_table.py", file=sys.stderr)
        return int(stale)
    with open(DOC, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
