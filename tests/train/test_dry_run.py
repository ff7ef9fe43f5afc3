"""``msmm-train --dry-run`` on every real-size recipe (no weights, no data, no MindSpore start),
every bad layout stopping with a message naming its flags / keys (in the dry run and, where the
layout is otherwise runnable, in a real run before anything is built), and the activation and
pipeline formulas against Korthikanti et al. 2022's closed forms."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import pytest

from msmm.train.cli import main
from msmm.train.plan import (ActivationSettings, LayerShape, _in_flight, layer_activation_bytes)
from msmm.train.parallel.validate import SPLITTABLE_VISION_ENCODERS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import parallel_plans  # noqa: E402  (tools/parallel_plans.py: the recipes and the seeds' layouts)

LAYOUTS = [(r, layout) for r in parallel_plans.RECIPES for layout in r.layouts]


@pytest.fixture(autouse=True)
def no_real_training(monkeypatch):
    """A real run these tests expect to stop at start-up must never get to start MindSpore (and
    train a real-size model on this CPU) because a check let it through."""
    from msmm import runtime

    def refuse(*args, **kwargs):
        raise AssertionError("msmm-train got past its start-up checks to runtime.start()")

    monkeypatch.setattr(runtime, "start", refuse)


@pytest.mark.parametrize("recipe, layout", LAYOUTS, ids=[f"{r.title} | {lay.label}" for r, lay in LAYOUTS])
def test_dry_run_of_every_recipe_and_layout(recipe, layout, tmp_path, monkeypatch, capsys):
    """The CLI itself, on the launch script's arguments plus the layout's (model.json with the
    layout's pipeline_num_layers). Exit 0 when it fits, 3 when not, 2 when refused; the printed
    stage table is the plan's, and with TP 1 the stages' parameters add up to the model's."""
    monkeypatch.chdir(ROOT)
    argv = parallel_plans.layout_argv(recipe, layout)
    if layout.pipeline:
        with open(argv[len(argv) - 1 - argv[::-1].index("--mm-model") + 1]) as f:
            model = json.load(f)
        for path, value in layout.pipeline.items():
            node = model
            for part in path.split("."):
                node = node[part]
            node["pipeline_num_layers"] = value
        (tmp_path / "model.json").write_text(json.dumps(model))
        argv += ["--mm-model", str(tmp_path / "model.json")]
    outcome = parallel_plans.plan_layout(recipe, layout)
    code = main(argv)
    out, err = capsys.readouterr()
    if outcome.plan is None:
        assert code == 2 and err.startswith("msmm-train: ") and outcome.error.split(";")[0] in err
        return
    plan = outcome.plan
    assert code == (0 if plan.fits else 3), err
    assert f"world {layout.world} (--world-size)" in out
    for stage in plan.stages:
        assert f"\n{stage.stage} | {stage.holds} | {stage.params:,} |" in out
    lay = plan.checked.layout
    if lay.tp == 1:  # every parameter on exactly one stage
        assert sum(s.params for s in plan.stages) == plan.total_params
    assert ("\nfits:" in out) == plan.fits and ("\ndoes not fit:" in out) == (not plan.fits)
    assert ("msmm-train: --dry-run: does not fit: pipeline stage" in err) == (not plan.fits)
    vision = plan.checked.vision
    refused_split = len(vision.slots()) > 1 and vision.model_id not in SPLITTABLE_VISION_ENCODERS
    assert refused_split == any("vision encoder split over pipeline stages" in r for r in plan.refusals)


def test_docs_tables_are_the_planners():
    """docs/parallel.md's tables are what tools/parallel_plans.py generates from the planner now."""
    assert parallel_plans.main(["--check"]) == 0, "rerun: python tools/parallel_plans.py"


def test_dry_run_allocates_no_weights_and_starts_no_device(tmp_path):
    """InternVL3-78B (157 GB of bf16 weights) in a subprocess that would fail if MindSpore were
    started on the Ascend device this machine lacks: exit 3 (does not fit on 8), small peak RSS."""
    argv = parallel_plans.script_argv("internvl3/finetune_internvl3_78B.sh")
    env = dict(os.environ, MSMM_DEVICE="Ascend", PYTHONPATH=ROOT)
    # the dry run's own peak RSS: VmHWM of its process image (ru_maxrss would also count pytest's
    # pages at the fork, kept across exec, and RUSAGE_CHILDREN every earlier child of pytest)
    runner = tmp_path / "dry_run.py"
    runner.write_text("import sys\n"
                      "from msmm.train.cli import main\n"
                      "code = main(sys.argv[2:])\n"
                      "peak = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
                      "open(sys.argv[1], 'w').write(peak.split()[1])\n"
                      "sys.exit(code)\n")
    peak_file = tmp_path / "peak_kib"
    done = subprocess.run([sys.executable, str(runner), str(peak_file), *argv, "--dry-run", "--world-size", "8"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert "78.408B" in done.stdout and "does not fit: stage 0" in done.stdout
    peak_kib = int(peak_file.read_text())
    assert peak_kib < 3 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


# ---- bad layouts ----------------------------------------------------------------------------------

M8, M78 = "examples/internvl3/model_8B.json", "examples/internvl3/model_78B.json"
DATA = "examples/internvl3/data_8B.json"
BASE = ["--mm-data", DATA, "--micro-batch-size", "1", "--train-iters", "1", "--lr", "1e-5", "--seq-length", "8192",
        "--bf16"]


def _model(tmp_path, source: str, text=None, vision=None, projector=None) -> str:
    with open(os.path.join(ROOT, source)) as f:
        model = json.load(f)
    for section, value in ((model["text_decoder"], text), (model["image_encoder"]["vision_encoder"], vision),
                           (model["image_encoder"]["vision_projector"], projector)):
        if value is not None:
            section["pipeline_num_layers"] = value
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    return str(path)


# (id, model.json, pipeline_num_layers (text, vision, projector), world, flags, message, also in a real run)
BAD = [
    ("tp_vision_heads", M78, (None, None, None), 16, ["--tensor-model-parallel-size", "8", "--global-batch-size", "2"],
     "--tensor-model-parallel-size 8 does not divide image_encoder.vision_encoder.num_attention_heads 25", True),
    ("tp_text_heads", M8, (None, None, None), 8, ["--tensor-model-parallel-size", "8", "--global-batch-size", "1"],
     "--tensor-model-parallel-size 8 does not divide text_decoder.num_attention_heads 28, "
     "text_decoder.num_query_groups 4", True),
    ("unaligned", M78, (None, None, None), 32,
     ["--tensor-model-parallel-size", "32", "--unaligned-linear", "--global-batch-size", "2"],
     "--unaligned-linear: --tensor-model-parallel-size 32 is more than image_encoder.vision_encoder.num_attention_heads "
     "25", True),
    ("world", M8, (None, None, None), 6, ["--tensor-model-parallel-size", "4", "--global-batch-size", "6"],
     "the world size 6 (msrun workers) is not divisible by --tensor-model-parallel-size 4 x "
     "--pipeline-model-parallel-size 1 x --context-parallel-size 1 = 4", True),
    ("global_batch", M8, (None, None, None), 8, ["--global-batch-size", "12"],
     "--global-batch-size 12 is not a multiple of --micro-batch-size 1 x the data-parallel size 8", True),
    ("lora_tp", M8, (None, None, None), 2, ["--tensor-model-parallel-size", "2", "--lora-r", "8",
                                            "--global-batch-size", "1"],
     "LoRA (--lora-r or a model.json lora block) with --tensor-model-parallel-size 2", True),
    ("sp_seq", M8, (None, None, None), 4, ["--tensor-model-parallel-size", "4", "--sequence-parallel",
                                           "--seq-length", "8190", "--global-batch-size", "1"],
     "--sequence-parallel: --seq-length 8190 is not divisible by --tensor-model-parallel-size 4", True),
    ("pp_sum", M8, ([6, 8, 8, 5], [24, 0, 0, 0], None), 8, ["--pipeline-model-parallel-size", "4",
                                                           "--global-batch-size", "2"],
     "text_decoder.pipeline_num_layers = [6, 8, 8, 5] adds up to 27 layers, text_decoder.num_layers is 28", False),
    ("pp_entries", M8, ([6, 8, 8, 6], None, None), 4, ["--pipeline-model-parallel-size", "2",
                                                      "--global-batch-size", "2"],
     "text_decoder.pipeline_num_layers = [6, 8, 8, 6] has [4] entries per chunk, --pipeline-model-parallel-size is 2",
     False),
    ("pp_vision_entries", M8, ([14, 14], [24, 0, 0], None), 2, ["--pipeline-model-parallel-size", "2",
                                                               "--global-batch-size", "1"],
     "image_encoder.vision_encoder.pipeline_num_layers = [24, 0, 0] has [3] entries per chunk", False),
    ("pp_uneven", M8, (None, None, None), 3, ["--pipeline-model-parallel-size", "3", "--global-batch-size", "3"],
     "text_decoder.num_layers 28 (", False),
    ("pp_empty_stage", M8, ([28, 0], [24, 0], None), 2, ["--pipeline-model-parallel-size", "2",
                                                         "--global-batch-size", "2"],
     "pipeline stage 1 holds no layer", False),
    ("pp_vision_after_text", M8, ([14, 14], [0, 24], None), 2, ["--pipeline-model-parallel-size", "2",
                                                                "--global-batch-size", "2"],
     "image_encoder.vision_encoder.pipeline_num_layers [0, 24] puts vision layers on stage 1, after the first text "
     "layers", False),
    ("vpp_flat_list", M8, ([6, 8, 8, 6], None, None), 8,
     ["--pipeline-model-parallel-size", "4", "--virtual-pipeline-model-parallel-size", "2", "--global-batch-size", "8"],
     "has 1 virtual chunk(s), --virtual-pipeline-model-parallel-size is 2", False),
    ("vpp_flag_missing", M8, ([[3, 4, 4, 3], [3, 4, 4, 3]], [[24, 0, 0, 0], [0, 0, 0, 0]], None), 8,
     ["--pipeline-model-parallel-size", "4", "--global-batch-size", "8"],
     "text_decoder.pipeline_num_layers has 2 virtual chunks (a list of lists): pass "
     "--virtual-pipeline-model-parallel-size 2", False),
    ("vpp_too_few_layers", M8, (None, None, None), 8,
     ["--pipeline-model-parallel-size", "4", "--virtual-pipeline-model-parallel-size", "8", "--global-batch-size", "8"],
     "text_decoder.num_layers 28 (", False),
    ("vpp_per_stage", M8, (None, None, None), 8,
     ["--pipeline-model-parallel-size", "4", "--num-layers-per-virtual-pipeline-stage", "3",
      "--global-batch-size", "8"],
     "--num-layers-per-virtual-pipeline-stage 3: text_decoder.num_layers 28 / --pipeline-model-parallel-size 4 = 7 "
     "layers per stage, which is not a multiple of 3", False),
    ("vpp_both", M8, (None, None, None), 8,
     ["--pipeline-model-parallel-size", "4", "--num-layers-per-virtual-pipeline-stage", "7",
      "--virtual-pipeline-model-parallel-size", "1", "--global-batch-size", "8"],
     "--virtual-pipeline-model-parallel-size and --num-layers-per-virtual-pipeline-stage both set", False),
    ("vpp_micro_batches", M8, (None, None, None), 8,
     ["--pipeline-model-parallel-size", "4", "--virtual-pipeline-model-parallel-size", "7", "--global-batch-size", "6"],
     "= 3, divisible by --pipeline-model-parallel-size 4", False),
    ("cp_seq", M8, (None, None, None), 6, ["--context-parallel-size", "3", "--global-batch-size", "2"],
     "--seq-length 8192 is not divisible by 2 x --context-parallel-size 3 = 6", False),
    ("cp_ulysses_heads", M8, (None, None, None), 8,
     ["--context-parallel-size", "8", "--context-parallel-algo", "ulysses_cp_algo", "--global-batch-size", "1"],
     "--context-parallel-algo ulysses_cp_algo with --context-parallel-size 8 needs --seq-length 8192 and the 28 heads",
     False),
    ("cp_algo", M8, (None, None, None), 8,
     ["--context-parallel-size", "2", "--context-parallel-algo", "hybrid_cp_algo", "--global-batch-size", "4"],
     "--context-parallel-algo hybrid_cp_algo with --context-parallel-size 2: only megatron_cp_algo and "
     "ulysses_cp_algo are planned", False),
    ("pipeline_key_type", M8, ("six", None, None), 1, ["--global-batch-size", "1"],
     "text_decoder.pipeline_num_layers: expected a list of layer counts per pipeline stage", True),
    ("pipeline_key_projector", M8, (None, None, [1]), 1, ["--global-batch-size", "1"],
     "image_encoder.vision_projector.pipeline_num_layers: only text_decoder and image_encoder.vision_encoder", True),
    ("pp1_with_stage_list", M8, ([6, 8, 8, 6], [24, 0, 0, 0], None), 1, ["--global-batch-size", "1"],
     "has [4] entries per chunk, --pipeline-model-parallel-size is 1", True),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_layout_stops_with_its_message(case, tmp_path, monkeypatch, capsys):
    _, source, (text, vision, projector), world, flags, message, real = case
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("MS_WORKER_NUM", raising=False)
    model = _model(tmp_path, source, text, vision, projector)
    argv = ["--mm-model", model] + BASE + flags
    assert main(argv + ["--dry-run", "--world-size", str(world)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("msmm-train: ") and message in err, err
    if real:  # a real run on msrun's world size stops at start-up with the same message, before MindSpore starts
        monkeypatch.setenv("MS_WORKER_NUM", str(world))
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err, err


@pytest.mark.parametrize("flags, message, planned, world", [
    (["--context-parallel-size", "2", "--context-parallel-algo", "ulysses_cp_algo"],
     "--context-parallel-algo ulysses_cp_algo: not implemented yet", True, 2),
    (["--context-parallel-size", "2", "--pipeline-model-parallel-size", "2"],
     "--context-parallel-size 2 with --pipeline-model-parallel-size 2: not implemented yet", True, 4),
    (["--virtual-pipeline-model-parallel-size", "2"], "virtual pipeline stages need --pipeline-model-parallel-size > 1",
     False, 2),
    (["--world-size", "8"], "--world-size 8: a positive number of devices, for --dry-run only", False, 2),
    (["--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2", "--sequence-parallel"],
     "--sequence-parallel with --pipeline-model-parallel-size 2: sequence parallelism across pipeline stages is not "
     "implemented yet", True, 4),
])
def test_real_run_refuses_what_is_not_implemented_yet(flags, message, planned, world, monkeypatch, capsys):
    """Refused by a run before anything is built, planned by --dry-run (which lists the refusal)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MS_WORKER_NUM", str(world))
    argv = ["--mm-model", M8] + BASE + ["--global-batch-size", str(world)] + flags
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    if planned:
        monkeypatch.delenv("MS_WORKER_NUM")
        assert main(argv + ["--dry-run", "--world-size", str(world)]) in (0, 3)
        out = capsys.readouterr().out
        assert "not implemented yet (a real run stops here): " + message.split(":")[0] in out, out


# ---- the formulas against the paper's closed forms ---------------------------------------------------

S, B, H, A = 2048, 1, 4096, 32  # Korthikanti et al.'s GPT layer: f = 4h, GELU MLP, 2-byte activations


@pytest.mark.parametrize("t, sp", [(1, False), (4, False), (4, True), (8, True)])
def test_layer_activations_are_korthikanti_without_dropout(t, sp):
    """Per layer, no recompute, no flash: the paper's sbh(34 + 5as/h) (TP: 10 + 24/t + 5as/(ht); with
    sequence parallel everything / t) minus its dropout terms, which msmm's models do not have:
    the two 1-byte output masks (2 sbh, not split by TP unless sequence parallel) and the attention
    dropout mask and output (3 a s^2 b / t)."""
    layer = LayerShape(S * B, H, A, H // A, A, 4 * H, swiglu=False, span=S)
    stored = layer_activation_bytes(layer, ActivationSettings(2, t, sp, flash=False, recompute=None))[1]
    if sp:
        paper = S * B * H / t * (34 + 5 * A * S / H)
        dropout = 2 * S * B * H / t + 3 * A * S * S * B / t
    else:
        paper = S * B * H * (10 + 24 / t + 5 * A * S / (H * t))
        dropout = 2 * S * B * H + 3 * A * S * S * B / t
    assert stored == pytest.approx(paper - dropout, rel=1e-12)


def test_full_recompute_keeps_the_layer_input():
    """Korthikanti's full recomputation: 2sbh per layer (sbh/t... with sequence parallel: 2sbh/t)."""
    layer = LayerShape(S * B, H, A, H // A, A, 4 * H, swiglu=False, span=S)
    full = layer_activation_bytes(layer, ActivationSettings(2, 1, False, flash=False, recompute="full"))
    assert full[1] == 2 * S * B * H and full[2] == full[0]
    sp = layer_activation_bytes(layer, ActivationSettings(2, 8, True, flash=False, recompute="full"))
    assert sp[1] == 2 * S * B * H // 8


@pytest.mark.parametrize("pp, vpp", [(4, 1), (4, 2), (8, 3)])
def test_first_stage_keeps_korthikanti_pipeline_share(pp, vpp):
    """1F1B keeps p micro-batches of a stage's L/p layers on the first stage (L layers' worth); the
    interleaved schedule L (1 + (p - 1) / (p m)) layers' worth (m virtual chunks)."""
    layers = pp * vpp * 5
    per_pass = layers // (pp * vpp)  # layers of one chunk
    kept = _in_flight(0, pp, vpp, micro_batches=1000) * per_pass
    assert kept == pytest.approx(layers * (1 + (pp - 1) / (pp * vpp)) if vpp > 1 else layers)
    assert _in_flight(pp - 1, pp, 1, 1000) == 1 and _in_flight(0, pp, 1, 2) == 2  # fewer micro-batches than stages


def test_a_shape_only_torch_gap_never_blocks_a_run(monkeypatch, capsys):
    """If the model files use a torch API the shape-only torch lacks, a real run warns and goes on
    (its layout is checked when the model is built); the dry run says it cannot plan (exit 2)."""
    import contextlib

    import adapters.meta_torch as meta
    from msmm.config.train_args import parse_train_args
    from msmm.train.plan import check_run_layout

    @contextlib.contextmanager
    def broken(package="msmm.models"):
        raise meta.MetaTorchError("torch.nn.functional.frobnicate: not available on the shape-only torch")
        yield  # pragma: no cover

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(meta, "models_on_meta", broken)
    monkeypatch.delenv("MS_WORKER_NUM", raising=False)
    argv = ["--mm-model", M8] + BASE + ["--global-batch-size", "1"]
    assert check_run_layout(parse_train_args(argv)) is None
    assert "warning: the start-up layout check could not import the model files" in capsys.readouterr().err
    assert main(argv + ["--dry-run"]) == 2
    assert "--dry-run cannot build the model shape-only: torch.nn.functional.frobnicate" in capsys.readouterr().err
