"""``msmm-eval evaluate_*.json [--load MM_DIR] [--adapter PEFT_DIR] [--batch-size N] [--strict]``

Evaluates a model on AI2D, MMMU, ChartQA or DocVQA (VLMEvalKit TSVs) as MindSpeed-MM's
``evaluate_*.json`` configures it, on MindSpore; under ``msrun`` the questions are shared by
the workers. See docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

if __name__ == "__main__":  # run as a script (msrun): its folder must not shadow packages (datasets, ...)
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

from msmm.eval.config import EvalConfigError, load_eval_config
from msmm.eval.datasets import EvalDataError
from msmm.eval.results import ResumeMismatch


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="msmm-eval", description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="evaluate_*.json (MindSpeed-MM's, or with msmm's model block)")
    parser.add_argument("--mm-model", dest="mm_model", help="the same config, as MindSpeed-MM's scripts pass it")
    parser.add_argument("--load", help="MM checkpoint over the HF weights (mm-convert hf_to_mm or msmm-train output)")
    parser.add_argument("--adapter", help="HF PEFT LoRA adapter directory, merged into the HF weights")
    parser.add_argument("--batch-size", type=int, help="questions per generate call (default: the config's, or 1)")
    parser.add_argument("--dataset-path", help="replaces dataset_path")
    parser.add_argument("--result-output-path", help="replaces result_output_path")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad row instead of skipping it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--gather-timeout", type=float, default=None,
                        help="seconds rank 0 waits for the other workers' answers after its own (default: no limit)")
    args = parser.parse_args(argv)
    if bool(args.config) == bool(args.mm_model):
        parser.error("give the config once: msmm-eval CONFIG or msmm-eval --mm-model CONFIG")
    return args


def run(argv: Optional[List[str]] = None) -> int:
    """``msmm-eval`` with whatever ``msmm.models`` is imported (the console script binds MindSpore first)."""
    from msmm.eval.run import evaluate, join_world

    args = parse_args(argv)
    overrides = {k: v for k, v in (("dataset_path", args.dataset_path), ("result_output_path", args.result_output_path),
                                   ("batch_size", args.batch_size)) if v is not None}
    try:
        cfg = load_eval_config(args.config or args.mm_model, args.load, args.adapter, overrides)
        rank, world = join_world()
        evaluate(cfg, rank, world, strict=args.strict, progress=not args.no_progress,
                 gather_timeout=args.gather_timeout)
    except (EvalConfigError, EvalDataError, ResumeMismatch) as err:
        print(f"msmm-eval: error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``msmm-eval``: on MindSpore."""
    from msmm.eval.run import start_runtime

    start_runtime()
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
