"""``msmm-train``: the MindSpeed-MM launch scripts' entry point on MindSpore.

    msrun --worker_num=8 --local_worker_num=8 ... msmm-train \\
        --mm-model model.json --mm-data data.json --micro-batch-size 1 --global-batch-size 8 \\
        --train-iters 5000 --lr 1e-5 --load ckpt/... --save save_dir --save-interval 1000 ...

``--load`` of an msmm checkpoint directory resumes (weights, optimizer, RNG, iteration and
data position, as switched by --no-load-*); of an HF checkpoint directory (config.json +
safetensors) it loads the pretrained weights, before any graph is compiled.
"""
from __future__ import annotations

import json
import os
import random
import sys
from typing import Optional, Sequence

import mindspore
import numpy as np

from msmm import runtime


def apply_recompute(model, granularity: Optional[str], method: Optional[str] = None,
                    num_layers: Optional[int] = None) -> int:
    """Mark each transformer layer (``full``) or its attention (``selective``) for
    recomputation in the backward pass (``Cell.recompute``); returns how many cells.

    Megatron's ``method`` with ``full``: ``block`` recomputes only the first ``num_layers``
    layers of each stack (ViT, text decoder); ``uniform`` recomputes every layer (Megatron
    checkpoints groups of ``num_layers`` layers; msmm each layer: the same values, less memory)."""
    if granularity is None:
        return 0
    count = 0
    for name, cell in model.named_modules():
        parts = name.split(".")
        is_layer = len(parts) >= 2 and parts[-1].isdigit() and parts[-2] in ("layers", "layer", "blocks")
        is_attention = parts[-1] in ("self_attn", "attn", "attention")
        in_block = method != "block" or (is_layer and int(parts[-1]) < num_layers)
        if (granularity == "full" and is_layer and in_block) or (granularity == "selective" and is_attention):
            cell.recompute()
            count += 1
    return count


