"""LLaVA-Instruct-150K (``conversations`` schema) -> the "mllm" ShareGPT format of the Qwen2-VL seed.

    python -m msmm.data.convert_llava_instruct \\
        --input data/llava_instruct_150k.json \\
        --output data/mllm_format_llava_instruct_data.json \\
        --image-prefix COCO2017/train2017

Each record becomes ``{"messages": [{"role", "content"}], "images": [prefix/image]}``, image
paths relative to the ``dataset_dir`` of ``data.json``. Records that cannot be converted are
skipped and reported with their line (``--strict`` stops at the first one instead).
"""
from __future__ import annotations

import argparse
import json
import logging
import posixpath
import sys
from typing import Optional, Sequence

from msmm.data.bad_input import BadInput, BadInputError, BadInputLog
from msmm.data.records import iter_json_objects, parse_record


def convert(input_path: str, output_path: str, image_prefix: str = "", log: Optional[BadInputLog] = None) -> int:
    """Write the converted records of ``input_path``; return how many were written."""
    log = log if log is not None else BadInputLog()
    out = []
    for line, obj in iter_json_objects(input_path):
        record = obj if isinstance(obj, BadInput) else parse_record(obj, f"{input_path}:{line}", media_root=None)
        if isinstance(record, BadInput):
            log.report(record)
            continue
        item = {"messages": [{"role": m.role, "content": m.content} for m in record.messages]}
        item["images"] = [posixpath.join(image_prefix, p) if image_prefix else p for p in record.images]
        if record.videos:
            item["videos"] = [posixpath.join(image_prefix, p) if image_prefix else p for p in record.videos]
        out.append(item)
    with open(output_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=2)
    return len(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="llava_instruct_150k.json (or any conversations-schema json/jsonl)")
    parser.add_argument("--output", required=True, help="mllm_format_llava_instruct_data.json")
    parser.add_argument("--image-prefix", default="COCO2017/train2017", help="prepended to each image path")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad record")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    log = BadInputLog(strict=args.strict)
    try:
        n = convert(args.input, args.output, args.image_prefix, log)
    except (BadInputError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    skipped = sum(log.total.values())
    print(f"wrote {n} record(s) to {args.output}; skipped {skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
