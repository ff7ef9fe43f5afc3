"""``msmm-serve --model DIR [--adapter LORA_DIR] [--host 127.0.0.1] [--port 8000]``

Serves an HF checkpoint directory or an MM checkpoint (``mm-convert hf_to_mm`` output) of any
supported family through an OpenAI-compatible HTTP API, with continuous batching over
``--max-batch`` static-shape KV-cache slots of ``--max-model-len`` tokens. See docs/serving.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import List, Optional

from .. import runtime
from ..checkpoint.hf import load_config
from ..checkpoint.layout import is_mm_checkpoint
from ..checkpoint.mm import HF_CONFIG_DIR
from ..infer.cli import InferenceConfigError, load_model, merge_adapter, model_context
from ..infer.generate import CACHE_BUCKET
from ..registry import family_of_hf_config
from .media import MediaLimits
from .request import Limits

MB = 1024 * 1024


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="msmm-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF checkpoint directory or MM checkpoint")
    parser.add_argument("--adapter", help="HF PEFT LoRA adapter directory, merged into --model (an HF directory)")
    parser.add_argument("--served-model-name", help="the model's name in the API (default: --model's folder name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=8, help="KV-cache slots: requests decoded together")
    parser.add_argument("--max-model-len", type=int,
                        help="tokens per slot, prompt + answer (default: the model's context, at most 2048)")
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting for a slot before 429")
    parser.add_argument("--max-tokens-default", type=int, default=256, help="max_tokens when a request gives none")
    parser.add_argument("--max-images", type=int, default=8, help="images and videos per request")
    parser.add_argument("--max-image-mb", type=float, default=20.0, help="encoded size of one image")
    parser.add_argument("--max-video-mb", type=float, default=100.0, help="encoded size of one video")
    parser.add_argument("--allowed-local-media-path", action="append", default=[],
                        help="a directory whose files requests may name as file:// image or video URLs (repeatable)")
    args = parser.parse_args(argv)
    for key in ("max_batch", "max_queue", "max_tokens_default", "max_images"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def slot_length(requested: Optional[int], context: Optional[int]) -> int:
    """Tokens per KV-cache slot: ``--max-model-len`` (default: the model's context, at most 2048),
    rounded up to a multiple of ``CACHE_BUCKET`` within the model's context."""
    length = requested or min(context or 2048, 2048)
    if context is not None and length > context:
        raise ValueError(f"--max-model-len {length} is more than the model's context of {context} tokens")
    rounded = -(-length // CACHE_BUCKET) * CACHE_BUCKET
    return rounded if context is None or rounded <= context else length


def run(argv: Optional[List[str]] = None) -> int:
    """``msmm-serve`` with whatever ``msmm.models`` is imported (``main`` binds MindSpore first)."""
    from aiohttp import web
    from transformers import AutoTokenizer

    from .app import Server, build_app
    from .engine import BatchEngine
    from .prompt import ChatPromptBuilder

    args = parse_args(argv)
    started = time.time()
    model_dir = args.model.rstrip("/")
    config_dir = os.path.join(model_dir, HF_CONFIG_DIR) if is_mm_checkpoint(model_dir) else model_dir
    try:
        hf_config = load_config(config_dir)
        family = family_of_hf_config(hf_config, os.path.join(config_dir, "config.json")).name
    except (OSError, ValueError, KeyError) as err:
        print(f"msmm-serve: --model {model_dir}: {err}", file=sys.stderr)
        return 2
    try:
        context = slot_length(args.max_model_len, model_context(config_dir))
    except ValueError as err:
        print(f"msmm-serve: {err}", file=sys.stderr)
        return 2
    if args.adapter and config_dir != model_dir:
        print("msmm-serve: --adapter needs an HF --model (mm_to_hf the MM checkpoint first)", file=sys.stderr)
        return 2
    tokenizer = AutoTokenizer.from_pretrained(config_dir)
    with tempfile.TemporaryDirectory(prefix="msmm-serve-") as scratch:
        weights = model_dir
        if args.adapter:
            weights = os.path.join(scratch, "merged_hf")
            try:
                merge_adapter(family, model_dir, args.adapter, weights)
            except InferenceConfigError as err:
                print(f"msmm-serve: {err}", file=sys.stderr)
                return 2
        model = load_model({"family": family, "from_pretrained": weights})
    engine = BatchEngine(model, args.max_batch, context, args.max_queue)
    engine.start()
    media = MediaLimits(tuple(os.path.realpath(p) for p in args.allowed_local_media_path),
                        int(args.max_image_mb * MB), max_video_bytes=int(args.max_video_mb * MB))
    server = Server(engine, ChatPromptBuilder(family, hf_config, tokenizer, config_dir), tokenizer,
                    args.served_model_name or os.path.basename(model_dir), Limits(context, args.max_tokens_default,
                                                                                  args.max_images, media),
                    int(started))
    media_mb = args.max_images * args.max_image_mb + args.max_video_mb  # base64: 4/3 of the bytes
    app = build_app(server, max_body_bytes=int(media_mb * 4 / 3 * MB) + MB)
    print(f"msmm-serve: {server.model_name} ({family}) on http://{args.host}:{args.port}/v1: {args.max_batch} slots "
          f"of {context} tokens, ready in {time.time() - started:.1f} s", flush=True)
    try:
        web.run_app(app, host=args.host, port=args.port, handler_cancellation=True, print=None)
    finally:
        engine.stop()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``msmm-serve``: on MindSpore."""
    runtime.start()
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