def adapter_writer(model, model_config, hf_dir: Optional[str], resumed: Optional[dict], load: Optional[str] = None):
    """The PEFT adapter writer of a LoRA run: names in the layout of the HF checkpoint the
    base came from (``--load`` HF directory; on resume, what the first LoRA run recorded, or
    for a checkpoint trained without LoRA, the HF directory its run was ``--load``-ed from)."""
    from msmm.checkpoint.hf import load_config
    from msmm.checkpoint.peft import AdapterNaming
    from msmm.registry import get_family
    from msmm.train.adapter import AdapterWriter

    spec = get_family(model_config.model_id)

    if resumed is not None and "lora_layout" in resumed:
        base, layout = resumed.get("lora_base"), resumed["lora_layout"]
    else:
        base = hf_dir if resumed is None else resumed.get("load")
        has_config = base is not None and os.path.isfile(os.path.join(base, "config.json"))
        if resumed is not None and len(spec.naming.layouts) > 1 and not has_config:
            raise ValueError(f"--load {load}: this checkpoint was trained without LoRA and records no HF checkpoint "
                             f"directory (its --load was {base!r}), so the layout ({' or '.join(spec.naming.layouts)}) "
                             f"to name the {spec.title} adapter in is unknown; start LoRA from the HF checkpoint instead")
        layout = spec.hf_layout(load_config(base)) if has_config else "hf"
    naming = AdapterNaming(model_config.model_id, layout, model_config.sections["text_decoder"].model_id)
    return AdapterWriter(model, naming, base)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from msmm.config.launch_flags import NO_EFFECT, architecture_differences
    from msmm.config.train_args import TrainArgsError, parse_train_args

    try:
        args = parse_train_args(argv)
    except TrainArgsError as err:
        print(err, file=sys.stderr)
        return 2
    # start-up checks of data.json against the arguments, before anything is built (issue 15)
    from msmm.train.startup_checks import DataConfigError, load_checked_data_config

    try:
        data_config = load_checked_data_config(args)
    except DataConfigError as err:
        print(f"msmm-train: {err}", file=sys.stderr)
        return 2
    if args.trust_remote_code:  # the tokenizer's own code (MindSpeed-MM's --trust-remote-code)
        data_config.dataset_param.tokenizer_config.trust_remote_code = True
    if args.dry_run:  # the layout and per-device memory, shape-only: no MindSpore, weights or data (plan.py)
        from msmm.train.plan import dry_run

        return dry_run(args, data_config)
    # the parallel layout against model.json before anything is built (issue 13; parallel/validate.py)
    from msmm.train.parallel.layout import LayoutError
    from msmm.train.plan import check_run_layout

    try:
        checked = check_run_layout(args)
    except (LayoutError, ValueError) as err:
        print(f"msmm-train: {err}", file=sys.stderr)
        return 2
    # --load checked before anything is built: a missing iteration, a corrupt metadata.json or
    # safetensors header is one line naming the file (issue 15)
    from msmm.checkpoint.train_state import check_load_path

    saved = None
    if args.load is not None:
        try:
            saved = check_load_path(args.load)
        except (OSError, ValueError) as err:
            print(f"msmm-train: --load {args.load}: {err}", file=sys.stderr)
            return 1
    runtime.start()  # before the first MindSpore op and before msmm.models is imported
    from msmm.config.data_config import load_data_config
    from msmm.data.build import build_dataloader
    from msmm.checkpoint.layout import is_mm_checkpoint
    from msmm.checkpoint.train_state import read_metadata
    from msmm.models import ModelConfigError, apply_lora_config, build_model, load_model_config, load_pretrained
    from msmm.train.distributed import init_world
    from msmm.train.trainer import TrainConfig, Trainer

    if checked is None and args.pipeline_model_parallel_size > 1:
        print("msmm-train: pipeline parallelism needs the start-up layout check (see the warning above)", file=sys.stderr)
        return 2
    world = init_world(args.tensor_model_parallel_size, args.pipeline_model_parallel_size,
                       checked.vpp if checked is not None else 1, args.sequence_parallel, args.context_parallel_size,
                       args.context_parallel_attention)
    random.seed(args.seed)
    np.random.seed(args.seed)
    mindspore.set_seed(args.seed)
    from msmm.models.model_config import model_config_record
    from msmm.models.pretrained import check_checkpoint_config
    from msmm.models.section_weights import load_section_weights

    try:
        model_config = load_model_config(args.mm_model, args.allow_unknown_keys)
        if args.lora is not None:
            text = model_config.sections["text_decoder"]
            if text.lora is not None:
                raise ModelConfigError(f"{args.mm_model}: text_decoder.lora and --lora-r both configure LoRA on the "
                                       "text decoder; give one")
            text.lora = args.lora
        note = check_checkpoint_config(model_config, args.load, saved) if saved is not None else None
    except ModelConfigError as err:  # model.json, or model.json against the --load checkpoint
        print(f"msmm-train: {err}", file=sys.stderr)
        return 2
    if note:
        print(f"msmm-train: warning: {note}", file=sys.stderr)
    model = build_model(model_config)
    try:  # sections' own checkpoints (LLaVA stage 1: CLIP + Vicuna), then --load on top
        for line in load_section_weights(model, model_config):
            print(f"msmm-train: {line}")
    except ModelConfigError as err:
        print(f"msmm-train: {err}", file=sys.stderr)
        return 2
    resume = args.load is not None and is_mm_checkpoint(args.load)
    if args.load and not resume:
        if not os.path.isfile(os.path.join(args.load, "config.json")):
            raise FileNotFoundError(f"--load {args.load}: neither an msmm checkpoint (latest_checkpointed_iteration.txt) "
                                    "nor an HF checkpoint (config.json + safetensors)")
        load_pretrained(model, model_config, args.load)
    adapted = apply_lora_config(model, model_config)  # after the HF weights: a quantized base is made from them
    if args.bf16 or args.fp16:
        model.to(mindspore.bfloat16 if args.bf16 else mindspore.float16)  # before compiling
    recomputed = apply_recompute(model, args.recompute_granularity, args.recompute_method, args.recompute_num_layers)

    data_config.dataloader_param.micro_batch_size = args.micro_batch_size
    if args.num_workers is not None:
        data_config.dataloader_param.num_workers = args.num_workers
    loader = build_dataloader(data_config, rank=world.dp_rank, world_size=world.dp_size,
                              global_batch_size=args.global_batch_size, split_seed=args.seed)
    from msmm.train.evaluation import evaluator_from_args

    try:
        evaluator, validation_note = evaluator_from_args(args, data_config, world)
    except ValueError as err:
        print(f"msmm-train: {err}", file=sys.stderr)
        return 2

    config = TrainConfig(
        train_iters=args.train_iters, global_batch_size=args.global_batch_size, micro_batch_size=args.micro_batch_size,
        lr=args.lr, min_lr=args.min_lr, lr_warmup_fraction=args.lr_warmup_fraction, lr_decay_style=args.lr_decay_style,
        lr_decay_iters=args.lr_decay_iters, weight_decay=args.weight_decay, adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2, adam_eps=args.adam_eps, clip_grad=args.clip_grad, loss_reduction=args.loss_reduction,
        skip_nonfinite_steps=args.skip_nonfinite_steps,
        seq_length=None if args.variable_seq_lengths else args.seq_length,
        log_interval=args.log_interval, log_tps=args.log_tps, log_dir=args.log_dir or args.save or "logs",
        save=args.save, save_interval=args.save_interval, save_optim=not args.no_save_optim,
        save_rng=not args.no_save_rng, load_optim=not args.no_load_optim, load_rng=not args.no_load_rng,
        exit_interval=args.exit_interval, finetune=args.finetune, save_total_limit=args.save_total_limit,
        use_distributed_optimizer=args.use_distributed_optimizer,
        sequence_parallel=args.sequence_parallel and args.tensor_model_parallel_size > 1,
    )
    arguments = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None), list))}
    writer = None
    if adapted:
        writer = adapter_writer(model, model_config, args.load if args.load and not resume else None,
                                read_metadata(args.load).get("arguments", {}) if resume else None, args.load)
        arguments.update(lora_base=writer.base_model_name_or_path, lora_layout=writer.naming.layout)
    if args.lora_load is not None:
        if not adapted or resume:
            raise ModelConfigError(f"--lora-load {args.lora_load}: needs LoRA configured (--lora-r or a model.json lora "
                                   "block) and --load of an HF checkpoint, not of an msmm checkpoint (which holds the "
                                   "adapter already)")
        from msmm.train.adapter import load_adapter

        loaded = load_adapter(model, args.lora_load, writer.naming)
    from msmm.train.plan import parallel_config

    trainer = Trainer(model, config, loader, world, arguments=arguments, adapter_writer=writer,
                      model_config=model_config_record(model_config),
                      pipeline=parallel_config(checked) if world.pp_size > 1 else None, evaluator=evaluator)
    if adapted:
        trainable = sum(int(np.prod(p.shape)) for _, p in trainer.named)
        total = sum(int(np.prod(p.shape)) for _, p in model.named_parameters())
        trainer.logger.info(f"LoRA on {', '.join(f'{k} ({len(v)} layers)' for k, v in adapted.items())}: "
                            f"{trainable} trainable of {total} parameters")
    if args.lora_load is not None:
        trainer.logger.info(f"--lora-load: {loaded} adapter tensors from {args.lora_load}")
    if validation_note:
        trainer.logger.info(f"msmm-train: {validation_note}")
    for flag in args.ignored:
        trainer.logger.info(f"msmm-train: {flag}: no effect ({NO_EFFECT[flag][1]})")
    given = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in args.ignored}
    for line in architecture_differences(given, {p: s.config for p, s in model_config.sections.items()}, args.mm_model):
        trainer.logger.info(f"msmm-train: {line}")
    if args.recompute_granularity:
        method = f" ({args.recompute_method}, {args.recompute_num_layers} layers)" if args.recompute_method else ""
        trainer.logger.info(f"msmm-train: recompute {args.recompute_granularity}{method}: {recomputed} cells")
    if resume:
        trainer.load(args.load)
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
