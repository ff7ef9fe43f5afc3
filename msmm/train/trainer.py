"""The training loop: micro-batches -> compiled step -> logging, checkpoints, resume."""
from __future__ import annotations

import inspect
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Protocol, Tuple

import mindspore
import numpy as np
from mindspore import Tensor, nn

from msmm.checkpoint import train_state as ckpt
from msmm.checkpoint.layout import shard_dirs, shard_name
from msmm.checkpoint.parallel import REPLICATED, ParallelConfig, tp_kind
from msmm.runtime import HOST_BLOCKING_ENV, async_queue_threads, release_free_heap

from .distributed import World
from .logger import TrainLogger, peak_memory_mb
from .loss import IGNORE_INDEX, VocabParallelCrossEntropy
from .distributed_optimizer import DistributedAdamW
from .optimizer import AdamW
from .pipeline.stage import PipelineStage
from .pipeline.step import PipelineTrainStep
from .schedules import LRSchedule
from .step import NonFiniteError, TrainStep

if TYPE_CHECKING:
    from .evaluation import Evaluator

Batch = Dict[str, np.ndarray]
# "1": a step of one micro-batch on one rank is one compiled graph (``TrainStep.step``). Off by
# default: on 2 cores it saved no measurable time and took 115-170 MB more peak RSS
# (docs/performance.md, "Train step")
ONE_GRAPH_ENV = "MSMM_ONE_GRAPH_STEP"


@dataclass
class TrainConfig:
    """The training hyper-parameters (the CLI's arguments; defaults are Megatron's)."""

    train_iters: int
    global_batch_size: int
    micro_batch_size: int = 1
    lr: float = 1e-5
    min_lr: float = 0.0
    lr_warmup_fraction: float = 0.0
    lr_decay_style: str = "linear"
    lr_decay_iters: Optional[int] = None
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    loss_reduction: str = "micro_batch"
    skip_nonfinite_steps: bool = False
    seq_length: Optional[int] = None  # pad every micro-batch to this length (one compiled shape)
    log_interval: int = 1
    log_tps: bool = False
    log_dir: Optional[str] = None
    save: Optional[str] = None
    save_interval: Optional[int] = None
    save_total_limit: Optional[int] = None  # keep the newest K iteration directories
    save_optim: bool = True
    save_rng: bool = True
    load_optim: bool = True
    load_rng: bool = True
    exit_interval: Optional[int] = None  # stop after the step that is a multiple of it (Megatron)
    finetune: bool = False  # --load weights only, start at iteration 0 (Megatron's --finetune)
    use_distributed_optimizer: bool = False  # shard the optimizer state over the data-parallel ranks (ZeRO-1)
    sequence_parallel: bool = False  # Megatron's, over the tensor-parallel ranks (the model is built for it)

    def micro_batches_per_step(self, world_size: int) -> int:
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(f"--global-batch-size {self.global_batch_size} is not a multiple of "
                             f"--micro-batch-size {self.micro_batch_size} x data-parallel size {world_size}")
        return self.global_batch_size // per_step


class BatchSource(Protocol):
    """What the trainer reads micro-batches from (``msmm.data.loader.DataLoader`` is one):
    iterating gives one epoch; the position can be saved and restored."""

    def __iter__(self) -> Iterator[Batch]: ...
    def state_dict(self) -> Dict[str, int]: ...
    def load_state_dict(self, state: Dict[str, int]) -> None: ...


class MicroBatchStream:
    """Endless micro-batches from a :class:`BatchSource`, epoch after epoch."""

    def __init__(self, source: BatchSource) -> None:
        self.source, self._it = source, None

    def next(self) -> Batch:
        for _ in range(2):
            if self._it is None:
                self._it = iter(self.source)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
        raise RuntimeError("the data source gave an empty epoch: fewer usable samples than one micro-batch "
                           "(see the skipped-sample summary above)")

    def state_dict(self) -> Dict[str, int]:
        return self.source.state_dict()

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.source.load_state_dict(state)
        self._it = None


