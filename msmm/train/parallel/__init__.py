"""Megatron-style parallelism for msmm-train: the rank layout, process groups, tensor-parallel collectives."""
