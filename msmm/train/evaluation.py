"""Validation loss during training, as Megatron's ``evaluate`` (``--eval-interval``, ``--eval-iters``).

Every ``interval`` iterations, and once more after the last one ("on validation set"), the
model runs forward only, in eval mode (no dropout, no drop path), over ``iters`` global
batches of validation micro-batches: the micro-batches of one training step
(``global_batch_size / (micro_batch_size x data-parallel size)`` per rank) ``iters`` times,
read from an endless stream that goes on where the previous validation stopped (Megatron's
cyclic validation iterator). The loss is reduced as the training loss: the trainer's
numerator and denominator per micro-batch (``msmm.train.loss``), summed over the
micro-batches and the data-parallel ranks, then divided. The forward is one compiled graph
(the training step's own loss function, without gradients), compiled in eval mode.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Optional, Tuple

import mindspore
import numpy as np
from mindspore import Tensor

from msmm import runtime

from .trainer import BatchSource, MicroBatchStream

if TYPE_CHECKING:
    from msmm.config.data_config import DataConfig

    from .distributed import World
    from .trainer import Trainer

DEFAULT_INTERVAL, DEFAULT_ITERS = 1000, 100  # Megatron's --eval-interval, --eval-iters


def refusal(parallelism: str) -> str:
    return (f"--eval-interval: validation loss with {parallelism} is not implemented; run without validation data "
            "(data.json val_dataset / val_rate) or with --eval-iters 0")


PIPELINE_REFUSAL = refusal("pipeline parallelism")


def evaluator_from_args(args: argparse.Namespace, data_config: "DataConfig",
                        world: "World") -> Tuple[Optional["Evaluator"], Optional[str]]:
    """``msmm-train``'s validation: an :class:`Evaluator` when data.json names validation data
    (``val_dataset`` or ``val_rate``) and ``--eval-iters`` is not 0, else None; and the line to
    log (what validation does, or why the given flags have no effect)."""
    from msmm.data.build import build_dataloader, has_validation_data

    given = [flag for flag, value in (("--eval-interval", args.eval_interval), ("--eval-iters", args.eval_iters))
             if value is not None]
    if not has_validation_data(data_config):
        return None, (f"{', '.join(given)}: no effect (no validation data: {data_config.source} sets neither "
                      "dataset_param.basic_parameters.val_dataset nor val_rate)") if given else None
    iters = DEFAULT_ITERS if args.eval_iters is None else args.eval_iters
    if iters == 0:
        return None, f"--eval-iters 0: the validation data of {data_config.source} is not evaluated"
    if world.pp_size > 1:
        raise ValueError(PIPELINE_REFUSAL)
    if args.context_parallel_size > 1:
        raise ValueError(refusal("context parallelism"))
    loader = build_dataloader(data_config, rank=world.dp_rank, world_size=world.dp_size,
                              global_batch_size=args.global_batch_size, split="validation", split_seed=args.seed)
    interval = args.eval_interval or DEFAULT_INTERVAL
    return Evaluator(loader, interval, iters), (
        f"validation loss every {interval} iterations and after the last: {iters} global batches each, from "
        f"{len(loader.dataset)} validation samples")


class Evaluator:
    """Validation loss of the trainer it is bound to (``Trainer(evaluator=...)``)."""

    def __init__(self, source: BatchSource, interval: int, iters: int) -> None:
        if interval <= 0 or iters <= 0:
            raise ValueError(f"--eval-interval ({interval}) and --eval-iters ({iters}) must be positive")
        self.stream = MicroBatchStream(source)
        self.interval, self.iters = interval, iters
        self.trainer: Optional["Trainer"] = None

    def bind(self, trainer: "Trainer") -> None:
        """Use ``trainer``'s model, input builder, loss reduction, micro-batch count and ranks."""
        if trainer.stage is not None:
            raise ValueError(PIPELINE_REFUSAL)
        self.trainer = trainer
        self.forward = runtime.jit(trainer.step_fn._loss)  # no value_and_grad: forward only

    def after_step(self, iteration: int) -> Optional[float]:
        """The validation loss when ``iteration`` is a multiple of the interval, else None."""
        if iteration % self.interval:
            return None
        return self.run(iteration, f"iteration {iteration}")

    def run(self, iteration: int, prefix: str) -> float:
        """Evaluate, log (``validation loss at <prefix>``) and return the validation loss."""
        trainer = self.trainer
        model = trainer.model
        was_training = model.training
        model.set_train(False)  # compiled graphs keep the mode they were compiled in
        numerator = denominator = 0.0
        try:
            for _ in range(self.iters * trainer.micro_batches):
                inputs = trainer.inputs(self.stream.next())
                labels = inputs.pop("labels")
                num, den, _ = self.forward(labels, mindspore.mutable(inputs))
                numerator += float(num.asnumpy())
                denominator += float(den.asnumpy())
        finally:
            model.set_train(was_training)
        totals = trainer.world.all_reduce_sum(Tensor(np.array([numerator, denominator], np.float32))).asnumpy()
        loss = float(totals[0]) / max(float(totals[1]), 1e-12)
        trainer.logger.validation(iteration, prefix, loss)
        return loss