def pad_batch(batch: Batch, length: int) -> Batch:
    """Right-pad input_ids (0), labels (-100), attention_mask (0) and position/segment ids to
    ``length`` tokens; padded positions take no loss and no real token attends to them."""
    current = batch["input_ids"].shape[1]
    if current > length:
        raise ValueError(f"a micro-batch has {current} tokens, more than --seq-length {length}")
    if current == length:
        return batch
    fill = {"labels": IGNORE_INDEX, "segment_ids": -1}
    out = dict(batch)
    for key in ("input_ids", "labels", "attention_mask", "position_ids", "segment_ids"):
        if key in batch:
            value = batch[key]
            pad = np.full(value.shape[:1] + (length - current,), fill.get(key, 0), value.dtype)
            out[key] = np.concatenate([value, pad], axis=1)
    return out


def tile_bucket(count: int) -> int:
    """The number of tiles a micro-batch with ``count`` tiles is padded to: the next power of
    two (at least 1), so a run compiles at most ``log2(most tiles) + 1`` step graphs."""
    return 1 << max(count - 1, 0).bit_length()


def pad_tiles(batch: Batch, tile_shape: tuple) -> Batch:
    """Pad InternVL's ``pixel_values`` [N, C, H, W] with zero tiles to ``tile_bucket(N)``
    tiles; ``image_flags`` marks them 0, so the model skips their features and the loss and
    gradients are those of the real tiles. A batch without images gets one padding tile
    (the same graph as batches with images)."""
    pixels = batch.get("pixel_values")
    count = 0 if pixels is None else pixels.shape[0]
    flags = batch.get("image_flags")
    flags = np.ones(count, np.int64) if flags is None else flags.reshape(count).astype(np.int64)
    target = tile_bucket(count)
    if pixels is not None and target == count and "image_flags" in batch:
        return batch
    dtype = np.float32 if pixels is None else pixels.dtype
    padding = np.zeros((target - count,) + tuple(tile_shape), dtype)
    out = dict(batch)
    out["pixel_values"] = padding if pixels is None else np.concatenate([pixels, padding])
    out["image_flags"] = np.concatenate([flags, np.zeros(target - count, np.int64)])
    return out


# Batch keys of the data pipeline that repeat what another key gives: a packed batch's
# ``cu_seqlens`` (segment boundaries over the flattened rows, for varlen attention kernels) are
# the boundaries of its ``segment_ids``. Left out for a model whose ``forward`` takes no such input.
REDUNDANT_BATCH_KEYS = ("cu_seqlens",)


