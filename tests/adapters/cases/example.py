# torch-style cases; `torch` is injected by tests/adapters/harness.load_cases


def matmul_t(a, b):
    return torch.matmul(torch.transpose(a, 0, 1), b)


class Scale(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.matmul(torch.transpose(_eye(), 0, 1), _eye()))
        self.register_buffer("shift", _eye())

    def forward(self, x):
        return torch.matmul(x, self.w) + self.shift


def _eye():
    return torch.tensor([[1.0, 2.0], [3.0, 4.0]])


def scale():
    return Scale()
