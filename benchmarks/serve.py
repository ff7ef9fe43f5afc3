"""Load test of ``msmm-serve`` on loopback: the same requests sent by 1, 4 and 8 concurrent
clients (the official ``openai`` client, streaming), against one server in one run.

    python benchmarks/serve.py [--model HF_DIR] [--requests 64] [--clients 1 4 8] [--max-tokens 32]

Without ``--model`` it serves a tiny random Qwen2-VL (``examples/tiny/make_tiny_assets.py
--hf-model``). Each client sends its share of ``--requests`` one after the other; every
fourth request carries an image. Prints and writes benchmarks/results/serve.json and the
markdown table of docs/serving.md: per client count, requests that succeeded, aggregate
output tokens/s (completion tokens of all requests / wall time), latency and time to the
first token (p50 / p95), and the throughput relative to one client.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
from serve_process import live_server  # noqa: E402
QUESTIONS = ["What colour is the square?", "Describe the image.",
             "What colour is the square in the picture? Answer in one word, please.",
             "Describe the image. " * 6 + "Is the square red, green or blue?"]


def request_messages(k: int, images: str) -> list:
    question = QUESTIONS[k % len(QUESTIONS)]
    if k % 4 == 3:
        image = os.path.join(images, f"{k % 8}.png")
        return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file://" + image}},
                                             {"type": "text", "text": question}]}]
    return [{"role": "user", "content": question}]


def one_request(client, messages: list, max_tokens: int) -> Dict[str, float]:
    """Latency, time to the first token and completion tokens of one streamed request."""
    start = time.perf_counter()
    first = None
    usage = None
    for chunk in client.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens,
                                                temperature=0, stream=True, stream_options={"include_usage": True}):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        if chunk.usage is not None:
            usage = chunk.usage
    end = time.perf_counter()
    return {"latency": end - start, "ttft": (first or end) - start, "tokens": usage.completion_tokens}


def load(client, clients: int, requests: int, max_tokens: int, images: str) -> Dict[str, float]:
    """``requests`` requests from ``clients`` threads; the aggregate numbers."""
    results: List[Dict[str, float]] = []
    failures: List[str] = []
    lock = threading.Lock()

    def worker(c: int) -> None:
        for k in range(c, requests, clients):
            try:
                result = one_request(client, request_messages(k, images), max_tokens)
            except Exception as err:  # counted, the run goes on
                with lock:
                    failures.append(f"{type(err).__name__}: {err}")
                continue
            with lock:
                results.append(result)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latency = [r["latency"] for r in results]
    ttft = [r["ttft"] for r in results]
    tokens = sum(r["tokens"] for r in results)

    def pct(values, q):
        return round(1000 * float(np.percentile(values, q)), 1) if values else None

    return {"clients": clients, "requests": requests, "succeeded": len(results), "failures": failures[:5],
            "wall_s": round(wall, 2), "output_tokens": tokens, "output_tokens_per_s": round(tokens / wall, 1),
            "requests_per_s": round(len(results) / wall, 2),
            "latency_p50_ms": pct(latency, 50), "latency_p95_ms": pct(latency, 95),
            "ttft_p50_ms": pct(ttft, 50), "ttft_p95_ms": pct(ttft, 95),
            "mean_tokens_per_request": round(statistics.mean(r["tokens"] for r in results), 1) if results else None}


def table(rows: List[Dict[str, float]]) -> str:
    base = rows[0]["output_tokens_per_s"]
    lines = ["| clients | succeeded | output tokens/s | vs 1 client | latency p50 / p95 (ms) "
             "| first token p50 / p95 (ms) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['succeeded']}/{r['requests']} | {r['output_tokens_per_s']} | "
                     f"{r['output_tokens_per_s'] / base:.2f}x | {r['latency_p50_ms']} / {r['latency_p95_ms']} | "
                     f"{r['ttft_p50_ms']} / {r['ttft_p95_ms']} |")
    return "\n".join(lines)


def main() -> None:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF checkpoint to serve (default: a tiny random Qwen2-VL)")
    parser.add_argument("--images", help="folder of images for the image requests (with --model)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--slots", type=int, default=8, help="msmm-serve --max-batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msmm-bench-serve-") as scratch:
        model, images = args.model, args.images
        if model is None:
            subprocess.run([sys.executable, os.path.join(REPO, "examples", "tiny", "make_tiny_assets.py"), "--family",
                            "qwen2vl", "--out", scratch, "--samples", "8", "--hf-model"], check=True)
            model, images = os.path.join(scratch, "hf"), os.path.join(scratch, "images")
        serve_args = ["--model", model, "--served-model-name", "bench", "--max-batch", str(args.slots),
                      "--max-model-len", "256", "--max-queue", "64", "--allowed-local-media-path", images]
        with live_server(serve_args, os.path.join(scratch, "server.log")) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
            for k in range(8):  # compile every prompt bucket the requests use
                one_request(client, request_messages(k, images), 2)
            rows = [load(client, c, args.requests, args.max_tokens, images) for c in args.clients]
    result = {"config": vars(args), "cpu_count": os.cpu_count(), "runs": rows}
    print(json.dumps(result, indent=1))
    print(table(rows))
    out = os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "serve.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
