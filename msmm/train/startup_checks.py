"""Checks of ``data.json`` against the ``msmm-train`` arguments, run before anything is built,
so a configuration that would fail mid-run (and again at the same point after resume) stops
at start-up with a message naming both settings."""
from __future__ import annotations

import argparse
import logging
from typing import Optional

from msmm.config.data_config import DataConfig, DataConfigError, load_data_config

logger = logging.getLogger("msmm.config")
CUTOFF_KEY = "dataset_param.basic_parameters.cutoff_len"


def check_cutoff_len(config: DataConfig, seq_length: Optional[int]) -> None:
    """Every micro-batch is padded to ``--seq-length`` tokens, so no sample may be longer.

    ``cutoff_len`` (the longest sample kept; longer ones are skipped and counted as
    ``too_long``, never truncated) must be at most ``--seq-length``: larger is an error. Unset,
    it becomes ``--seq-length`` (or the tokenizer's ``model_max_length`` if that is smaller),
    which is logged. ``seq_length`` None (``--variable-seq-lengths``) checks nothing.
    """
    if seq_length is None:
        return
    basic = config.dataset_param.basic_parameters
    if basic.cutoff_len is not None:
        if basic.cutoff_len > seq_length:
            raise DataConfigError(
                f"{config.source}: {CUTOFF_KEY}: {basic.cutoff_len} is more than --seq-length {seq_length}; a sample "
                f"of up to {basic.cutoff_len} tokens does not fit the {seq_length}-token micro-batch. Set {CUTOFF_KEY} "
                f"<= {seq_length} (longer samples are then skipped and counted as too_long) or raise --seq-length")
        return
    model_max = config.dataset_param.tokenizer_config.model_max_length
    basic.cutoff_len = min(seq_length, model_max) if model_max else seq_length
    logger.info("%s: %s not set: using %d (--seq-length %d); longer samples are skipped and counted as too_long",
                config.source, CUTOFF_KEY, basic.cutoff_len, seq_length)


def check_packing(config: DataConfig, loss_reduction: str) -> None:
    """``--calculate-per-sample-loss`` averages over the rows of a micro-batch; a packed row
    holds several samples, so the two together would weigh samples wrongly: an error."""
    if config.dataloader_param.packing and loss_reduction == "sample":
        raise DataConfigError(
            f"{config.source}: dataloader_param.packing: --calculate-per-sample-loss averages over the rows of a "
            "micro-batch and a packed row holds several samples; pack with the default loss or "
            "--calculate-per-token-loss, or train per sample without packing")


def load_checked_data_config(args: argparse.Namespace) -> DataConfig:
    """``--mm-data`` read (unknown keys are errors unless ``--allow-unknown-keys``) and checked
    against ``--seq-length`` and the loss reduction."""
    config = load_data_config(args.mm_data, allow_unknown_keys=args.allow_unknown_keys)
    check_cutoff_len(config, None if args.variable_seq_lengths else args.seq_length)
    check_packing(config, args.loss_reduction)
    return config


__all__ = ["DataConfigError", "check_cutoff_len", "check_packing", "load_checked_data_config"]
