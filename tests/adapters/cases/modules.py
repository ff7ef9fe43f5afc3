# torch-style modules for the nn.Module contract; `torch` is injected by the harness


class Affine(torch.nn.Module):
    def __init__(self, n, persistent=True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n, n) * 0.5)
        self.register_buffer("offset", torch.ones(n) * 0.25, persistent=persistent)

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.offset


class Tower(torch.nn.Module):
    """Nested containers, a tied parameter, a frozen parameter, a non-persistent buffer."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Affine(3), Affine(3, persistent=False)])
        self.seq = torch.nn.Sequential(Affine(3), Affine(3))
        self.heads = torch.nn.ModuleDict({"left": Affine(3), "right": Affine(3)})
        self.heads["right"].weight = self.blocks[0].weight  # tied
        self.scale = torch.nn.Parameter(torch.ones(3) * 2.0, requires_grad=False)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        x = self.seq(x)
        return self.heads["left"](x) * self.scale + self.heads["right"](x)


def tower():
    return Tower()
