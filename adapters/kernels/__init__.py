"""Fused CPU kernels: C++ sources in ``csrc/``, built once per machine (``build.py``) and
called through ``mindspore.ops.Custom`` (func_type ``aot``) with a ``bprop``, so they run
in PyNative and under ``mindspore.jit``. They serve the CPU entries of the dispatch table;
each falls back to the composite MindSpore kernel when it cannot be built."""
