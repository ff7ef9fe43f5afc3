"""torch.distributed over mindspore.communication."""
