"""torch.nn.functional over MindSpore kernels."""
