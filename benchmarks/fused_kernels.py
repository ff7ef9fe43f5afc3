"""Fused CPU kernels (adapters/kernels) vs the MindSpore composite kernels they replace vs torch
eager: forward + backward of one op, medians.

Each op of ``OPS`` runs three ways on the same inputs and output gradient:

- ``fused``: the adapters function with the fused kernel (what the dispatch table serves),
- ``composite``: the MindSpore kernels the CPU entry used before (still its fallback),
- ``torch``: torch eager, in its own process that never imports MindSpore.

MindSpore's two run inside one ``mindspore.jit`` graph each (forward and the backward through
``GradOperation(sens_param=True)``, so no loss kernels are added), alternating for ``--rounds``
rounds in one process. Times are medians of per-call wall and CPU time (all threads); the cost
of a jit call around any kernel (``graph_overhead_ms``: the fused RMSNorm on a [1, 8] input) is
in every MindSpore time and in none of torch's. Threads:
``1pinned`` pins every worker to one core (OMP_NUM_THREADS=1), ``2`` lets them use two.

    python benchmarks/fused_kernels.py                 # writes benchmarks/results/fused_kernels.json
    python benchmarks/fused_kernels.py --ops rms_norm --threads 1pinned

To add an op: one ``OPS`` row (input shapes) and its three functions in ``_torch_ops`` and
``_mindspore_ops``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import affinity, machine  # noqa: E402  (reads /proc only)

RESULTS = os.path.join(REPO, "benchmarks", "results", "fused_kernels.json")
THREAD_MODES = ("1pinned", "2")
WARMUP = 3

# op -> input shapes (float32, standard normal) and what the op removes per decoder layer
OPS: Dict[str, dict] = {
    "rms_norm": dict(shapes=[(2, 258, 256), (256,)], eps=1e-6,
                     note="x * rsqrt(mean(x^2) + eps) * w: 2 norms per decoder layer"),
    "layer_norm": dict(shapes=[(512, 256), (256,), (256,)], eps=1e-5,
                       note="2 per ViT layer (InternViT, CLIP, Qwen2-VL ViT)"),
    "silu_mul": dict(shapes=[(2, 258, 1024), (2, 258, 1024)], note="SwiGLU gating: 1 per decoder layer"),
    "gelu": dict(shapes=[(512, 1024)], note="exact GELU: 1 per InternViT layer and in projectors"),
    "quick_gelu": dict(shapes=[(512, 1024)], note="x * sigmoid(1.702 x): 1 per CLIP / Qwen2-VL ViT layer"),
    # q [B, H, L, D], k, v [B, Hkv, S, D] and the decoder's causal bool mask [B, 1, L, S] (one more input)
    "attention": dict(shapes=[(2, 8, 258, 32), (2, 4, 258, 32), (2, 4, 258, 32)], causal_mask=(2, 1, 258, 258),
                      note="sdpa with GQA and a bool mask: 1 per decoder layer"),
    # x [B, L, H, D], cos, sin [B, L, D] -> [B, H, L, D]
    "rotary": dict(shapes=[(2, 258, 8, 32), (2, 258, 32), (2, 258, 32)], out_shape=(2, 8, 258, 32),
                   note="RoPE with the head transpose: 2 per decoder layer (q and k)"),
    # x [B, L, H, D] -> [B, H, L, D]
    "transpose": dict(shapes=[(2, 258, 8, 32)], out_shape=(2, 8, 258, 32),
                      note="transpose(1, 2): v to head-major and the attention output back, 2 per decoder layer"),
    # q [B, H, L, D] (after rotary), k [B, Hkv, S, D], v [B, S, Hkv, D] as projected, causal mask -> [B, L, H * D]
    "attention_block": dict(shapes=[(2, 8, 258, 32), (2, 4, 258, 32), (2, 258, 4, 32)], causal_mask=(2, 1, 258, 258),
                            out_shape=(2, 258, 256),
                            note="v.transpose(1, 2), sdpa, out.transpose(1, 2).reshape: the decoder's attention "
                                 "after rotary (fused sdpa in both MindSpore columns; composite = mint.transpose)"),
}


# ---- torch worker (never imports MindSpore) --------------------------------------------------
def _torch_ops() -> Dict[str, Callable]:
    import torch.nn.functional as F
    import torch

    return {
        "rms_norm": lambda x, w: F.rms_norm(x, (x.shape[-1],), w, OPS["rms_norm"]["eps"]),
        "layer_norm": lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, OPS["layer_norm"]["eps"]),
        "silu_mul": lambda a, b: F.silu(a) * b,
        "gelu": F.gelu,
        "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
        "attention": lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, mask, enable_gqa=True),
        "rotary": _torch_rotary,
        "transpose": lambda x: x.transpose(1, 2),
        "attention_block": _torch_attention_block,
    }


def _torch_attention_block(q, k, v, mask):
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), mask, enable_gqa=True)
    b, h, length, d = out.shape
    return out.transpose(1, 2).reshape(b, length, h * d)


def _torch_rotary(x, cos, sin):
    import torch

    x, cos, sin = x.transpose(1, 2), cos.unsqueeze(1), sin.unsqueeze(1)
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _time_torch(fn: Callable, inputs, dout, calls: int) -> Tuple[float, float]:
    import torch

    wrt = [t for t in inputs if t.requires_grad]

    def step():
        out = fn(*inputs)
        torch.autograd.grad(out, wrt, dout)

    for _ in range(WARMUP):
        step()
    return _median_times(step, calls)


def torch_worker(ops: List[str], calls: int) -> Dict[str, dict]:
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    table = _torch_ops()
    results = {}
    for name in ops:
        arrays = _arrays(name, np)
        inputs = [torch.tensor(a, requires_grad=a.dtype == np.float32) for a in arrays[:-1]]
        wall, cpu = _time_torch(table[name], inputs, torch.tensor(arrays[-1]), calls)
        results[name] = dict(torch_ms=wall, torch_cpu_ms=cpu)
    assert "mindspore" not in sys.modules, "the torch worker imported MindSpore"
    return results


# ---- MindSpore worker ------------------------------------------------------------------------
F = ops = T = mint = None  # bound in mindspore_worker: the graphs below read them as globals


def _rms_norm_fused(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, OPS["rms_norm"]["eps"])


def _rms_norm_composite(x, w):
    return F._rms_norm_composite(x, (x.shape[-1],), w, OPS["rms_norm"]["eps"])


def _layer_norm_fused(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, OPS["layer_norm"]["eps"])


def _layer_norm_composite(x, w, b):
    return F._layer_norm_legacy(x, (x.shape[-1],), w, b, OPS["layer_norm"]["eps"])


def _silu_mul_fused(a, b):
    return F.silu_mul(a, b)


def _silu_mul_composite(a, b):
    return ops.silu(a) * b


def _gelu_fused(x):
    return F.gelu(x)


def _gelu_composite(x):
    return ops.gelu(x, approximate="none")


def _quick_gelu_fused(x):
    return F.quick_gelu(x)


def _quick_gelu_composite(x):  # msmm's quick_gelu before: silu(1.702 x) / 1.702
    return ops.silu(1.702 * x) / 1.702


def _attention_fused(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, mask, enable_gqa=True)


def _attention_composite(q, k, v, mask):
    return F._attention_math(q, k, v, mask, 0.0, False, None, True)


def _rotary_fused(x, cos, sin):
    return F.rotary_embedding(x, cos, sin, transpose_heads=True)


def _rotary_composite(x, cos, sin):  # msmm's apply_rotary(x.transpose(1, 2), cos.unsqueeze(1), ...) before
    return F._rotary_composite(x, cos, sin, True)


def _transpose_fused(x):
    return T.transpose(x, 1, 2)


def _transpose_composite(x):  # adapters' torch.transpose before: mint.transpose
    return mint.transpose(x, 1, 2)


def _attention_block(q, k, v, mask, transpose):
    out = F.scaled_dot_product_attention(q, k, transpose(v, 1, 2), mask, enable_gqa=True)
    b, h, length, d = out.shape
    return transpose(out, 1, 2).reshape(b, length, h * d)


def _attention_block_fused(q, k, v, mask):
    return _attention_block(q, k, v, mask, T.transpose)


def _attention_block_composite(q, k, v, mask):
    return _attention_block(q, k, v, mask, mint.transpose)


def _mindspore_ops() -> Dict[str, Tuple[Callable, Callable]]:
    return {name: (globals()[f"_{name}_fused"], globals()[f"_{name}_composite"]) for name in OPS}


def _forward_backward(fn: Callable) -> Callable:
    import mindspore

    grad = mindspore.ops.GradOperation(get_all=True, sens_param=True)(fn)

    def step(*args):
        return fn(*args[:-1]), grad(*args)

    return mindspore.jit(step)


def mindspore_worker(ops_: List[str], calls: int, rounds: int) -> Dict[str, dict]:
    global F, ops, T, mint
    os.environ.setdefault("MS_DEV_HOST_BLOCKING_RUN", "1")
    import mindspore
    import numpy as np

    import adapters.torch  # noqa: F401
    from adapters.torch.nn import functional

    F, ops, T, mint = functional, mindspore.ops, adapters.torch, mindspore.mint
    table = _mindspore_ops()
    results = {}
    for name in ops_:
        tensors = [mindspore.Tensor(a) for a in _arrays(name, np)]
        steps = {kind: _forward_backward(fn) for kind, fn in zip(("fused", "composite"), table[name])}
        runs = {kind: [] for kind in steps}

        for kind, step in steps.items():
            for _ in range(WARMUP):
                _sync(step(*tensors))
        for _ in range(rounds):  # alternate, so both see the same machine load
            for kind, step in steps.items():
                runs[kind].append(_median_times(lambda: _sync(step(*tensors)), calls))
        row = {}
        for kind, samples in runs.items():
            row[f"{kind}_ms"] = statistics.median(s[0] for s in samples)
            row[f"{kind}_cpu_ms"] = statistics.median(s[1] for s in samples)
        results[name] = row
    # what a jit call costs around any kernel: the fused RMSNorm's step on a [1, 8] input
    tiny = [mindspore.Tensor(np.ones(s, np.float32)) for s in ((1, 8), (8,), (1, 8))]
    step = _forward_backward(_rms_norm_fused)
    for _ in range(WARMUP):
        _sync(step(*tiny))
    results["graph_overhead_ms"] = _median_times(lambda: _sync(step(*tiny)), calls * rounds)[0]
    return results


def _sync(outputs) -> None:
    """Wait for the results (``asnumpy`` of one output blocks until the graph has run)."""
    outputs[0].asnumpy()


# ---- common ----------------------------------------------------------------------------------
def _arrays(name: str, np) -> list:
    """The op's inputs (and a causal bool mask if it takes one), then the output gradient (shaped
    as ``out_shape``, default the first input's)."""
    rng = np.random.default_rng(0)
    op = OPS[name]
    arrays = [rng.standard_normal(s).astype(np.float32) for s in op["shapes"]]
    if "causal_mask" in op:
        length, keys = op["causal_mask"][-2:]
        arrays.append(np.broadcast_to(np.tril(np.ones((length, keys), bool)), op["causal_mask"]).copy())
    return arrays + [rng.standard_normal(op.get("out_shape", op["shapes"][0])).astype(np.float32)]


