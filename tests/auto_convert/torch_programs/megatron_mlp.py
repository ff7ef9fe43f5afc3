"""A Megatron-style MLP in plain torch: fused bias-GeLU and gradient scaling written as
torch.autograd.Function with custom backward, tensor-parallel region helpers."""
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def bias_gelu(bias, y):
    x = bias + y
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def bias_gelu_back(g, bias, y):
    """d gelu_tanh(x) / dx, written out as Megatron does."""
    x = bias + y
    tanh_out = torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x))
    ff = 0.5 * x * ((1 - tanh_out * tanh_out) * (0.79788456 + 0.1070322243 * x * x)) \
        + 0.5 * (1 + tanh_out)
    return ff * g


class GeLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, bias):
        ctx.save_for_backward(input, bias)
        return bias_gelu(bias, input)

    @staticmethod
    def backward(ctx, grad_output):
        input, bias = ctx.saved_tensors
        tmp = bias_gelu_back(grad_output, bias, input)
        return tmp, tmp.reshape(-1, tmp.shape[-1]).sum(0)


class ScaleGradient(torch.autograd.Function):
    """Identity forward; backward scales the gradient (not what autograd would give)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x * 1.0

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def _world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


class _CopyToTensorParallelRegion(torch.autograd.Function):
    """Forward: identity. Backward: all-reduce over the tensor-parallel group."""

    @staticmethod
    def forward(ctx, input_):
        return input_ * 1.0

    @staticmethod
    def backward(ctx, grad_output):
        if _world_size() > 1:
            dist.all_reduce(grad_output)
        return grad_output


class ParallelMLP(nn.Module):
    def __init__(self, hidden=16, ffn=32, grad_scale=0.5):
        super().__init__()
        self.weight1 = nn.Parameter(torch.empty(ffn, hidden))
        self.bias1 = nn.Parameter(torch.empty(ffn))
        self.weight2 = nn.Parameter(torch.empty(hidden, ffn))
        self.bias2 = nn.Parameter(torch.empty(hidden))
        for w in (self.weight1, self.weight2):
            nn.init.normal_(w, std=0.2)
        nn.init.zeros_(self.bias1)
        nn.init.zeros_(self.bias2)
        self.grad_scale = grad_scale

    def forward(self, x, target):
        x = _CopyToTensorParallelRegion.apply(x)
        h = GeLUFunction.apply(F.linear(x, self.weight1), self.bias1)
        out = F.linear(h, self.weight2, self.bias2)
        out = ScaleGradient.apply(out, self.grad_scale)
        return F.mse_loss(out, target)
