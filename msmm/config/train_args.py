"""``msmm-train`` arguments: MindSpeed-MM / Megatron spellings, validated with clear errors.

Unknown arguments are errors (with the closest known spelling). Megatron/MindSpeed
arguments msmm has no use for (fused kernels, flash attention, mcore models, Megatron's copy
of model.json's numbers) are accepted and logged with the reason, those it cannot honour
(FSDP2, DPO...) refused with it (``msmm.config.launch_flags``); data and tensor parallelism
are implemented, other parallel sizes than 1 (PP/CP/EP) are refused.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from typing import List, Optional, Sequence

from msmm.config.launch_flags import NO_EFFECT, REFUSED

PARALLEL_SIZES = ("--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--context-parallel-size",
                  "--virtual-pipeline-model-parallel-size", "--num-layers-per-virtual-pipeline-stage",
                  "--expert-model-parallel-size")
# MindSpeed's context-parallel algorithms (--dry-run plans megatron_cp_algo and ulysses_cp_algo)
CP_ALGOS = ("megatron_cp_algo", "ulysses_cp_algo", "hybrid_cp_algo", "adaptive_cp_algo", "hybrid_adaptive_cp_algo")
# parallel features the training runtime does not implement yet: a run (not --dry-run) stops on them
class TrainArgsError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # noqa: D401 - argparse hook
        raise TrainArgsError(f"msmm-train: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="msmm-train", description="Fine-tune / pretrain a vision-language model (MindSpeed-MM arguments).",
                allow_abbrev=False)
    g = p.add_argument_group("model and data")
    g.add_argument("--mm-model", required=True, help="model.json")
    g.add_argument("--mm-data", required=True, help="data.json")
    g.add_argument("--seq-length", type=int, help="pad every micro-batch to this many tokens (one compiled shape)")
    g.add_argument("--variable-seq-lengths", action="store_true", help="do not pad to --seq-length")
    g.add_argument("--num-workers", type=int, help="data-loading processes (overrides data.json)")
    g.add_argument("--allow-unknown-keys", action="store_true",
                   help="an unknown data.json or model.json key (a typo such as 'strcit') is a warning instead of an "
                   "error")
    g = p.add_argument_group("batch and schedule")
    g.add_argument("--micro-batch-size", type=int, required=True)
    g.add_argument("--global-batch-size", type=int, required=True)
    g.add_argument("--train-iters", type=int, required=True)
    g.add_argument("--lr", type=float, required=True)
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--lr-warmup-fraction", type=float, default=0.0)
    g.add_argument("--lr-decay-style", choices=("constant", "linear", "cosine"), default="linear")
    g.add_argument("--lr-decay-iters", type=int)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.999)
    g.add_argument("--adam-eps", type=float, default=1e-8)
    g.add_argument("--clip-grad", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--fp16", action="store_true")
    g.add_argument("--calculate-per-token-loss", action="store_true")
    g.add_argument("--calculate-per-sample-loss", action="store_true")
    g.add_argument("--skip-nonfinite-steps", action="store_true", help="skip a step with a NaN/Inf loss or gradient")
    g.add_argument("--recompute-granularity", choices=("full", "selective"))
    g.add_argument("--recompute-method", choices=("uniform", "block"),
                   help="block: recompute only the first --recompute-num-layers layers of each stack")
    g.add_argument("--recompute-num-layers", type=int)
    g.add_argument("--lr-warmup-iters", type=int, help="warmup iterations (Megatron): --lr-warmup-fraction of the decay")
    g.add_argument("--lr-warmup-init", type=float, default=0.0, help="the learning rate warmup starts from (only 0)")
    g.add_argument("--trust-remote-code", action="store_true", help="the tokenizer may run its repository's code")
    g = p.add_argument_group("checkpoints and logging")
    g.add_argument("--load")
    g.add_argument("--save")
    g.add_argument("--save-interval", type=int)
    g.add_argument("--save-total-limit", type=int, help="keep only the newest K checkpoints (iter_* directories)")
    g.add_argument("--exit-interval", type=int)
    g.add_argument("--finetune", action="store_true", help="load weights only and start at iteration 0")
    for flag in ("--no-load-optim", "--no-load-rng", "--no-save-optim", "--no-save-rng"):
        g.add_argument(flag, action="store_true")
    g.add_argument("--log-interval", type=int, default=100)
    g.add_argument("--eval-interval", type=int, help="validation loss every N iterations (default 1000, Megatron's), "
                   "over data.json val_dataset or val_rate")
    g.add_argument("--eval-iters", type=int, help="global batches per validation (default 100, Megatron's; 0: none)")
    g.add_argument("--log-tps", action="store_true")
    g.add_argument("--log-dir", help="JSONL log, TensorBoard events, loss curve (default: --save, else ./logs)")
    g.add_argument("--tensorboard-dir", help="alias of --log-dir")
    g = p.add_argument_group("LoRA on the text decoder (MindSpeed-LLM names; model.json 'lora' blocks configure any section)")
    g.add_argument("--lora-r", type=int, help="LoRA rank; switches LoRA on for text_decoder")
    g.add_argument("--lora-alpha", type=float, help="LoRA alpha (scaling alpha / r; default 2 r)")
    g.add_argument("--lora-dropout", type=float, help="dropout on the LoRA input (default 0)")
    g.add_argument("--lora-target-modules", nargs="+", help="module names (suffix match: q_proj self_attn.v_proj), one regular expression, or all-linear (default)")
    g.add_argument("--lora-modules-to-save", nargs="+", help="text_decoder modules trained in full (e.g. embed_tokens lm_head)")
    g.add_argument("--lora-quantize", choices=("int8", "nf4"), help="store the frozen base weights quantized (QLoRA-style)")
    g.add_argument("--lora-load", metavar="DIR", help="a PEFT LoRA adapter (written by msmm-train or HF PEFT; a directory with "
                   "adapter_config.json, or an msmm-train SAVE / iter_N) to start the LoRA and modules_to_save weights from; "
                   "--load the HF base it was trained on")
    g = p.add_argument_group("accepted for compatibility, or refused with the reason")
    for flag, (takes_value, _) in {**NO_EFFECT, **REFUSED}.items():
        g.add_argument(flag, help=argparse.SUPPRESS, **({} if takes_value else {"action": "store_true"}))
    g = p.add_argument_group("parallelism (Megatron's rank order: TP fastest, then CP, DP, PP; docs/parallel.md)")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1, help="TP: ranks sharing each layer's weights")
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1,
                   help="PP: pipeline stages (model.json pipeline_num_layers places the layers)")
    g.add_argument("--virtual-pipeline-model-parallel-size", type=int, help="virtual (interleaved) chunks per stage")
    g.add_argument("--num-layers-per-virtual-pipeline-stage", type=int,
                   help="Megatron's other spelling: virtual size = text num_layers / PP / this")
    g.add_argument("--context-parallel-size", type=int, default=1, help="CP: ranks sharing each sequence")
    g.add_argument("--context-parallel-algo", choices=CP_ALGOS, default="megatron_cp_algo")
    g.add_argument("--context-parallel-attention", choices=("all_gather", "ring"), default="all_gather",
                   help="megatron_cp_algo's attention (both exact): keys and values all-gathered once, or passed "
                        "around the ring (online softmax, MindSpeed's schedule)")
    g.add_argument("--expert-model-parallel-size", type=int, default=1, help=argparse.SUPPRESS)
    g.add_argument("--sequence-parallel", action="store_true", help="shard norms/dropout activations over TP ranks")
    g.add_argument("--use-distributed-optimizer", action="store_true",
                   help="shard the fp32 optimizer state over the data-parallel ranks")
    g.add_argument("--unaligned-linear", action="store_true",
                   help="split the vision encoder's heads unevenly over TP ranks (InternViT-6B's 25)")
    g = p.add_argument_group("planning without devices")
    g.add_argument("--dry-run", action="store_true",
                   help="validate everything, build the model shape-only and print the layout and per-device memory")
    g.add_argument("--world-size", type=int, help="--dry-run: devices of the planned job (default: msrun's, else 1)")
    g.add_argument("--device-memory-gb", type=float, default=64.0, help="--dry-run: memory per device, GiB")
    return p


def parse_train_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse and validate; raises :class:`TrainArgsError` naming the argument."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    known = sorted(parser._option_string_actions)
    for token in argv:
        if token.startswith("--") and token.split("=", 1)[0] not in parser._option_string_actions:
            name = token.split("=", 1)[0]
            close = difflib.get_close_matches(name, known, n=1)
            raise TrainArgsError(f"msmm-train: unknown argument {name}" + (f" (did you mean {close[0]}?)" if close else ""))
    args = parser.parse_args(argv)
    _validate(args, argv)
    return args


def _validate(args: argparse.Namespace, argv: List[str]) -> None:
    def fail(message: str) -> None:
        raise TrainArgsError(f"msmm-train: {message}")

    if args.bf16 and args.fp16:
        fail("--bf16 and --fp16 contradict each other; give at most one (neither = fp32)")
    if args.calculate_per_token_loss and args.calculate_per_sample_loss:
        fail("--calculate-per-token-loss and --calculate-per-sample-loss are mutually exclusive")
    for name in ("micro_batch_size", "global_batch_size", "train_iters", "log_interval"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.global_batch_size % args.micro_batch_size:
        fail(f"--global-batch-size {args.global_batch_size} is not a multiple of --micro-batch-size {args.micro_batch_size}")
    if args.min_lr > args.lr:
        fail(f"--min-lr {args.min_lr} is larger than --lr {args.lr}")
    if not 0.0 <= args.lr_warmup_fraction <= 1.0:
        fail(f"--lr-warmup-fraction must lie in [0, 1], got {args.lr_warmup_fraction}")
    if args.save_interval is not None and not args.save:
        fail("--save-interval needs --save")
    if args.finetune and not args.load:
        fail("--finetune needs --load")
    if args.seq_length is not None and args.seq_length <= 0:
        fail(f"--seq-length must be positive, got {args.seq_length}")
    if args.log_dir and args.tensorboard_dir and args.log_dir != args.tensorboard_dir:
        fail("--log-dir and --tensorboard-dir name different directories; give one")
    for flag in PARALLEL_SIZES:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None and value < 1:
            fail(f"{flag} must be positive, got {value}")
    if args.expert_model_parallel_size != 1:
        fail(f"--expert-model-parallel-size {args.expert_model_parallel_size}: msmm's models have no experts; it must be 1")
    if args.world_size is not None and (args.world_size < 1 or not args.dry_run):
        fail(f"--world-size {args.world_size}: a positive number of devices, for --dry-run only (a run takes its world "
             "size from msrun)")
    if args.device_memory_gb <= 0:
        fail(f"--device-memory-gb must be positive, got {args.device_memory_gb}")
    if (args.recompute_method or args.recompute_num_layers is not None) and args.recompute_granularity != "full":
        fail("--recompute-method / --recompute-num-layers need --recompute-granularity full")
    if args.recompute_num_layers is not None and args.recompute_num_layers < 0:
        fail(f"--recompute-num-layers must be >= 0, got {args.recompute_num_layers}")
    if args.recompute_method == "block" and args.recompute_num_layers is None:
        fail("--recompute-method block needs --recompute-num-layers (how many layers of each stack to recompute)")
    given = {t.split("=", 1)[0] for t in argv}
    for flag in sorted(given & set(REFUSED)):
        fail(f"{flag}: not supported: {REFUSED[flag][1]}")
    if args.lr_warmup_init != 0.0:
        fail(f"--lr-warmup-init {args.lr_warmup_init}: warmup starts from 0 in msmm; only 0 is supported")
    if args.lr_warmup_iters is not None:
        if "--lr-warmup-fraction" in given:
            fail("--lr-warmup-iters and --lr-warmup-fraction both set the warmup; give one")
        decay = args.lr_decay_iters or args.train_iters
        if not 0 <= args.lr_warmup_iters <= decay:
            fail(f"--lr-warmup-iters {args.lr_warmup_iters} must lie in [0, {decay}] (the decay iterations)")
        args.lr_warmup_fraction = args.lr_warmup_iters / decay  # Megatron: warmup = fraction x decay iterations
    if args.eval_interval is not None and args.eval_interval <= 0:
        fail(f"--eval-interval must be positive, got {args.eval_interval}")
    if args.eval_iters is not None and args.eval_iters < 0:
        fail(f"--eval-iters must be >= 0, got {args.eval_iters}")
    if args.save_total_limit is not None and (args.save_total_limit <= 0 or not args.save):
        fail(f"--save-total-limit must be positive and needs --save, got {args.save_total_limit}")
    args.lora = _lora_from_args(args, fail)
    args.ignored = sorted(given & set(NO_EFFECT))
    args.loss_reduction = "token" if args.calculate_per_token_loss else "sample" if args.calculate_per_sample_loss else "micro_batch"
    args.log_dir = args.log_dir or args.tensorboard_dir


LORA_FLAGS = ("lora_alpha", "lora_dropout", "lora_target_modules", "lora_modules_to_save", "lora_quantize")


def _lora_from_args(args: argparse.Namespace, fail):
    """The --lora-* arguments as a ``LoRAConfig`` for text_decoder (None without --lora-r)."""
    from msmm.config.lora_config import LoRAConfig

    if args.lora_r is None:
        given = [f"--{n.replace('_', '-')}" for n in LORA_FLAGS if getattr(args, n) is not None]
        if given:
            fail(f"{', '.join(given)} need --lora-r")
        return None
    targets = args.lora_target_modules
    if targets is not None and len(targets) == 1 and (targets[0] == "all-linear" or set(targets[0]) & set("*+?[](){}|^$\\")):
        targets = targets[0]  # all-linear, or one regular expression
    options = dict(r=args.lora_r, lora_alpha=2.0 * args.lora_r if args.lora_alpha is None else args.lora_alpha,
                   lora_dropout=args.lora_dropout or 0.0, target_modules=targets,
                   modules_to_save=tuple(args.lora_modules_to_save or ()), quantize=args.lora_quantize)
    try:
        return LoRAConfig(**options)
    except ValueError as err:
        field, _, message = str(err).partition(": ")
        flag = {"r": "--lora-r", "lora_alpha": "--lora-alpha", "lora_dropout": "--lora-dropout",
                "target_modules": "--lora-target-modules", "modules_to_save": "--lora-modules-to-save"}.get(field, field)
        fail(f"{flag}: {message}")
