"""InternViT, the vision encoder of InternVL (InternViT-300M-448px and InternViT-6B-448px).

A pre-norm ViT over 448px tiles: patch-embedding convolution, class token, learned
position embeddings (resized bicubically when the tile size differs from the trained
one), and layers x + ls1 * attn(norm1(x)), x + ls2 * mlp(norm2(x)) with learned per-channel
layer scales; with ``drop_path_rate`` > 0 both branches are dropped per sample in training
(stochastic depth, the rate rising linearly over the layers to ``drop_path_rate``). The 6B variant uses RMSNorm and normalizes q and k with one RMSNorm over all
heads (``qk_layernorm``) and has no q/k/v bias.

Parameter names equal HF-native ``InternVLVisionModel``'s (``embeddings.cls_token``,
``encoder.layer.N.attention.q_proj``, ``lambda_1``, ``layernorm_before``, ...); the
original remote-code names (``embeddings.class_embedding``, ``encoder.layers.N.attn.qkv``,
``ls1``, ``norm1``, ...) are mapped in ``msmm.models.internvl``.
"""
from __future__ import annotations

from typing import Any, Mapping, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core import MLP, RMSNorm, RowParallelLinear, TransformerConfig, build_norm
from ..core.tensor_parallel import ShardedRMSNorm, tensor_parallel_rank, tensor_parallel_size
from .drop_path import DropPath, drop_path_rates
from .vit import ViTConfig, ViTSelfAttention, resize_position_embedding

_NORMS = {"layer_norm": "LayerNorm", "rms_norm": "RMSNorm"}


def intern_vit_config_from_hf(vision: Mapping[str, Any], feature_layer: int = -1) -> ViTConfig:
    """ViTConfig from the ``vision_config`` dict of an InternVL ``config.json``, in either
    the HF-native form (``use_qk_norm``, ``attention_bias``, ``use_mean_pooling``) or the
    original remote-code form (``qk_normalization``, ``qkv_bias``)."""
    native = "use_qk_norm" in vision or "attention_bias" in vision
    image_size, patch_size = vision["image_size"], vision["patch_size"]
    if isinstance(image_size, (list, tuple)):
        if image_size[0] != image_size[1]:
            raise ValueError(f"vision_config.image_size {image_size}: only square tiles are supported")
        image_size = image_size[0]
    if isinstance(patch_size, (list, tuple)):
        if patch_size[0] != patch_size[1]:
            raise ValueError(f"vision_config.patch_size {patch_size}: only square patches are supported")
        patch_size = patch_size[0]
    norm_type = vision.get("norm_type", "layer_norm")
    if norm_type not in _NORMS:
        raise ValueError(f"vision_config.norm_type must be one of {sorted(_NORMS)}, got {norm_type!r}")
    return ViTConfig(
        num_layers=vision["num_hidden_layers"],
        hidden_size=vision["hidden_size"],
        num_attention_heads=vision["num_attention_heads"],
        ffn_hidden_size=vision["intermediate_size"],
        image_size=image_size,
        patch_size=patch_size,
        num_channels=vision.get("num_channels", 3),
        layernorm_epsilon=vision.get("layer_norm_eps", 1e-6),
        normalization=_NORMS[norm_type],
        qkv_bias=vision.get("attention_bias", False) if native else vision.get("qkv_bias", True),
        qk_layernorm=vision.get("use_qk_norm", False) if native else vision.get("qk_normalization", False),
        activation=vision.get("hidden_act", "gelu"),
        final_layernorm=native and not vision.get("use_mean_pooling", True),
        feature_layer=feature_layer,
        attention_dropout=vision.get("attention_dropout", 0.0),
        hidden_dropout=vision.get("hidden_dropout_prob", vision.get("dropout", 0.0)),
        init_method_std=vision.get("initializer_range", 0.02),
        drop_path_rate=vision.get("drop_path_rate", 0.0),
    )


class InternPatchEmbedding(nn.Module):
    """Non-overlapping patches -> vectors: a conv with kernel = stride = patch size."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=p, stride=p)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, hidden, H / p, W / p]."""
        return self.projection(pixel_values)