class InputBuilder:
    """numpy batch -> the model's keyword tensors: Qwen2-VL metadata added, InternVL tiles
    padded to a bucket (``pad_tiles``), floating inputs cast to ``dtype``. Every batch key
    must be an input of the model's ``forward`` (or ``labels``, or one of
    ``REDUNDANT_BATCH_KEYS``): any other is an error that names it, never dropped. Without
    ``seq_length`` a micro-batch is padded to a multiple of ``seq_multiple`` tokens (sequence
    parallelism splits it evenly over the tensor-parallel ranks; the padding takes no loss)."""

    def __init__(self, model: nn.Cell, dtype=mindspore.float32, seq_length: Optional[int] = None,
                 bucket_tiles: bool = True, seq_multiple: int = 1, context_parallel: Tuple[int, int] = (0, 1)) -> None:
        """``context_parallel`` (rank, size): the labels are shifted on the whole sequence and
        this rank's positions kept (the model keeps its tokens), with ``label_counts`` [B]."""
        self.model, self.dtype, self.seq_length, self.seq_multiple = model, dtype, seq_length, seq_multiple
        self.context_parallel = context_parallel
        self.accepted = set(inspect.signature(model.forward).parameters) | {"labels"}
        vision = getattr(getattr(model, "config", None), "vision", None)
        self.tile_shape = None
        if bucket_tiles and "image_flags" in self.accepted and hasattr(vision, "image_size"):
            self.tile_shape = (vision.num_channels, vision.image_size, vision.image_size)

    def __call__(self, batch: Batch) -> Dict[str, Tensor]:
        unknown = [k for k in batch if k not in self.accepted and k not in REDUNDANT_BATCH_KEYS]
        if unknown:
            raise ValueError(f"batch key {unknown[0]!r}: {type(self.model).__name__}.forward takes no such input "
                             f"(it takes {', '.join(sorted(self.accepted))})")
        if self.seq_length is not None:
            batch = pad_batch(batch, self.seq_length)
        elif self.seq_multiple > 1:
            batch = pad_batch(batch, -(-batch["input_ids"].shape[1] // self.seq_multiple) * self.seq_multiple)
        if self.tile_shape is not None:
            batch = pad_tiles(batch, self.tile_shape)
        batch = dict(batch)
        if hasattr(self.model, "prepare_metadata"):
            batch.update(self.model.prepare_metadata(
                batch["input_ids"], batch.get("attention_mask"), batch.get("image_grid_thw"),
                batch.get("video_grid_thw"), batch.get("second_per_grid_ts"), batch.get("segment_ids"),
            ))
        elif "position_ids" in self.accepted and "position_ids" not in batch:
            b, length = batch["input_ids"].shape
            batch["position_ids"] = np.broadcast_to(np.arange(length, dtype=np.int64), (b, length)).copy()
        if self.context_parallel[1] > 1 and "labels" in batch:
            batch.update(self._context_parallel_labels(batch["labels"]))
        out = {}
        for key, value in batch.items():
            if key not in self.accepted and key != "label_counts":
                continue  # one of REDUNDANT_BATCH_KEYS
            tensor = Tensor(value)
            out[key] = tensor.astype(self.dtype) if np.issubdtype(value.dtype, np.floating) else tensor
        return out

    def _context_parallel_labels(self, labels: np.ndarray) -> Batch:
        """Next-token targets of this context-parallel rank's positions, and each row's count."""
        from msmm.models.core.context_parallel import local_positions

        shifted = np.concatenate([labels[:, 1:], np.full((labels.shape[0], 1), IGNORE_INDEX, labels.dtype)], axis=1)
        rank, size = self.context_parallel
        return {"labels": np.ascontiguousarray(shifted[:, local_positions(shifted.shape[1], rank, size)]),
                "label_counts": (shifted != IGNORE_INDEX).sum(axis=1).astype(np.int64)}


def batch_size_and_tokens(batch: Batch) -> Tuple[int, int]:
    """(samples, tokens) of a micro-batch: its rows and its attended tokens."""
    tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].size)
    return int(batch["input_ids"].shape[0]), tokens


def unique_parameter_names(model: nn.Cell) -> None:
    """Give every Parameter its full dotted name. Layers swapped in after construction
    (LoRA) carry names relative to their parent, and ParameterTuple needs unique names."""
    named = list(model.parameters_and_names())
    if len({p.name for _, p in named}) < len(named):
        for name, p in named:
            p.name = name


