"""The evaluation loop: questions -> prompts -> batched generation -> part files -> scores.

Batches are fixed by the dataset alone: consecutive runs of ``batch_size`` valid questions in
TSV order, numbered ``0, 1, ...``. Worker ``r`` of ``W`` answers batches ``r, r + W, ...``; a
batch is answered whole or not at all (resuming redoes a batch unless all its questions have
lines), and sampling draws from ``seed + batch number``. So each question sees the same batch
mates, padding and random stream whatever the worker count and however often the run was
interrupted: 2 workers, 1 worker and a resumed run give the same answers.

Workers share nothing but files: each appends to its part file; rank 0, when done, waits until
every question has a line (or a worker leaves a ``rank{r}.failed`` note), then writes the
predictions and scores.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .config import EvalConfig
from .datasets import Dataset, EvalDataError, Question, decode_images, read_tsv
from .prompts import PromptEncoder, VisionSettings, concat_vision, default_template
from .results import (PartWriter, check_run_record, finalize, missing, output_prefix, parts_dir, read_parts,
                      summary_lines)


def start_runtime() -> None:
    """Bind msmm.models to MindSpore for this process (before msmm.models is imported)."""
    from msmm import runtime

    runtime.start()


def join_world() -> Tuple[int, int]:
    """(rank, world size): the msrun job this process is a worker of, else (0, 1)."""
    from msmm.train.distributed import init_world

    world = init_world()
    return world.rank, world.size


def _merged_hf_dir(cfg: EvalConfig, scratch: str) -> str:
    """The HF checkpoint with the PEFT adapter merged in (mm-convert merge_lora), in ``scratch``."""
    if cfg.ckpt_path:
        raise EvalDataError(f"{cfg.path}: an adapter with an MM checkpoint (ckpt_path / --load) is not supported: "
                            "mm_to_hf the checkpoint first and give it as model.from_pretrained")
    from msmm.infer.cli import InferenceConfigError, merge_adapter

    out = os.path.join(scratch, "merged_hf")
    try:
        merge_adapter(cfg.family, cfg.hf_dir, cfg.adapter, out, cfg.trust_remote_code)
    except InferenceConfigError as err:
        raise EvalDataError(f"{cfg.path}: {err}") from None
    return out


def load_model(cfg: EvalConfig):
    """The model of ``cfg`` (HF dir, MM checkpoint over it, or PEFT adapter merged in), in eval
    mode, through ``msmm.models.from_pretrained`` (msmm-infer's loader: the family is checked)."""
    from msmm.infer.cli import load_model as infer_load_model

    if cfg.adapter:
        with tempfile.TemporaryDirectory(prefix="msmm-eval-") as scratch:
            return infer_load_model({"family": cfg.family, "from_pretrained": _merged_hf_dir(cfg, scratch)})
    return infer_load_model({"family": cfg.family, "from_pretrained": cfg.hf_dir, "ckpt_path": cfg.ckpt_path})


def load_tokenizer(cfg: EvalConfig):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.tokenizer_path, use_fast=True, trust_remote_code=cfg.trust_remote_code)


def prompt_encoder(cfg: EvalConfig, tokenizer) -> PromptEncoder:
    with open(os.path.join(cfg.hf_dir, "config.json")) as f:
        hf_config = json.load(f)
    vision = VisionSettings.from_hf_config(cfg.family, hf_config, min_pixels=cfg.min_pixels,
                                           max_pixels=cfg.max_pixels, max_tiles=cfg.max_tiles)
    template = cfg.template or default_template(cfg.family, hf_config)
    return PromptEncoder(cfg.family, cfg.spec, tokenizer, vision, template, cfg.system, cfg.prompt_style)


class Answerer:
    """Batches of questions -> answer strings, with one model and tokenizer."""

    def __init__(self, cfg: EvalConfig, model, tokenizer) -> None:
        from msmm.infer.generate import GenerationConfig

        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.encoder = prompt_encoder(cfg, tokenizer)
        stop = list(cfg.stop_token_ids) + self.encoder.stop_token_ids()
        if tokenizer.eos_token_id is not None:
            stop.append(tokenizer.eos_token_id)
        self.stop = sorted(set(stop))
        context = set(int(i) for i in self.encoder.encoder.context_ids)
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else tokenizer.pad_token_id
        self.pad = pad if pad is not None and pad not in context else next(i for i in range(4) if i not in context)
        self.GenerationConfig = GenerationConfig

    def prepare(self, q: Question) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """(input_ids [L], vision inputs); ``ValueError`` for a bad image or text."""
        return self.encoder(q, decode_images(q))

    def __call__(self, batch: Sequence[Question], batch_number: int, dataset: Dataset, strict: bool
                 ) -> List[Dict[str, Any]]:
        from msmm.infer.generate import generate

        entries: Dict[str, Dict[str, Any]] = {}
        ready = []
        for q in batch:
            try:
                ready.append((q, *self.prepare(q)))
            except ValueError as err:
                if strict:
                    raise EvalDataError(f"{dataset.path}: row {q.row} (index {q.index}): {err}") from None
                entries[q.index] = {"index": q.index, "skipped": str(err)}
        if ready:
            length = max(len(ids) for _, ids, _ in ready)
            input_ids = np.full((len(ready), length), self.pad, np.int64)
            mask = np.zeros((len(ready), length), np.int64)
            for row, (_, ids, _) in enumerate(ready):  # left padding, as HF generate
                input_ids[row, length - len(ids):] = ids
                mask[row, length - len(ids):] = 1
            gen = self.GenerationConfig(**self.cfg.generation, stop_token_ids=tuple(self.stop), pad_token_id=self.pad,
                                        seed=self.cfg.seed + batch_number)
            tokens = generate(self.model, input_ids, mask, gen, **concat_vision([v for _, _, v in ready]))
            for row, (q, _, _) in enumerate(ready):
                out = []
                for t in tokens[row]:
                    if int(t) in self.stop:
                        break
                    out.append(int(t))
                entries[q.index] = {"index": q.index,
                                    "prediction": self.tokenizer.decode(out, skip_special_tokens=True).strip()}
        return [entries[q.index] for q in batch]


