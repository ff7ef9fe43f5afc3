"""Minimal repro of the slow compiled backward on CPU: a 20-layer residual MLP
(``relu(h @ w) + h``, [232, 64] x [64, 64]) under ``mindspore.jit(value_and_grad)``, its
forward alone, and torch eager, one process per mode (MindSpore reads its host-pipeline
setting once per process):

    python benchmarks/backward_mlp.py grad                                # msmm's setting (inline)
    MS_DEV_HOST_BLOCKING_RUN=0 python benchmarks/backward_mlp.py grad     # asynchronous host pipeline
    python benchmarks/backward_mlp.py forward
    python benchmarks/backward_mlp.py torch

Prints the median wall and CPU time (``time.process_time``, all threads) of ``--steps`` steps
after 3 warm-up steps. See docs/training.md ("Why the compiled backward was slow").
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS, ROWS, WIDTH, THREADS = 20, 232, 64, 2


def median_times(fn, steps: int):
    for _ in range(3):
        fn()
    wall, cpu = [], []
    for _ in range(steps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def torch_step(x, ws):
    import torch

    torch.set_num_threads(THREADS)
    inputs, weights = torch.tensor(x), [torch.tensor(w, requires_grad=True) for w in ws]

    def step():
        h = inputs
        for w in weights:
            h = torch.relu(h @ w) + h
        h.sum().backward()
        for w in weights:
            w.grad = None
    return step


def mindspore_step(x, ws, grad: bool):
    sys.path.insert(0, REPO)
    from msmm import runtime

    runtime.start("CPU", convert_models=False)  # before any MindSpore op (host pipeline setting)
    import mindspore
    from mindspore import Parameter, Tensor, nn, ops

    class MLP(nn.Cell):
        def __init__(self):
            super().__init__()
            self.ws = mindspore.ParameterTuple([Parameter(Tensor(w), name=f"w{i}") for i, w in enumerate(ws)])

        def construct(self, h):
            for w in self.ws:
                h = ops.relu(ops.matmul(h, w)) + h
            return h.sum()

    model, inputs = MLP(), Tensor(x)
    grad_fn = mindspore.value_and_grad(model, None, model.ws)

    def run(h):
        return grad_fn(h) if grad else model(h)

    compiled = mindspore.jit(run)

    def step():
        out = compiled(inputs)
        (out[0] if grad else out).asnumpy()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("grad", "forward", "torch"))
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, WIDTH)).astype(np.float32)
    ws = [(rng.standard_normal((WIDTH, WIDTH)) * 0.1).astype(np.float32) for _ in range(LAYERS)]
    step = torch_step(x, ws) if args.mode == "torch" else mindspore_step(x, ws, args.mode == "grad")
    wall, cpu = median_times(step, args.steps)
    print(f"{args.mode} (MS_DEV_HOST_BLOCKING_RUN={os.environ.get('MS_DEV_HOST_BLOCKING_RUN')}): "
          f"wall {wall:.2f} ms, CPU {cpu:.2f} ms")


if __name__ == "__main__":
    main()
