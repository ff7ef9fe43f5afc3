"""``data.json`` -> a ready :class:`DataLoader` (records, preprocessing, template, sampler, collator)."""
from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from msmm.config.data_config import DataConfig
from msmm.data.bad_input import BadInputLog
from msmm.data.collate import PackingCollator, PaddingCollator
from msmm.data.dataset import InternVLVision, LlavaVision, MultimodalDataset, Qwen2VLVision
from msmm.data.image_processing import CLIPImageTransform, InternVLImageTransform, Qwen2VLImageTransform
from msmm.data.loader import DataLoader
from msmm.data.records import Record, load_records
from msmm.data.sampler import EpochSampler
from msmm.data.templates import ConversationEncoder, add_missing_vision_tokens
from msmm.data.video import InternVLFrameSampler, Qwen2VLFrameSampler

logger = logging.getLogger("msmm.data")


def build_vision(config: DataConfig):
    """The image/video preprocessing of the config's model family."""
    p = config.dataset_param
    pre = p.preprocess_parameters
    if config.model_family == "internvl":
        tokens = int((p.image_size // p.patch_size) ** 2 * p.downsample_ratio**2)
        transform = InternVLImageTransform(p.image_size, p.min_dynamic_patch, p.max_dynamic_patch, p.use_thumbnail, p.dynamic_image_size)
        return InternVLVision(transform, InternVLFrameSampler(p.min_num_frame, p.max_num_frame, p.sampling_method), tokens)
    if config.model_family == "qwen2vl":
        return Qwen2VLVision(
            Qwen2VLImageTransform(pre.image_min_pixels, pre.image_max_pixels),
            Qwen2VLImageTransform(pre.video_min_pixels, pre.video_max_pixels),
            Qwen2VLFrameSampler(pre.video_fps, pre.video_minlen, pre.video_maxlen),
        )
    return LlavaVision(CLIPImageTransform(p.crop_size, p.crop_size, pre.pad_to_square), p.patch_size)


SPLITS = ("train", "validation")


def has_validation_data(config: DataConfig) -> bool:
    """data.json names validation data: ``val_dataset``, or a ``val_rate`` share of the records."""
    basic = config.dataset_param.basic_parameters
    return bool(basic.val_dataset or basic.val_rate)


def split_records(records: Sequence[Record], val_rate: float, seed: int) -> Tuple[List[Record], List[Record]]:
    """(train, validation) as HF ``datasets``' ``train_test_split(test_size=val_rate, seed=seed)``
    (MindSpeed-MM's split): one permutation from ``numpy.random.default_rng(seed)``, its first
    ``ceil(val_rate * n)`` records for validation, the rest for training, in permutation order."""
    order = np.random.default_rng(seed).permutation(len(records))
    n_val = math.ceil(val_rate * len(records))
    return [records[i] for i in order[n_val:]], [records[i] for i in order[:n_val]]


def _split(config: DataConfig, records: List[Record], split: str, seed: int, log: BadInputLog) -> List[Record]:
    """The records of ``split``: ``val_dataset`` (its first ``val_max_samples``) is the validation
    data and leaves the training records whole; else ``val_rate`` splits them (``split_records``)."""
    basic = config.dataset_param.basic_parameters
    if basic.val_dataset:
        if split == "train":
            return records
        attr, root_name = config.dataset_param.attr, "data_folder" if basic.data_path else "dataset_dir"
        held_out = load_records(basic.val_dataset, basic.media_root, log, attr, root_name)
        return held_out[: basic.val_max_samples] if basic.val_max_samples else held_out
    if basic.val_rate:
        return split_records(records, basic.val_rate, seed)[SPLITS.index(split)]
    if split == "validation":
        raise ValueError(f"{config.source}: no validation data: set dataset_param.basic_parameters.val_dataset "
                         "(an annotation file) or val_rate (a share of the records)")
    return records


def build_dataloader(
    config: DataConfig,
    tokenizer=None,
    rank: int = 0,
    world_size: int = 1,
    log: Optional[BadInputLog] = None,
    global_batch_size: Optional[int] = None,
    split: str = "train",
    split_seed: Optional[int] = None,
) -> DataLoader:
    """Everything the trainer needs to read the data of ``config``, for data-parallel rank
    ``rank`` of ``world_size``.

    ``split``: ``"train"``, or ``"validation"`` (data.json's ``val_dataset`` or ``val_rate``,
    see ``_split``); ``val_rate`` splits with ``split_seed`` (``msmm-train --seed``; default:
    ``dataloader_param.seed``). ``repeat_time`` repeats the training records only.

    ``tokenizer`` defaults to ``AutoTokenizer.from_pretrained(tokenizer_config.from_pretrained)``.
    With ``group_by_length``, samples are grouped by length within mega-batches of
    ``global_batch_size`` (default: one micro-batch per rank), so the grouping, like the
    sampler's split, does not depend on the data-parallel size.
    """
    if tokenizer is None:
        from transformers import AutoTokenizer

        tc = config.dataset_param.tokenizer_config
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_path, use_fast=True, trust_remote_code=tc.trust_remote_code)
        note = add_missing_vision_tokens(tokenizer, config.model_family)
        if note:
            logger.info("%s: %s", config.source, note)
    basic = config.dataset_param.basic_parameters
    loader_param = config.dataloader_param
    log = log if log is not None else BadInputLog(strict=basic.strict)
    attr = config.dataset_param.attr
    root_name = "data_folder" if basic.data_path else "dataset_dir"
    records = load_records(basic.annotation_path, basic.media_root, log, attr, root_name)
    records = records[: basic.max_samples] if basic.max_samples else records
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    records = _split(config, records, split, loader_param.seed if split_seed is None else split_seed, log)
    log.end_reading()
    records = records * basic.repeat_time if split == "train" else records
    seq_length = basic.cutoff_len or config.dataset_param.tokenizer_config.model_max_length
    encoder = ConversationEncoder(tokenizer, config.template, config.model_family)
    dataset = MultimodalDataset(records, encoder, build_vision(config), seq_length, loader_param.seed)
    pad_id = loader_param.collate_param.pad_id
    pad_id = pad_id if pad_id is not None else (tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    if loader_param.packing:
        if seq_length is None:
            raise ValueError("packing needs dataset_param.basic_parameters.cutoff_len (the packed row length)")
        collate = PackingCollator(pad_id, seq_length)
    else:
        collate = PaddingCollator(pad_id)
    sampler = EpochSampler(
        len(dataset),
        seed=loader_param.seed,
        shuffle=loader_param.shuffle,
        lengths=dataset.modality_lengths() if loader_param.group_by_length else None,
        group_batch_size=global_batch_size or loader_param.micro_batch_size * world_size,
        rank=rank,
        world_size=world_size,
        drop_last=loader_param.drop_last,
        micro_batch_size=loader_param.micro_batch_size,
    )
    return DataLoader(dataset, sampler, collate, loader_param.micro_batch_size, loader_param.num_workers, loader_param.drop_last, log)
