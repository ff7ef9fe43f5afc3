"""Facts about the machine a benchmark ran on, for its results JSON.

``machine()`` reads /proc and package metadata only: it imports neither torch nor MindSpore,
so a worker that must stay free of one of them can call it.
"""
from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Dict, List, Optional

# CPU flags that change which kernels torch, oneDNN and the fused msmm kernels pick
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                     "amx_bf16", "amx_tile", "amx_int8", "avx_vnni")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MS_DEV_HOST_BLOCKING_RUN",
                    "MS_DEV_RUNTIME_CONF", "MSMM_FUSED_KERNELS")
PACKAGES = ("torch", "transformers", "mindspore", "numpy")


def _cpuinfo() -> Dict[str, str]:
    fields: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    key, value = line.split(":", 1)
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def affinity() -> List[int]:
    """The cores this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def machine() -> Dict[str, object]:
    """CPU model and flags, core counts, thread settings, package versions."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in FLAGS_OF_INTEREST if f in flags],
        "cores": os.cpu_count(),
        "affinity": affinity(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "environment": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(machine(), indent=1))
