"""MindSpore's host pipeline on CPU: run it inline, not in busy-waiting worker threads.

MindSpore 2.10 hands every PyNative op and every call of a compiled graph to a chain of
worker threads (``frontend_queue``, ``backend_queue``); a thread that needs a result (``asnumpy``,
the next graph's inputs) waits for the queues to drain in a loop that never sleeps
(``AsyncRQueue::Wait``). On a CPU the waiting thread takes a core from the graph's own kernel
threads: on 2 cores ``perf`` puts 60% of a training step's samples in that loop, the step's CPU
time equals its wall time, and every kernel of the backward graph (where the graph runs
independent branches on the kernel threads) appears to take 0.2-1.5 ms.

``MS_DEV_HOST_BLOCKING_RUN=1`` makes the queues run each task in the calling thread instead.
MindSpore reads it once, at the first op of the process, so it must be set before any
MindSpore op runs: importing ``msmm.train`` sets it (unless already set) when the device is
the CPU; :func:`async_queue_threads` tells whether it came too late. On Ascend the queues
overlap host dispatch with the device, so nothing is changed there.
"""
from __future__ import annotations

import os
from typing import List

ENV = "MS_DEV_HOST_BLOCKING_RUN"
_QUEUE_THREADS = ("frontend_queue", "backend_queue")


def configure(device_target: str) -> None:
    """On CPU, ask MindSpore to run its host pipeline inline (keeps a value set by the user)."""
    if device_target == "CPU":
        os.environ.setdefault(ENV, "1")


def async_queue_threads() -> List[str]:
    """Names of MindSpore's host pipeline worker threads alive in this process (Linux ``/proc``;
    empty elsewhere): non-empty means the pipeline runs asynchronously."""
    names = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return names
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name in _QUEUE_THREADS:
            names.append(name)
    return sorted(names)