class InternVisionEmbeddings(nn.Module):
    """Patch embeddings, a class token in front, plus learned position embeddings."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        c = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.patch_embeddings = InternPatchEmbedding(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.grid_size**2 + 1, c))
        self.dropout = config.hidden_dropout

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, 1 + (H / p) * (W / p), hidden]."""
        patches = self.patch_embeddings(pixel_values)  # [N, hidden, h, w]
        n, c, h, w = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(n, 1, c), patches), dim=1)
        x = x + resize_position_embedding(self.position_embeddings, (h, w))
        return F.dropout(x, self.dropout, self.training)


class InternVisionAttention(ViTSelfAttention):
    """q/k/v projections, optional RMSNorm of q and of k over all heads, output
    ``projection_layer`` (HF-native names)."""

    def __init__(self, config: TransformerConfig, qk_layernorm: bool) -> None:
        super().__init__(config)
        h, eps = config.hidden_size, config.layernorm_epsilon
        if not qk_layernorm:
            self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
        elif tensor_parallel_size() == 1:
            self.q_norm, self.k_norm = RMSNorm(h, eps), RMSNorm(h, eps)
        else:  # over all heads, of all ranks
            local = self.head_rows[tensor_parallel_rank()]
            self.q_norm, self.k_norm = ShardedRMSNorm(h, eps, local), ShardedRMSNorm(h, eps, local)

    def _build_output(self, config: TransformerConfig) -> None:
        self.projection_layer = RowParallelLinear(config.hidden_size, config.hidden_size, True, config.init_method_std,
                                                  split_sizes=self.head_rows)

    def project_qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q_norm(self.q_proj(x)), self.k_norm(self.k_proj(x)), self.v_proj(x)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_layer(x)


class InternVisionLayer(nn.Module):
    """x + drop_path(lambda_1 * attn(norm(x))), then + drop_path(lambda_2 * mlp(norm(.)))."""

    def __init__(self, config: ViTConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        tc = config.transformer_config()
        h, eps = config.hidden_size, config.layernorm_epsilon
        self.layernorm_before = build_norm(config.normalization, h, eps)
        self.attention = InternVisionAttention(tc, config.qk_layernorm)
        self.lambda_1 = nn.Parameter(torch.ones(h))
        self.layernorm_after = build_norm(config.normalization, h, eps)
        self.mlp = MLP(tc, config.activation)
        self.lambda_2 = nn.Parameter(torch.ones(h))
        self.dropout = config.hidden_dropout
        self.drop_path1 = DropPath(drop_path_rate)
        self.drop_path2 = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.lambda_1 * self.attention(self.layernorm_before(x)))
        mlp = F.dropout(self.mlp(self.layernorm_after(x)), self.dropout, self.training)
        return x + self.drop_path2(self.lambda_2 * mlp)


class InternVisionLayers(nn.Module):
    """The stack of layers up to the feature layer (HF's ``encoder.layer.N``)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        rates = drop_path_rates(config.drop_path_rate, config.num_layers)
        self.layer = nn.ModuleList([InternVisionLayer(config, rates[i]) for i in range(config.layers_used)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class InternVisionEncoder(nn.Module):
    """Tiles [N, C, H, W] -> the hidden state of ``config.feature_layer`` [N, 1 + patches, hidden]."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = InternVisionEmbeddings(config)
        self.encoder = InternVisionLayers(config)
        self.apply_final_norm = config.final_layernorm and config.layers_used == config.num_layers
        if self.apply_final_norm:
            self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder layers (a pipeline stage runs its share of them)."""
        return self.encoder.layer

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tiles [N, C, H, W] -> the first layer's input [N, 1 + patches, hidden]."""
        return self.embeddings(pixel_values)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's output -> the encoder's (the final norm when it is used)."""
        return self.layernorm(x) if self.apply_final_norm else x

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.finish(self.encoder(self.embed(pixel_values)))
