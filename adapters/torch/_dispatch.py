"""One table of kernels per device.

Every op whose best MindSpore kernel depends on the device registers its variants
here; public functions bind the variant for the current device once, at import
time, so a call costs no lookup and graph mode sees a plain function.

The device is ``MSMM_DEVICE`` if set (``CPU`` or ``Ascend``), else MindSpore's
configured device target.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import mindspore

DEVICES = ("CPU", "Ascend")


def _current_device() -> str:
    device = os.environ.get("MSMM_DEVICE")
    if not device:
        device = mindspore.get_context("device_target") or "CPU"
    if device not in DEVICES:
        raise ValueError(f"adapters: unsupported device {device!r}; expected one of {DEVICES}")
    return device


DEVICE = _current_device()


@dataclass
class Entry:
    kernel: Callable
    tested: bool  # run by the contract tests on a machine of this device
    note: str = ""


# op name -> device -> entry
TABLE: Dict[str, Dict[str, Entry]] = {}


class UnsupportedOpError(NotImplementedError):
    """No kernel serves this op on this device."""


def register(op: str, *devices: str, tested: bool = True, note: str = "") -> Callable:
    """Decorator: register ``fn`` as the kernel of ``op`` on ``devices``.

    Ascend kernels cannot run on the CPU machines where tests run; register them
    with ``tested=False`` so the coverage table says so.
    """

    def deco(fn: Callable) -> Callable:
        for device in devices:
            if device not in DEVICES:
                raise ValueError(f"unknown device {device!r} for op {op!r}")
            TABLE.setdefault(op, {})[device] = Entry(fn, tested, note)
        return fn

    return deco


def _unsupported(op: str, device: str) -> Callable:
    message = f"adapters: op '{op}' has no kernel on device '{device}'"

    def kernel(*args, **kwargs):
        raise UnsupportedOpError(message)

    return kernel


def kernel(op: str, device: Optional[str] = None) -> Callable:
    """The kernel serving ``op`` on ``device`` (default: the current device).

    An op without a kernel on the device yields a function that raises
    :class:`UnsupportedOpError` naming the op and the device when called.
    """
    device = device or DEVICE
    entry = TABLE.get(op, {}).get(device)
    return entry.kernel if entry is not None else _unsupported(op, device)
