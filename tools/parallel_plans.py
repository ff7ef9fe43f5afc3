"""Regenerate the layout tables of docs/parallel.md from ``msmm-train --dry-run``'s planner.

    python tools/parallel_plans.py            # rewrites the text between the markers in docs/parallel.md
    python tools/parallel_plans.py --check    # exit 1 if docs/parallel.md is not what the planner says now

Each real-size recipe is planned with the arguments of its launch script in ``examples/`` (the
``msmm-train`` argv the script passes to msrun, recorded by running it with a stand-in ``msrun``)
plus the layout flags of each layout below: the script's own (data parallel only) and the
layouts MindSpeed-MM's launch scripts and the seeds use (their TP / PP / VPP sizes, per-section
``pipeline_num_layers`` and global batch = micro-batch x gradient-accumulation steps x DP), and
where those do not fit or are refused, one that fits. Nothing here is typed in by hand: every
number in the tables comes from ``msmm.train.plan.build_plan``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msmm.config.train_args import TrainArgsError, parse_train_args  # noqa: E402
from msmm.train.startup_checks import load_checked_data_config  # noqa: E402

DOC = ROOT / "docs" / "parallel.md"
BEGIN, END = "<!-- plans:begin -->", "<!-- plans:end -->"
TEXT, VISION = "text_decoder", "image_encoder.vision_encoder"
MSMM = "Ascend/MindSpeed-MM"


@dataclass
class Layout:
    label: str
    world: int
    flags: List[str] = field(default_factory=list)
    pipeline: Dict[str, list] = field(default_factory=dict)  # section -> pipeline_num_layers
    source: str = ""


@dataclass
class Recipe:
    title: str
    script: str  # the launch script whose msmm-train arguments are the base
    layouts: List[Layout]
    model: Optional[str] = None  # another model.json with the script's other arguments


def tp_pp(tp: int, pp: int, *extra: str) -> List[str]:
    return ["--tensor-model-parallel-size", str(tp), "--pipeline-model-parallel-size", str(pp), *extra]


def gbs(n: int) -> List[str]:
    return ["--global-batch-size", str(n)]


DIST = "--use-distributed-optimizer"
FULL = ["--recompute-granularity", "full"]
VIT_FIRST = {2: [32, 0], 4: [32, 0, 0, 0], 8: [32] + [0] * 7}

RECIPES = [
    Recipe("InternVL2-2B", "internvl2/finetune_internvl2_2B.sh", [
        Layout("script", 8, source="the launch script; MindSpeed-MM examples/mindspore/internvl2 runs TP 1, PP 1 too"),
    ]),
    Recipe("InternVL2-2B LoRA (r 128)", "internvl2/finetune_internvl2_lora_2B.sh", [
        Layout("script", 8, source="the launch script (XTuner tutorial's LoRA settings)"),
        Layout("script + full recompute", 8, FULL, source="the launch script with --recompute-granularity full"),
    ]),
    Recipe("InternVL2-8B", "internvl2/finetune_internvl2_8B.sh", [
        Layout("script", 8, source="the launch script"),
        Layout("script + distributed optimizer", 8, [DIST],
               source="the launch script with --use-distributed-optimizer"),
        Layout("MindSpeed-MM PP 4", 8, tp_pp(1, 4, DIST) + gbs(64 * 2),
               {TEXT: [6, 9, 9, 8], VISION: [24, 0, 0, 0]},
               f"{MSMM} examples/internvl2 finetune_internvl2_8B.sh + model_8B.json (GRAD_ACC_STEP 64)"),
        Layout("MindSpeed-MM PP 4 x VPP 3", 8,
               tp_pp(1, 4, DIST, "--virtual-pipeline-model-parallel-size", "3") + gbs(64 * 2),
               {TEXT: [[0, 0, 0, 1], [4, 4, 4, 4], [4, 4, 4, 3]], VISION: [[6, 7, 7, 4], [0, 0, 0, 0], [0, 0, 0, 0]]},
               f"{MSMM} examples/internvl2 finetune_internvl2_8B_vpp.sh + model_8B_vpp.json"),
    ]),
    Recipe("InternVL3-8B", "internvl3/finetune_internvl3_8B.sh", [
        Layout("script", 8, source="the launch script"),
        Layout("seed PP 4", 8, tp_pp(1, 4, DIST) + gbs(64 * 2), {TEXT: [6, 8, 8, 6], VISION: [24, 0, 0, 0]},
               "seeds/internvl3_mindspore_guide.md (llm_pp_layers [[6,8,8,6]], vit_pp_layers [[24,0,0,0]]); "
               f"{MSMM} finetune_internvl3_8B.sh (TP 1, PP 4, GRAD_ACC_STEP 64)"),
        Layout("seed PP 4 + full recompute", 8, tp_pp(1, 4, DIST, *FULL) + gbs(64 * 2),
               {TEXT: [6, 8, 8, 6], VISION: [24, 0, 0, 0]}, "the seed's layout with --recompute-granularity full"),
    ]),
    Recipe("InternVL3-78B", "internvl3/finetune_internvl3_78B.sh", [
        Layout("script", 8, source="the launch script"),
        Layout("seed TP 8 x PP 2", 16, tp_pp(8, 2, DIST, "--unaligned-linear") + gbs(32),
               {TEXT: [40, 40], VISION: [45, 0]},
               "seeds/internvl3_mindspore_guide.md (tp_size 8, llm_pp_layers [[40,40]], vit_pp_layers [[45,0]]); "
               f"{MSMM} finetune_internvl3_78B.sh (TP 8, PP 2, --unaligned-linear, GRAD_ACC_STEP 32): InternViT-6B's "
               "25 heads split 4, 3, ..., 3 over the TP ranks"),
        Layout("seed TP 8 x PP 2 x DP 4 (4 nodes of 16)", 64, tp_pp(8, 2, DIST, "--unaligned-linear") + gbs(32 * 4),
               {TEXT: [40, 40], VISION: [45, 0]},
               "the seed's layout on four nodes: DP 4 shards the optimizer state (one node's DP 1 keeps it whole)"),
        Layout("TP 1 x PP 16 x DP 4 (4 nodes of 16)", 64, tp_pp(1, 16, DIST) + gbs(32 * 4),
               {TEXT: [3, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 5, 5, 5, 5, 2], VISION: [45] + [0] * 15},
               "the same 64 devices without tensor parallelism: the first stage carries the frozen ViT and the "
               "embedding, the last the output head and the logits, so they get fewer text layers"),
    ]),
    Recipe("Qwen2-VL-7B", "qwen2vl/finetune_qwen2vl_7b.sh", [
        Layout("script", 8, source="the launch script"),
        Layout("script + distributed optimizer", 8, [DIST],
               source="the launch script with --use-distributed-optimizer"),
        Layout("MindSpeed-MM PP 4", 8, tp_pp(1, 4, DIST) + gbs(96 * 2), {TEXT: [1, 10, 10, 7], VISION: VIT_FIRST[4]},
               f"{MSMM} examples/qwen2vl finetune_qwen2vl_7b.sh + model_7b.json (GRAD_ACC_STEP 96)"),
    ]),
    Recipe("Qwen2-VL-72B", "qwen2vl/finetune_qwen2vl_7b.sh", [
        Layout("MindSpeed-MM TP 2 x PP 8, 1 node of 16", 16, tp_pp(2, 8, DIST, *FULL) + gbs(96),
               {TEXT: [5, 11, 11, 11, 11, 11, 11, 9], VISION: VIT_FIRST[8]},
               f"{MSMM} examples/qwen2vl finetune_qwen2vl_72b.sh + model_72b.json (16 NPUs a node, several nodes, "
               "recompute full, GRAD_ACC_STEP 96)"),
        Layout("MindSpeed-MM TP 2 x PP 8, 2 nodes of 16", 32, tp_pp(2, 8, DIST, *FULL) + gbs(96 * 2),
               {TEXT: [5, 11, 11, 11, 11, 11, 11, 9], VISION: VIT_FIRST[8]}, "the same on two nodes (DP 2)"),
    ], model="examples/qwen2vl/model_72b.json"),
    Recipe("Qwen2.5-VL-7B", "qwen2vl/finetune_qwen2vl_7b.sh", [
        Layout("Qwen2-VL-7B's script", 8, source="examples/qwen2vl/finetune_qwen2vl_7b.sh with this model.json"),
        Layout("MindSpeed-MM PP 2", 8, tp_pp(1, 2, DIST) + gbs(48 * 4), {TEXT: [12, 16], VISION: VIT_FIRST[2]},
               f"{MSMM} examples/qwen2.5vl finetune_qwen2_5_vl_7b.sh + model_7b.json (GRAD_ACC_STEP 48)"),
    ], model="examples/qwen2.5vl/model_7b.json"),
    Recipe("Qwen2.5-VL-72B", "qwen2vl/finetune_qwen2vl_7b.sh", [
        Layout("MindSpeed-MM TP 2 x PP 8, 2 nodes of 16", 32, tp_pp(2, 8, DIST) + gbs(96 * 2),
               {TEXT: [6, 11, 11, 11, 11, 11, 11, 8], VISION: VIT_FIRST[8]},
               f"{MSMM} examples/qwen2.5vl finetune_qwen2_5_vl_72b.sh + model_72b.json (GRAD_ACC_STEP 96)"),
        Layout("the same + full recompute", 32, tp_pp(2, 8, DIST, *FULL) + gbs(96 * 2),
               {TEXT: [6, 11, 11, 11, 11, 11, 11, 8], VISION: VIT_FIRST[8]}, "with --recompute-granularity full"),
    ], model="examples/qwen2.5vl/model_72b.json"),
    Recipe("LLaVA-1.5-7B (pretraining)", "llava1.5/pretrain_llava1_5.sh", [
        Layout("script", 8, source="the launch script (projector only, micro-batch 32 padded to 2048 tokens)"),
        Layout("script + full recompute", 8, FULL, source="the launch script with --recompute-granularity full"),
    ]),
]


def script_argv(script: str, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None) -> List[str]:
    """The msmm-train arguments a launch script hands to msrun (run with a recording ``msrun``,
    in ``cwd`` with ``env`` added to the environment). A script that goes on after msrun (the
    tiny ones report the msrun logs, which the recording msrun leaves absent) may then fail:
    the arguments are recorded by then."""
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "argv"
        shell = (f'msrun() {{ printf "%s\\n" "$@" > {shlex.quote(str(record))}; }}; export -f msrun; '
                 f'bash {shlex.quote(str(ROOT / "examples" / script))}')
        done = subprocess.run(["bash", "-c", shell], cwd=cwd or tmp, capture_output=True, timeout=120,
                              env=dict(os.environ, **(env or {})))
        if not record.exists():
            raise RuntimeError(f"examples/{script} never called msrun: {done.stderr[-2000:]}")
        argv = record.read_text().splitlines()
    return argv[argv.index("msmm/train/cli.py") + 1:]


def layout_argv(recipe: Recipe, layout: Layout) -> List[str]:
    argv = script_argv(recipe.script) + layout.flags + ["--dry-run", "--world-size", str(layout.world)]
    if recipe.model:
        argv += ["--mm-model", recipe.model]
    return argv


@dataclass
class Outcome:
    recipe: Recipe
    layout: Layout
    argv: List[str]
    plan: object = None  # msmm.train.plan.Plan
    error: Optional[str] = None


def plan_layout(recipe: Recipe, layout: Layout) -> Outcome:
    from msmm.train.plan import build_plan

    argv = layout_argv(recipe, layout)
    cwd = os.getcwd()
    os.chdir(ROOT)  # the scripts name model.json / data.json relative to the repository root
    try:
        args = parse_train_args(argv)
        data = load_checked_data_config(args)
        return Outcome(recipe, layout, argv, plan=build_plan(args, data, layout.pipeline))
    except (TrainArgsError, ValueError, KeyError) as err:
        return Outcome(recipe, layout, argv, error=str(err))
    finally:
        os.chdir(cwd)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f}"


def _layout_cell(o: Outcome) -> str:
    if o.plan is None:
        return "-"
    lay = o.plan.checked.layout
    text = f"TP {lay.tp} x PP {lay.pp}" + (f" (VPP {lay.vpp})" if lay.vpp > 1 else "") + f" x DP {lay.dp}"
    return text + (f" x CP {lay.cp}" if lay.cp > 1 else "")


def render(outcomes: List[Outcome]) -> str:
    out = ["| recipe | layout | devices | TP x PP x DP | seq | recompute | fullest device (GiB) | fits 64 GiB |",
           "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        args = parse_train_args(o.argv)
        if o.plan is None:
            verdict, worst = f"refused: {o.error.split(';')[0].split(' (')[0]}", "-"
        else:
            w = o.plan.worst()
            worst = f"{_gib(w.total)} (stage {w.stage})"
            verdict = "**yes**" if o.plan.fits else "no"
            if o.plan.fits and w.total > 0.9 * o.plan.device_bytes:
                verdict = "yes, tight (> 90%)"
        out.append(f"| {o.recipe.title} | {o.layout.label} | {o.layout.world} | {_layout_cell(o)} | "
                   f"{args.seq_length} | {args.recompute_granularity or 'off'} | {worst} | {verdict} |")
    out.append("")
    for o in outcomes:
        out.append(f"#### {o.recipe.title}: {o.layout.label}")
        out.append("")
        out.append(f"Source: {o.layout.source}. Command (`msmm-train` arguments after the script's):")
        out.append("")
        extra = o.layout.flags + (["--mm-model", o.recipe.model] if o.recipe.model else [])
        extra += ["--dry-run", "--world-size", str(o.layout.world)]
        pipeline = "".join(f"; model.json `{k}.pipeline_num_layers` {v}" for k, v in o.layout.pipeline.items())
        out.append(f"`bash examples/{o.recipe.script}` arguments + `{' '.join(extra)}`{pipeline}")
        out.append("")
        if o.plan is None:
            out.append(f"Refused (exit 2): `{o.error}`")
            out.append("")
            continue
        p = o.plan
        out.append(f"Parameters {p.total_params / 1e9:.3f}B ({p.trainable_params / 1e9:.3f}B trainable); "
                   f"{p.checked.num_microbatches} micro-batches per step; vision input per sample: {p.vision.how}.")
        out.append("")
        out.append("| stage | holds | params / device | weights | grads | optimizer | activations (in flight) "
                   "| total GiB |")
        out.append("|---|---|---|---|---|---|---|---|")
        for s in p.stages:
            out.append(f"| {s.stage} | {s.holds} | {s.params / 1e9:.3f}B | {_gib(s.weights)} | "
                       f"{_gib(s.grads)} | {_gib(s.optimizer)} | {_gib(s.activations)} ({s.in_flight}) | "
                       f"{_gib(s.total)} |")
        out.append("")
        if p.checked.layout.tp > 1:
            from msmm.train.plan import tp_summary

            out.append(f"Tensor parallel: {tp_summary(p)}.")
            out.append("")
        for refusal in p.refusals:
            out.append(f"- not implemented yet, a real run stops: {refusal}")
        if p.refusals:
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def model_table() -> str:
    """Per model.json: sizes and the tensor-parallel sizes its split counts allow."""
    from adapters.meta_torch import models_on_meta
    from msmm.train.parallel.validate import tensor_parallel_counts, tensor_parallel_sizes

    rows = ["| model.json | parameters (trainable) | text layers x hidden, heads / KV groups, FFN | vision layers x "
            "hidden, heads, FFN | TP sizes <= 16 that divide every split count |", "|---|---|---|---|---|"]
    paths = []
    for recipe in RECIPES:
        path = recipe.model or parse_train_args(script_argv(recipe.script)).mm_model
        if path not in paths:
            paths.append(path)
    with models_on_meta() as models:
        for path in paths:
            config = models.load_model_config(str(ROOT / path))
            config.source = path
            model = models.build_model(config)
            total = sum(p.numel() for p in model.parameters())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            t, v = config.sections[TEXT].config, config.sections[VISION].config
            counts = dict(tensor_parallel_counts(config))
            rows.append(f"| `{path}` | {total / 1e9:.3f}B ({trainable / 1e9:.3f}B) | {t['num_layers']} x "
                        f"{t['hidden_size']}, {counts[TEXT + '.num_attention_heads']} / "
                        f"{counts[TEXT + '.num_query_groups']}, {t['ffn_hidden_size']} | {v['num_layers']} x "
                        f"{v['hidden_size']}, {v['num_attention_heads']}, {v['ffn_hidden_size']} | "
                        f"{tensor_parallel_sizes(config, 16)} |")
    return "\n".join(rows) + "\n"


def generate() -> str:
    return model_table() + "\n" + render([plan_layout(r, layout) for r in RECIPES for layout in r.layouts])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with docs/parallel.md instead of writing")
    opts = parser.parse_args(argv)
    doc = DOC.read_text()
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{generate()}{END}{tail}"
    if opts.check:
        if new != doc:
            print(f"{DOC}: the tables differ from what tools/parallel_plans.py generates now; rerun it",
                  file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
