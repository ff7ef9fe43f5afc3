"""Feed-forward blocks and activations."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import TransformerConfig
from .parallel_linear import ColumnParallelLinear, RowParallelLinear


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x), as HF's QuickGELUActivation (one fused kernel after auto_convert)."""
    return x * torch.sigmoid(1.702 * x)


# adapters (MindSpore) has SwiGLU's gate and up projections in one kernel for a few rows
# (decoding), F.swiglu_linear; torch has none
_swiglu_linear = getattr(F, "swiglu_linear", None)


class SwiGLUMLP(nn.Module):
    """down(silu(gate(x)) * up(x)); names follow HF Llama/Qwen2 (gate_proj, up_proj, down_proj)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        h, f = config.hidden_size, config.ffn_hidden_size
        std, bias, sp = config.init_method_std, config.add_bias_linear, config.sequence_parallel
        self.gate_proj = ColumnParallelLinear(h, f, bias, std, sequence_parallel=sp)
        self.up_proj = ColumnParallelLinear(h, f, bias, std, sequence_parallel=sp)
        self.down_proj = RowParallelLinear(f, h, bias, std, sequence_parallel=sp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _swiglu_linear is not None and x.shape[-2] == 1 and self._plain_gate_up():  # decoding
            return self.down_proj(_swiglu_linear(x, self.gate_proj.weight, self.gate_proj.bias, self.up_proj.weight,
                                                 self.up_proj.bias))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def _plain_gate_up(self) -> bool:
        """Plain gate/up linear layers (not LoRA or quantized, no sequence parallelism)."""
        return (isinstance(self.gate_proj, ColumnParallelLinear) and isinstance(self.up_proj, ColumnParallelLinear)
                and not self.gate_proj.sequence_parallel)


ACTIVATIONS = {"gelu": F.gelu, "quick_gelu": quick_gelu, "silu": F.silu}


class MLP(nn.Module):
    """fc2(act(fc1(x))) with biases, the ViT feed-forward (CLIP, InternViT, Qwen2-VL ViT).

    ``activation``: "gelu" (exact erf GELU), "quick_gelu" or "silu".
    """

    def __init__(self, config: TransformerConfig, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        h, f = config.hidden_size, config.ffn_hidden_size
        std = config.init_method_std
        self.activation = activation
        self.fc1 = ColumnParallelLinear(h, f, True, std, sequence_parallel=config.sequence_parallel)
        self.fc2 = RowParallelLinear(f, h, True, std, sequence_parallel=config.sequence_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(ACTIVATIONS[self.activation](self.fc1(x)))