def batches_of(dataset: Dataset, size: int) -> List[List[Question]]:
    qs = dataset.questions
    return [qs[i:i + size] for i in range(0, len(qs), size)]


def _wait_for_all(dataset: Dataset, directory: str, started: float, timeout: Optional[float], log) -> Dict[str, Any]:
    waited = 0.0
    while True:
        done = read_parts(directory)
        left = missing(dataset, done)
        if not left:
            return done
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.endswith(".failed") and os.path.getmtime(path) >= started - 1:
                with open(path) as f:
                    raise RuntimeError(f"msmm-eval: worker {name[:-len('.failed')]} failed: {f.read().strip()}")
        if timeout is not None and waited >= timeout:
            raise TimeoutError(f"msmm-eval: {len(left)} question(s) still unanswered after {timeout:.0f} s "
                               f"(first: index {left[0]}); rerun to resume")
        if waited % 60 == 0:
            log(f"msmm-eval: rank 0 waits for {len(left)} answer(s) from the other workers")
        time.sleep(1.0)
        waited += 1.0


def evaluate(cfg: EvalConfig, rank: int = 0, world: int = 1, model=None, tokenizer=None, strict: bool = False,
             progress: bool = True, gather_timeout: Optional[float] = None,
             after_batch: Optional[Callable[[int], None]] = None, log: Callable[[str], None] = print
             ) -> Optional[Dict[str, Any]]:
    """Answers this worker's share of the questions (skipping answered ones), and on rank 0 the
    predictions and score files once all are answered; returns the score record on rank 0.
    ``model`` / ``tokenizer``: already loaded (else loaded from ``cfg`` when there is work)."""
    started = time.time()
    dataset = read_tsv(cfg.dataset_path, cfg.spec, strict)
    if not dataset.questions:
        raise EvalDataError(f"{cfg.dataset_path}: no question to evaluate ({len(dataset.bad_rows)} bad rows)")
    prefix = output_prefix(cfg.output_dir, cfg.model_name, cfg.dataset)
    directory = parts_dir(prefix)
    settings = cfg.record()
    check_run_record(directory, settings)
    failed = os.path.join(directory, f"rank{rank}.failed")
    if os.path.exists(failed):
        os.remove(failed)
    try:
        done = read_parts(directory)
        batches = batches_of(dataset, cfg.batch_size)
        mine = [(k, b) for k, b in enumerate(batches) if k % world == rank]
        todo = [(k, b) for k, b in mine if any(q.index not in done for q in b)]
        if todo:
            tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)
            model = model if model is not None else load_model(cfg)
            answer = Answerer(cfg, model, tokenizer)
            from tqdm import tqdm

            total = sum(len(b) for _, b in mine)
            desc = "msmm-eval" if world == 1 else f"msmm-eval [rank {rank}/{world}]"
            bar = tqdm(total=total, initial=total - sum(len(b) for _, b in todo), desc=desc, unit="question",
                       file=sys.stderr, disable=not progress)
            writer = PartWriter(directory, rank)
            try:
                for n, (k, batch) in enumerate(todo):
                    writer.write(answer(batch, k, dataset, strict))
                    bar.update(len(batch))
                    if after_batch is not None:
                        after_batch(n)
            finally:
                writer.close()
                bar.close()
    except BaseException as err:
        if world > 1:
            with open(failed, "w") as f:
                f.write(f"{type(err).__name__}: {err}")
        raise
    if rank != 0:
        return None
    done = _wait_for_all(dataset, directory, started, gather_timeout, log) if world > 1 else read_parts(directory)
    left = missing(dataset, done)
    if left:
        raise RuntimeError(f"msmm-eval: {len(left)} question(s) unanswered (first: index {left[0]})")
    record = finalize(dataset, done, prefix, settings)
    for line in summary_lines(record):
        log(line)
    log(f"msmm-eval: predictions {prefix}_predictions.tsv, scores {prefix}_score.json")
    return record
