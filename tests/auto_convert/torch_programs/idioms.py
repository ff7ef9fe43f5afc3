"""Torch idioms that failed at run time once converted (issue 14): `attn.softmax(dim=-1)`,
`input_.clone()` inside an autograd.Function's forward, and a `no_grad` block inside the
differentiated step (its value must carry no gradient, as in torch)."""
import torch
from torch import nn


class CopyToRegion(torch.autograd.Function):
    """Megatron's copy-to-tensor-parallel-region shape; the backward scales so that the
    test sees the custom gradient is used."""

    @staticmethod
    def forward(ctx, input_):
        return input_.clone()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * 0.5


class GatedAttention(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.gate = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, target):
        b, n, c = x.shape
        x = CopyToRegion.apply(x)
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        with torch.no_grad():
            scale = self.gate(out).sigmoid().mean(dim=-1, keepdim=True)
        return ((self.proj(out) * scale - target) ** 2).mean()