def trainable_parameters(model: nn.Cell) -> List:
    """(name, Parameter) of the parameters that get gradients: frozen ones are left out."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


class Trainer:
    def __init__(self, model: nn.Cell, config: TrainConfig, source: BatchSource, world: World = World(),
                 inputs: Optional[Callable[[Batch], Dict[str, Tensor]]] = None,
                 arguments: Optional[Dict[str, Any]] = None,
                 adapter_writer: Optional[Callable[[str], Any]] = None,
                 model_config: Optional[Dict[str, Any]] = None,
                 pipeline: Optional[ParallelConfig] = None, evaluator: Optional["Evaluator"] = None) -> None:
        """``pipeline``: where the layers go over the pipeline stages (``world.pp_size`` > 1);
        the model is then pruned to this rank's stage. ``evaluator``: validation loss
        (``msmm.train.evaluation``)."""
        self.model, self.config, self.world = model, config, world
        if mindspore.get_context("device_target") == "CPU" and async_queue_threads():
            warnings.warn(f"MindSpore's host pipeline threads ({', '.join(async_queue_threads())}) are running: "
                          f"the training step will be several times slower on CPU; set {HOST_BLOCKING_ENV}=1 "
                          "(msmm.runtime.start() does) before the first MindSpore op (docs/training.md)", stacklevel=2)
        self.adapter_writer = adapter_writer  # writes PEFT adapter files into each checkpoint
        self.stream = MicroBatchStream(source)
        self.inputs = inputs or InputBuilder(
            model, seq_length=config.seq_length,
            seq_multiple=math.lcm(world.tp_size if config.sequence_parallel else 1,
                                  2 * world.cp_size if world.cp_size > 1 else 1),
            context_parallel=(world.cp_rank, world.cp_size))
        self.micro_batches = config.micro_batches_per_step(world.dp_size)
        self.schedule = LRSchedule.from_fraction(
            config.lr, config.min_lr, config.lr_decay_iters or config.train_iters,
            config.lr_warmup_fraction, config.lr_decay_style)
        # (this rank's output-layer rows, the real vocabulary): read before a pipeline stage drops them
        self.vocab_rows = self.vocab_size = None
        if world.tp_size > 1 or world.pp_size > 1:
            self.vocab_rows, self.vocab_size = model.get_decoder().vocab_partition()
        self.stage = None
        if world.pp_size > 1:
            if pipeline is None:
                raise ValueError(f"{world.pp_size} pipeline stages need the layer placement (pipeline=)")
            self.stage = PipelineStage(model, pipeline, world.pp_rank)
        unique_parameter_names(model)
        self.named = trainable_parameters(model)
        vocab_parallel, sharded = self._tensor_parallel_loss_and_shards()
        betas = (config.adam_beta1, config.adam_beta2)
        if config.use_distributed_optimizer and world.dp_size > 1 and self.named:
            self.optimizer = DistributedAdamW(self.named, world.dp_rank, world.dp_size, world.group_names["dp"],
                                              config.weight_decay, betas, config.adam_eps, sharded)
        else:  # a pipeline stage may hold only frozen modules (LLaVA's stage 1: the projector trains)
            self.optimizer = AdamW(self.named, config.weight_decay, betas, config.adam_eps,
                                   allow_empty=self.stage is not None)
        if self.stage is not None:
            self.step_fn = PipelineTrainStep(self.stage, self.optimizer, world.pp_size, world.pipeline_ranks,
                                             world.pipeline_group, config.loss_reduction, config.clip_grad,
                                             vocab_parallel, sharded)
        else:
            self.step_fn = TrainStep(model, self.optimizer, config.loss_reduction, config.clip_grad, vocab_parallel,
                                     sharded, world.cp_size)
        self.sequence_parallel_grads = self._sequence_parallel_grads(sharded)
        # one micro-batch on one rank: forward, backward, clip and update in one graph (if asked)
        self.step_fn.one_graph = (self.stage is None and world.size == 1 and self.micro_batches == 1
                                  and os.environ.get(ONE_GRAPH_ENV, "0") == "1")
        self.iteration = 0
        self._heap_released = False
        self.arguments = arguments or {}
        self.model_config = model_config  # model.json as parsed (model_config_record), stored in every checkpoint
        self.logger = TrainLogger(config.log_dir, enabled=world.rank == 0, log_tps=config.log_tps)
        self.evaluator = evaluator
        if evaluator is not None:
            evaluator.bind(self)
        if self.sequence_parallel_grads:
            self.logger.info(f"sequence parallel over the {world.tp_size} tensor-parallel ranks: the gradients of "
                             f"{len(self.sequence_parallel_grads)} replicated text decoder parameters are summed over them")

    def _split_record(self) -> Optional[Dict[str, Any]]:
        """How the saved tensors are split (what mm-convert reads to merge them): the
        tensor-parallel size, the real vocabulary (the split pads it) and the layers per
        pipeline stage."""
        if self.world.tp_size == 1 and self.stage is None:
            return None
        record = {"tp_size": self.world.tp_size, "vocab_size": self.vocab_size, "make_vocab_size_divisible_by": 1}
        if self.stage is not None:
            record.update(llm_pp_layers=self.stage.parallel.llm_pp_layers,
                          vit_pp_layers=self.stage.parallel.vit_pp_layers)
        return record

    def _tensor_parallel_loss_and_shards(self):
        """With tensor parallelism: the vocab-parallel loss over the decoder's logits, and
        which trainable parameters are shards (as mm-convert splits them)."""
        if self.world.tp_size == 1:
            return None, None
        loss = VocabParallelCrossEntropy(self.world.group_names["tp"], self.world.tp_rank, self.world.tp_size,
                                         self.vocab_rows, self.vocab_size)
        return loss, [tp_kind(name, "tensor parallelism") != REPLICATED for name, _ in self.named]

    def _sequence_parallel_grads(self, sharded) -> List:
        """With sequence parallelism, the gradient buffers of the replicated parameters of the
        text decoder's layers and final norm (norms, row-parallel biases; not those of a vision
        part a decoder like Qwen2-VL's holds): each rank's holds its tokens' share, summed over
        the tensor-parallel ranks before the optimizer (Megatron's all-reduce of
        sequence-parallel gradients)."""
        if not self.config.sequence_parallel:
            return []
        decoder = {id(p) for _, p in self.model.get_decoder().model.named_parameters()}
        return [grad for (_, p), grad, split in zip(self.named, self.step_fn.grad_acc, sharded)
                if not split and id(p) in decoder]

    # ---- one optimizer step ----------------------------------------------------------------

    def train_step(self) -> Dict[str, float]:
        """Accumulate the micro-batches of one global batch, reduce, clip, update; with one
        micro-batch on one rank (``one_graph``) all of it is one compiled graph."""
        step = self.iteration + 1
        lr = self.schedule(self.iteration)
        if self.step_fn.one_graph:
            batch = self.stream.next()
            samples, tokens = batch_size_and_tokens(batch)
            result = self.step_fn.step(self.inputs(batch), lr)
            norm, finite = result.grad_norm, result.applied
            loss = result.numerator / max(result.denominator, 1e-12)
        else:
            loss, norm, finite, samples, tokens = self._accumulate_and_update(lr)
        if not finite:
            what = f"the loss is {loss}" if not math.isfinite(loss) else \
                f"the gradient norm is {norm} (first non-finite gradient: {self.step_fn.first_nonfinite_grad()})"
            if not self.config.skip_nonfinite_steps:
                raise NonFiniteError(f"iteration {step}: {what}; stopping (--skip-nonfinite-steps skips such steps instead)")
            self.logger.warn(f"iteration {step}: {what}; step skipped, parameters unchanged")
            self.step_fn.zero_grad()
        if not self._heap_released:  # after the first step: the compilation's freed heap back to the OS
            release_free_heap()
            self._heap_released = True
        self.iteration = step
        return {"loss": loss, "lr": lr, "grad_norm": norm, "skipped": not finite,
                "samples": samples * self.world.dp_size, "tokens": tokens}

    def _accumulate_and_update(self, lr: float) -> Tuple[float, float, bool, int, int]:
        """(loss, grad norm, finite, samples, tokens) of a step of several micro-batches or
        ranks: gradients accumulated into the buffers, reduced over the ranks, clipped and
        applied if finite."""
        numerator = denominator = 0.0
        tokens = samples = 0
        batches = []
        for _ in range(self.micro_batches):
            batch = self.stream.next()
            size, counted = batch_size_and_tokens(batch)
            samples, tokens = samples + size, tokens + counted
            # a non-finite loss is caught after the all-reduce below, on every rank alike
            # (raising here on one rank would leave the others waiting in the collective)
            if self.stage is not None:  # the pipeline schedule runs every micro-batch of the step
                batches.append(self.inputs(batch))
                continue
            result = self.step_fn.forward_backward(self.inputs(batch))
            numerator += result.numerator
            denominator += result.denominator
        if self.stage is None and self.world.size == 1 and self.step_fn.fused_update:
            # one rank: norm, guard, clip and AdamW in one kernel, no host round trip between them
            norm, finite = self.step_fn.update_from_loss(lr, numerator, denominator)
            return numerator / max(denominator, 1e-12), norm, finite, samples, tokens
        sums = np.array([numerator, denominator], np.float32)
        if self.stage is not None:  # only the last stage has the loss
            result = self.step_fn.run_schedule(batches)
            sums = self.world.all_reduce_pipeline(
                Tensor(np.array([result.numerator, result.denominator], np.float32))).asnumpy()
        totals = self.world.all_reduce_sum(self.world.all_reduce_context_parallel(Tensor(sums))).asnumpy()
        numerator, denominator = float(totals[0]), float(totals[1])
        self.world.all_reduce_in_place(self.sequence_parallel_grads, "tp")
        # context parallelism: each rank's gradients and loss cover its tokens of every sequence
        self.world.all_reduce_in_place(self.step_fn.grad_acc, "cp")
        if self.step_fn.distributed:
            self.step_fn.reduce_scatter_grads()
        else:
            self.world.all_reduce_in_place(self.step_fn.grad_acc)
        scale = 1.0 / max(denominator, 1e-12)
        norm = self.step_fn.grad_norm(scale, self.world.all_reduce_tensor_parallel, self.world.all_reduce_sum,
                                      self.world.all_reduce_pipeline if self.stage is not None else None)
        loss = numerator / max(denominator, 1e-12)
        finite = math.isfinite(norm) and math.isfinite(loss)
        if finite:
            clip = min(1.0, self.config.clip_grad / (norm + 1e-6)) if self.config.clip_grad > 0 else 1.0
            self.step_fn.update(lr, scale * clip)
        return loss, norm, finite, samples, tokens

    # ---- the loop ---------------------------------------------------------------------------

    def train(self) -> List[Dict[str, float]]:
        history = []
        while self.iteration < self.config.train_iters:
            start = time.perf_counter()
            record = self.train_step()
            record["step_time"] = time.perf_counter() - start
            history.append(record)
            if self.iteration % self.config.log_interval == 0:
                self.logger.log(self.iteration, self.config.train_iters, record, peak_memory_mb())
            if self.evaluator is not None:
                self.evaluator.after_step(self.iteration)
            if self.config.save and self.config.save_interval and self.iteration % self.config.save_interval == 0:
                self.save()
            if self.config.exit_interval and self.iteration % self.config.exit_interval == 0:
                break
        if self.config.save and (not self.config.save_interval or self.iteration % self.config.save_interval):
            self.save()
        if self.evaluator is not None:
            self.evaluator.run(self.iteration, f"iteration {self.iteration} on validation set")
        self.logger.finish()
        return history

    # ---- checkpoints -----------------------------------------------------------------------

    @property
    def shard_name(self) -> str:
        """This rank's ``mp_rank_*`` directory in a checkpoint (its tensor-parallel shard of its
        pipeline stage)."""
        return shard_name(self.world.tp_rank, self.world.pp_rank, self.world.pp_size)

    def save(self) -> Optional[str]:
        """Write a checkpoint: one data-parallel replica of every model shard writes its
        ``mp_rank_*`` files, then rank 0 publishes the iteration directory and the tracker."""
        c = self.config
        distributed = self.step_fn.distributed  # then every data-parallel rank writes its optimizer range
        optimizer = self.optimizer.state_arrays(with_master=any(p.dtype != mindspore.float32 for _, p in self.named)) \
            if c.save_optim else {}
        model = {n: p.asnumpy() for n, p in self.model.state_dict().items()}
        chunks = self.stage.saved_tensors(model) if self.stage is not None else [model]
        state = ckpt.CheckpointState(
            iteration=self.iteration,
            model=chunks[0] if len(chunks) == 1 else {},
            model_chunks=chunks if len(chunks) > 1 else [],
            optimizer={} if distributed else optimizer,
            rng={**ckpt.capture_numpy_rng(), "mindspore": mindspore.get_rng_state().asnumpy()} if c.save_rng else {},
            python_rng=ckpt.capture_python_rng() if c.save_rng else None,
            data=self.stream.state_dict(),
            extra={"arguments": self.arguments, "train_config": asdict(c), "world_size": self.world.size,
                   "tensor_parallel_size": self.world.tp_size, "pipeline_parallel_size": self.world.pp_size,
                   "model_config": self.model_config,
                   "parallel": self._split_record(),
                   "validation_data": self.evaluator.stream.state_dict() if self.evaluator is not None else None},
        ) if self.world.writes_checkpoints else None
        if state is not None:
            ckpt.write_shard(c.save, state, self.shard_name)
        if distributed and optimizer and self.world.cp_rank == 0:  # the context-parallel ranks hold the same
            ckpt.write_optimizer_shard(c.save, self.iteration, self.shard_name, self.world.dp_rank, optimizer)
        self.world.barrier()  # every shard written before it is published
        path = ckpt.publish(c.save, self.iteration, self.adapter_writer) if self.world.rank == 0 else None
        self.world.barrier()  # published before anyone goes on (or exits)
        if path is None:
            return None
        self.logger.info(f"saved checkpoint at iteration {self.iteration} to {path}"
                         + (" (with PEFT adapter files)" if self.adapter_writer else ""))
        if c.save_total_limit:
            for old in ckpt.prune_checkpoints(c.save, c.save_total_limit):
                self.logger.info(f"--save-total-limit {c.save_total_limit}: removed {old}")
        return path

    def load(self, path: str) -> None:
        """Resume from ``path`` (``--load``): weights, and optimizer/RNG/data position unless
        switched off. Weights are copied in place, so compiled graphs see them."""
        where = ckpt.resolve_load_dir(path)
        shards = shard_dirs(where)
        tp, pp = max(t for t, _ in shards) + 1, max(s for _, s in shards) + 1
        if (tp, pp) != (self.world.tp_size, self.world.pp_size):
            raise ValueError(f"--load {path}: {where} is split for tensor-parallel size {tp} x pipeline-parallel size "
                             f"{pp}, this run has --tensor-model-parallel-size {self.world.tp_size} x "
                             f"--pipeline-model-parallel-size {self.world.pp_size}; run with those sizes, or resplit it "
                             "(mm-convert <Converter> resplit --cfg.target_parallel_config.tp_size N "
                             "--cfg.target_parallel_config.llm_pp_layers [[...]], docs/convert.md)")
        state = ckpt.load_checkpoint(path, self.shard_name)
        weights = state.model
        if self.stage is not None:
            saved = state.extra.get("parallel") or {}
            for key in ("llm_pp_layers", "vit_pp_layers"):
                mine = getattr(self.stage.parallel, key)
                if key in saved and saved[key] != mine:
                    raise ValueError(f"--load {path}: {where} places the layers {key}={saved[key]}, this run "
                                     f"{mine} (model.json pipeline_num_layers); use the checkpoint's split, or resplit "
                                     "it (mm-convert <Converter> resplit, docs/convert.md)")
            chunks = state.model_chunks or [state.model]
            weights = self.stage.loaded_tensors(chunks, f"{where}/{self.shard_name}")
        self.model.load_state_dict({k: Tensor(v) for k, v in weights.items()})
        self.step_fn.sync_master()
        # --finetune and a release checkpoint start a new run: weights only (as Megatron)
        fresh_run = self.config.finetune or where.endswith("release")
        if self.config.load_optim and not fresh_run and self.step_fn.distributed:
            self.optimizer.load_state_arrays(ckpt.load_optimizer_shard(path, self.shard_name, self.world.dp_rank), where)
        elif self.config.load_optim and not fresh_run:
            if not state.optimizer:
                raise KeyError(f"{where}: holds no optimizer state (saved with --no-save-optim); use --no-load-optim")
            self.optimizer.load_state_arrays(state.optimizer, where)
        if self.config.load_rng and state.rng and not fresh_run:
            ckpt.restore_numpy_rng(state.rng)
            mindspore.set_rng_state(Tensor(state.rng["mindspore"]))
            if state.python_rng is not None:
                ckpt.restore_python_rng(state.python_rng)
        if not fresh_run:
            self.iteration = state.iteration  # continue the count, the LR schedule and the data
            self.logger.resume_at(state.iteration)  # train_log.jsonl: one record per iteration
            if state.data is not None:
                self.stream.load_state_dict(state.data)
            if self.evaluator is not None and state.extra.get("validation_data") is not None:
                self.evaluator.stream.load_state_dict(state.extra["validation_data"])  # where validation goes on
        self.logger.info(f"loaded checkpoint {where} (iteration {state.iteration})")
