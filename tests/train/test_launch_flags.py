"""MindSpeed-MM's launch-script flags for Qwen2-VL, Qwen2.5-VL, InternVL2/3 and LLaVA-1.5 (every
flag of upstream's finetune / pretrain / inference / evaluate scripts of these families, written
here from those facts) parse: each is honoured, logged without effect with the reason, or refused
with it; nothing is silently ignored."""
from __future__ import annotations

import pytest

from msmm.config.launch_flags import NO_EFFECT, REFUSED, architecture_differences
from msmm.config.train_args import TrainArgsError, parse_train_args
from msmm.train.cli import apply_recompute

BASE = ["--mm-model", "m.json", "--mm-data", "d.json", "--micro-batch-size", "1", "--global-batch-size", "8",
        "--train-iters", "100", "--lr", "1e-5"]
# the GPT_ARGS / MM_ARGS / OUTPUT_ARGS of upstream's scripts for these families (values as published)
UPSTREAM = [
    "--use-mcore-models", "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "1",
    "--context-parallel-size", "1", "--context-parallel-algo", "megatron_cp_algo", "--tokenizer-type", "NullTokenizer",
    "--vocab-size", "152064", "--seq-length", "1024", "--make-vocab-size-divisible-by", "1", "--normalization",
    "RMSNorm", "--use-fused-rmsnorm", "--swiglu", "--use-fused-swiglu", "--lr-decay-style", "cosine",
    "--weight-decay", "0", "--lr-warmup-fraction", "0.1", "--clip-grad", "0.0", "--adam-beta1", "0.9",
    "--adam-beta2", "0.999", "--no-gradient-accumulation-fusion", "--no-load-optim", "--no-load-rng",
    "--no-save-optim", "--no-save-rng", "--seed", "42", "--bf16", "--load", "ckpt", "--variable-seq-lengths",
    "--use-distributed-optimizer", "--reuse-fp32-param", "--enable-dummy-optimizer", "--num-workers", "8",
    "--use-flash-attn", "--position-embedding-type", "rope", "--rotary-base", "100000", "--no-masked-softmax-fusion",
    "--untie-embeddings-and-output-weights", "--use-cpu-initialization", "--init-model-with-meta-device",
    "--no-initialization", "--swap-attention", "--overlap-grad-reduce", "--overlap-param-gather", "--allow-tf32",
    "--use-fused-rotary-pos-emb", "--min-lr", "1e-6", "--mm-tool", "tools.json", "--ckpt-format", "torch",
    "--distributed-timeout-minutes", "120", "--distributed-backend", "nccl", "--ai-framework", "mindspore",
    "--trust-remote-code", "--recompute-granularity", "full", "--recompute-method", "block",
    "--recompute-num-layers", "12", "--log-interval", "1", "--save-interval", "5000", "--save", "save",
    "--eval-interval", "5000", "--eval-iters", "5000", "--log-tps", "--img-h", "336", "--img-w", "336",
    "--patch-dim", "14", "--lora-r", "8", "--lora-alpha", "16", "--lora-dropout", "0.05",
    "--lora-target-modules", "linear_qkv", "linear_proj",
    # the bare Megatron switches
    "--group-query-attention", "--attention-softmax-in-fp32", "--qk-layernorm", "--disable-bias-linear",
]


def test_every_upstream_flag_is_honoured_or_logged():
    args = parse_train_args(BASE + UPSTREAM)
    given = {t for t in UPSTREAM if t.startswith("--")}
    honoured = given - set(NO_EFFECT)
    assert set(args.ignored) == given & set(NO_EFFECT)
    assert {"--vocab-size", "--group-query-attention", "--mm-tool", "--ckpt-format", "--swap-attention",
            "--enable-dummy-optimizer", "--distributed-timeout-minutes"} <= set(args.ignored)
    assert {"--trust-remote-code", "--recompute-method", "--recompute-num-layers", "--seq-length"} <= honoured
    assert args.trust_remote_code and (args.recompute_method, args.recompute_num_layers) == ("block", 12)
    assert all(NO_EFFECT[flag][1] for flag in args.ignored)


@pytest.mark.parametrize("flag, value", [("--use-torch-fsdp2", None), ("--dpo-beta", "0.1"),
                                         ("--layerzero-config", "z.yaml")])
def test_flags_msmm_cannot_honour_are_refused(flag, value):
    with pytest.raises(TrainArgsError, match=f"msmm-train: {flag}: not supported: {REFUSED[flag][1]}"):
        parse_train_args(BASE + [flag] + ([value] if value else []))


def test_warmup_iterations_are_a_fraction_of_the_decay():
    assert parse_train_args(BASE + ["--lr-warmup-iters", "25"]).lr_warmup_fraction == 0.25
    assert parse_train_args(BASE + ["--lr-warmup-iters", "10", "--lr-decay-iters", "50"]).lr_warmup_fraction == 0.2
    for extra, message in ((["--lr-warmup-iters", "5", "--lr-warmup-fraction", "0.1"], "both set the warmup"),
                           (["--lr-warmup-iters", "500"], "--lr-warmup-iters 500 must lie in [0, 100]"),
                           (["--lr-warmup-init", "1e-7"], "--lr-warmup-init 1e-07: warmup starts from 0"),
                           (["--recompute-granularity", "full", "--recompute-method", "block"],
                            "--recompute-method block needs --recompute-num-layers")):
        with pytest.raises(TrainArgsError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_train_args(BASE + extra)


class _Cell:
    def __init__(self) -> None:
        self.marked = False

    def recompute(self) -> None:
        self.marked = True


class _Model:
    """Two stacks (a 3-layer ViT, a 4-layer text decoder) of cells, as named_modules names them."""

    def __init__(self) -> None:
        self.cells = {**{f"visual.blocks.{i}": _Cell() for i in range(3)},
                      **{f"model.layers.{i}": _Cell() for i in range(4)},
                      **{f"model.layers.{i}.self_attn": _Cell() for i in range(4)}}

    def named_modules(self):
        return iter(self.cells.items())


@pytest.mark.parametrize("method, layers, marked", [
    (None, None, ["visual.blocks.0", "visual.blocks.1", "visual.blocks.2", "model.layers.0", "model.layers.1",
                  "model.layers.2", "model.layers.3"]),
    ("uniform", 2, ["visual.blocks.0", "visual.blocks.1", "visual.blocks.2", "model.layers.0", "model.layers.1",
                    "model.layers.2", "model.layers.3"]),
    ("block", 2, ["visual.blocks.0", "visual.blocks.1", "model.layers.0", "model.layers.1"]),
    ("block", 0, []),
])
def test_recompute_method_block_recomputes_the_first_layers_of_each_stack(method, layers, marked):
    model = _Model()
    assert apply_recompute(model, "full", method, layers) == len(marked)
    assert [n for n, c in model.cells.items() if c.marked] == marked


def test_architecture_flags_differing_from_model_json_are_logged():
    sections = {"text_decoder": {"num_layers": 28, "rotary_base": 1e6}, "image_encoder.vision_encoder": {}}
    lines = architecture_differences({"--num-layers": "1", "--rotary-base": "1000000", "--swiglu": True}, sections,
                                     "model.json")
    assert lines == ["--num-layers 1 differs from model.json text_decoder.num_layers 28: model.json's is used"]
