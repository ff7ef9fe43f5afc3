"""torch.autograd: Function with custom backward, grad modes."""