def _median_times(step: Callable, calls: int) -> Tuple[float, float]:
    walls, cpus = [], []
    for _ in range(calls):
        w, c = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


def _spawn(kind: str, ops_: List[str], threads: str, calls: int, rounds: int, extra_env=None) -> Dict[str, dict]:
    n = 1 if threads == "1pinned" else 2
    env = dict(os.environ, OMP_NUM_THREADS=str(n), GLOG_v="3", PYTHONPATH=REPO)
    env.update(extra_env or {})
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--ops", ",".join(ops_),
           "--calls", str(calls), "--rounds", str(rounds)]
    if threads == "1pinned":
        cmd = ["taskset", "-c", str(affinity()[-1])] + cmd
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--threads", default=",".join(THREAD_MODES))
    parser.add_argument("--calls", type=int, default=20, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", choices=("torch", "mindspore"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    ops_ = args.ops.split(",")
    if args.worker == "torch":
        print(json.dumps(torch_worker(ops_, args.calls * args.rounds)))
        return 0
    if args.worker == "mindspore":
        print(json.dumps(mindspore_worker(ops_, args.calls, args.rounds)))
        return 0

    results = dict(machine=machine(), calls=args.calls, rounds=args.rounds, ops={n: OPS[n] for n in ops_},
                   threads={})
    for threads in args.threads.split(","):
        torch_rows = _spawn("torch", ops_, threads, args.calls, args.rounds)
        ms_rows = _spawn("mindspore", ops_, threads, args.calls, args.rounds)
        table = {"graph_overhead_ms": ms_rows["graph_overhead_ms"]}
        for name in ops_:
            row = dict(ms_rows[name], **torch_rows[name])
            row["fused_vs_composite"] = row["composite_ms"] / row["fused_ms"]
            row["fused_vs_torch"] = row["torch_ms"] / row["fused_ms"]
            table[name] = row
        if threads == "2":  # the fused kernels' own threads: the same run with one kernel thread
            single = _spawn("mindspore", ops_, threads, args.calls, args.rounds,
                            {"OMP_NUM_THREADS": "1", "MSMM_KERNEL_THREADS": "1"})
            for name in ops_:
                table[name]["fused_1thread_ms"] = single[name]["fused_ms"]
        results["threads"][threads] = table
        print(f"threads {threads}")
        print(f"  {'op':<12}{'fused':>9}{'composite':>11}{'torch':>9}{'vs composite':>14}{'vs torch':>10}")
        for name in ops_:
            row = table[name]
            print(f"  {name:<12}{row['fused_ms']:>9.3f}{row['composite_ms']:>11.3f}{row['torch_ms']:>9.3f}"
                  f"{row['fused_vs_composite']:>13.1f}x{row['fused_vs_torch']:>9.2f}x")
        print(f"  (a jit call's own cost, in every MindSpore time: {table['graph_overhead_ms']:.3f} ms)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
