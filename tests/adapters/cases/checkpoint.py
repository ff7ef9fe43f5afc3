# torch-style checkpoint cases; `torch` is injected by tests/adapters/harness.load_cases


def _block(x, w):
    return torch.sin(torch.matmul(x, w)) * x.sum()


def checkpoint_function(x, w):
    return torch.utils.checkpoint.checkpoint(_block, x, w, use_reentrant=False) + x.mean()


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75], [0.1, 0.2, 0.3]]))

    def forward(self, x):
        return torch.sin(torch.matmul(x, self.w))


class Checkpointed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=False) * 2


def checkpointed():
    return Checkpointed()
