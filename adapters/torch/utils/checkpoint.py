"""torch.utils.checkpoint over MindSpore recompute."""
