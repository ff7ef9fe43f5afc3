"""The CLIP vision transformer of LLaVA-1.5 (CLIP ViT-L/14-336).

Patch-embedding convolution without bias, class token, learned position embeddings, a
LayerNorm before the first layer (HF's ``pre_layrnorm``, spelling kept), and pre-norm
layers with quick-GELU MLPs. LLaVA reads the hidden state of a chosen layer (the
penultimate by default), so the layers after it and CLIP's ``post_layernorm`` are not
built.

Parameter names equal the HF ``CLIPVisionModel`` keys below ``vision_model.``
(``embeddings.class_embedding``, ``encoder.layers.N.self_attn.q_proj``, ``layer_norm1``, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..core import MLP
from .vit import ViTConfig, ViTSelfAttention, resize_position_embedding


@dataclass
class CLIPViTConfig(ViTConfig):
    """The LLaVA-1.5 CLIP tower: ``ViTConfig`` with CLIP's defaults (LayerNorm eps 1e-5,
    quick-GELU, penultimate layer) and which tokens reach the projector: ``"default"``
    drops the class token, ``"full"`` keeps it."""

    layernorm_epsilon: float = 1e-5
    activation: str = "quick_gelu"
    feature_layer: int = -2
    select_strategy: str = "default"


def clip_vit_config_from_hf(vision: Mapping[str, Any], feature_layer: int = -2) -> ViTConfig:
    """ViTConfig from a CLIP ``vision_config`` dict (as in a LLaVA ``config.json``)."""
    return ViTConfig(
        num_layers=vision["num_hidden_layers"],
        hidden_size=vision["hidden_size"],
        num_attention_heads=vision["num_attention_heads"],
        ffn_hidden_size=vision["intermediate_size"],
        image_size=vision["image_size"],
        patch_size=vision["patch_size"],
        num_channels=vision.get("num_channels", 3),
        layernorm_epsilon=vision.get("layer_norm_eps", 1e-5),
        activation=vision.get("hidden_act", "quick_gelu"),
        feature_layer=feature_layer,
        attention_dropout=vision.get("attention_dropout", 0.0),
        init_method_std=vision.get("initializer_range", 0.02),
    )


class CLIPVisionEmbeddings(nn.Module):
    """Patch embeddings, the class embedding in front, plus learned position embeddings."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        c, p = config.hidden_size, config.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(c))
        self.patch_embedding = nn.Conv2d(config.num_channels, c, kernel_size=p, stride=p, bias=False)
        self.position_embedding = nn.Embedding(config.grid_size**2 + 1, c)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, 1 + (H / p) * (W / p), hidden]."""
        patches = self.patch_embedding(pixel_values)  # [N, hidden, h, w]
        n, c, h, w = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        x = torch.cat((self.class_embedding.view(1, 1, c).expand(n, 1, c), patches), dim=1)
        return x + resize_position_embedding(self.position_embedding.weight.unsqueeze(0), (h, w))


class CLIPEncoderLayer(nn.Module):
    """x + attn(layer_norm1(x)), then + mlp(layer_norm2(.))."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        tc = config.transformer_config()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.self_attn = ViTSelfAttention(tc)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.mlp = MLP(tc, config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoderLayers(nn.Module):
    """The stack of layers up to the feature layer (HF's ``encoder.layers.N``)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(config) for _ in range(config.layers_used)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class CLIPVisionEncoder(nn.Module):
    """Images [N, C, H, W] -> the hidden state of ``config.feature_layer`` [N, 1 + patches, hidden]."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.encoder = CLIPEncoderLayers(config)

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder layers up to the feature layer (a pipeline stage runs its share of them)."""
        return self.encoder.layers

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] -> the first layer's input [N, 1 + patches, hidden]."""
        return self.pre_layrnorm(self.embeddings(pixel_values))

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The feature layer's output is the encoder's."""
        return x

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.finish(self.encoder(self.embed(pixel_values)))
