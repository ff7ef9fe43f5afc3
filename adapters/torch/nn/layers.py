"""torch.nn layers as MindSpore Cells."""
__all__: list = []
