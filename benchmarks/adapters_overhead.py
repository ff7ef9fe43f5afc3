"""Overhead of the adapters shim against calling MindSpore's kernels directly.

PyNative: for each op, the per-call time of ``adapters.torch`` against the MindSpore
kernel the shim dispatches to on this device, interleaved samples, medians, ratios.
Graph mode: a transformer block written with adapters and the same block written with
MindSpore ops, both compiled with ``mindspore.jit``; the compiled kernel graphs are
compared op by op, and their per-call times.

    python benchmarks/adapters_overhead.py [--out benchmarks/results/adapters_overhead.json]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import adapters.torch as torch  # noqa: E402
import adapters.torch.nn.functional as F  # noqa: E402

ms.set_device("CPU")
SAMPLES, CALLS = 9, 40


def _t(*shape: int, seed: int = 0) -> Tensor:
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _per_call(fn: Callable[[], object]) -> float:
    """Seconds per call, kernels included: PyNative launches asynchronously, so sync."""
    ms.runtime.synchronize()
    start = time.perf_counter()
    for _ in range(CALLS):
        fn()
    ms.runtime.synchronize()
    return (time.perf_counter() - start) / CALLS


def compare(shim: Callable, direct: Callable) -> Dict[str, float]:
    for _ in range(3):  # warm-up: kernel selection, caches
        shim(), direct()
    shim_times, direct_times = [], []
    for _ in range(SAMPLES):  # interleaved, so drift hits both alike
        shim_times.append(_per_call(shim))
        direct_times.append(_per_call(direct))
    s, d = statistics.median(shim_times), statistics.median(direct_times)
    return {"shim_us": s * 1e6, "direct_us": d * 1e6, "overhead_pct": (s / d - 1) * 100}


def pynative_cases(rows: int, dim: int) -> Dict[str, tuple]:
    x, y = _t(rows, dim), _t(rows, dim, seed=1)
    w, b = _t(dim, dim, seed=2), _t(dim, seed=3)
    ln_w, ln_b = Tensor(np.ones(dim, np.float32)), Tensor(np.zeros(dim, np.float32))
    layer_norm = ops.LayerNorm(-1, -1, 1e-5)
    q = _t(1, 4, rows, dim // 4)
    causal = Tensor(np.tril(np.ones((rows, rows), bool)))

    def attention_direct():
        scores = ops.matmul(q, ops.swapaxes(q, -2, -1)) * (1.0 / (dim // 4) ** 0.5)
        return ops.matmul(ops.softmax(ops.masked_fill(scores, ~causal, float("-inf")), -1), q)

    return {
        "add": (lambda: torch.add(x, y), lambda: mint.add(x, y)),
        "matmul": (lambda: torch.matmul(x, w), lambda: mint.matmul(x, w)),
        "linear": (lambda: F.linear(x, w, b), lambda: mint.nn.functional.linear(x, w, b)),
        "softmax": (lambda: F.softmax(x, dim=-1), lambda: ops.softmax(x, -1)),
        "layer_norm": (lambda: F.layer_norm(x, (dim,), ln_w, ln_b), lambda: layer_norm(x, ln_w, ln_b)[0]),
        "gelu": (lambda: F.gelu(x), lambda: ops.gelu(x, approximate="none")),
        "silu": (lambda: F.silu(x), lambda: ops.silu(x)),
        "sum_dim": (lambda: torch.sum(x, dim=-1), lambda: mint.sum(x, -1)),
        "cat": (lambda: torch.cat([x, y], dim=-1), lambda: mint.cat((x, y), -1)),
        "transpose": (lambda: torch.transpose(x, 0, 1), lambda: ops.swapaxes(x, 0, 1)),
        "sdpa_causal": (lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True), attention_direct),
    }


# ---- graph mode: one block, two spellings ---------------------------------------------
class ShimBlock(torch.nn.Module):
    """Pre-LN attention + GELU MLP, written against adapters.torch."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.fc1 = torch.nn.Linear(dim, 4 * dim)
        self.fc2 = torch.nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(torch.transpose(attn, 1, 2).reshape(b, n, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class DirectBlock(ms.nn.Cell):
    """The same block written with the MindSpore kernels the shim picks on CPU."""

    def __init__(self, shim: ShimBlock):
        super().__init__()
        self.heads = shim.heads
        self.norm1_w, self.norm1_b = shim.norm1.weight, shim.norm1.bias
        self.norm2_w, self.norm2_b = shim.norm2.weight, shim.norm2.bias
        self.qkv_w, self.qkv_b = shim.qkv.weight, shim.qkv.bias
        self.proj_w, self.proj_b = shim.proj.weight, shim.proj.bias
        self.fc1_w, self.fc1_b = shim.fc1.weight, shim.fc1.bias
        self.fc2_w, self.fc2_b = shim.fc2.weight, shim.fc2.bias
        self.layer_norm = ops.LayerNorm(-1, -1, 1e-5)

    def construct(self, x):
        b, n, c = x.shape
        h = self.layer_norm(x, self.norm1_w, self.norm1_b)[0]
        qkv = mint.nn.functional.linear(h, self.qkv_w, self.qkv_b)
        qkv = qkv.reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = ops.matmul(q, ops.swapaxes(k, -2, -1)) * (1.0 / (c // self.heads) ** 0.5)
        attn = ops.matmul(ops.softmax(scores, -1), v)
        x = x + mint.nn.functional.linear(ops.swapaxes(attn, 1, 2).reshape(b, n, c), self.proj_w, self.proj_b)
        h = self.layer_norm(x, self.norm2_w, self.norm2_b)[0]
        h = ops.gelu(mint.nn.functional.linear(h, self.fc1_w, self.fc1_b), approximate="none")
        return x + mint.nn.functional.linear(h, self.fc2_w, self.fc2_b)


def kernel_ops(compiled: Callable, x: Tensor, workdir: str) -> List[str]:
    """Compile ``compiled`` (first call) and list its kernel graph's primitives in order."""
    ms.set_context(save_graphs=1, save_graphs_path=workdir)
    try:
        compiled(x)
    finally:
        ms.set_context(save_graphs=0)
    files = sorted(glob.glob(os.path.join(workdir, "hwopt_d_after_optimization_without_backend_graph_*.ir")),
                   key=os.path.getmtime)
    text = Path(files[-1]).read_text()
    return [m for m in re.findall(r"= (PrimFunc_\w+|\w+)\(", text) if m not in ("MakeTuple", "Return")]


def graph_mode(dim: int = 64, heads: int = 4, tokens: int = 32) -> dict:
    shim = ShimBlock(dim, heads)
    direct = DirectBlock(shim)
    x = _t(2, tokens, dim)
    np.testing.assert_allclose(shim(x).asnumpy(), direct(x).asnumpy(), rtol=1e-5, atol=1e-5)
    # one jit wrapper per cell, alive throughout: MindSpore caches graphs by object id()
    shim_jit, direct_jit = ms.jit(shim), ms.jit(direct)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        shim_ops, direct_ops = kernel_ops(shim_jit, x, a), kernel_ops(direct_jit, x, b)
    timing = compare(lambda: shim_jit(x).asnumpy(), lambda: direct_jit(x).asnumpy())
    return {
        "shim_kernel_count": len(shim_ops), "direct_kernel_count": len(direct_ops),
        "same_kernel_graph": shim_ops == direct_ops,
        "extra_in_shim": sorted(set(shim_ops) - set(direct_ops)),
        "shim_ops": shim_ops, "direct_ops": direct_ops, **timing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/adapters_overhead.json")
    args = parser.parse_args()
    result = {"device": "CPU", "mindspore": ms.__version__, "samples": SAMPLES, "calls_per_sample": CALLS,
              "pynative": {}}
    for label, rows, dim in (("small", 8, 64), ("medium", 128, 512)):
        result["pynative"][label] = {name: compare(*pair) for name, pair in pynative_cases(rows, dim).items()}
    result["graph"] = graph_mode()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for label, cases in result["pynative"].items():
        for name, r in cases.items():
            print(f"pynative {label:6s} {name:12s} shim {r['shim_us']:8.1f} us  direct {r['direct_us']:8.1f} us  "
                  f"overhead {r['overhead_pct']:+6.1f}%")
    g = result["graph"]
    print(f"graph: {g['shim_kernel_count']} vs {g['direct_kernel_count']} kernels, same graph: "
          f"{g['same_kernel_graph']}, extra in shim: {g['extra_in_shim']}, "
          f"per call {g['shim_us']:.1f} vs {g['direct_us']:.1f} us ({g['overhead_pct']:+.1f}%)")


if __name__ == "__main__":
    main()
