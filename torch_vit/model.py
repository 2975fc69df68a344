"""The PyTorch ViT. Mirrors jax_vit/model.py class for class; images are NCHW.

`state_dict()` uses timm's names and layouts, so timm's VisionTransformer of the same shape loads it
with strict=True.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vit_spec import ViTConfig, sincos_2d
from vit_spec.inputs import check_images


def _layer_norm(config: ViTConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.width, eps=config.layer_norm_eps)


class PatchEmbed(nn.Module):
    """Cuts NCHW images into patches and projects each to `width`: (B, C, H, W) -> (B, N, D)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(config.channels, config.width, config.patch_hw, stride=config.patch_hw)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection (timm's layout)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=config.qkv_bias)
        self.proj = nn.Linear(config.width, config.width)
        self.attn_drop = nn.Dropout(config.attention_dropout)
        self.proj_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.config
        b, t, d = x.shape
        # Features are laid out (3, heads, head_dim).
        qkv = self.qkv(x).reshape(b, t, 3, cfg.heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, T, head_dim)
        probs = None
        if return_probs:
            scores = (q * cfg.head_dim**-0.5) @ k.transpose(-2, -1)
            probs = scores.softmax(dim=-1)
            out = self.attn_drop(probs) @ v
        else:
            # Fused kernel where the backend has one; the (T, T) probabilities need not exist.
            p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=cfg.head_dim**-0.5)
        out = out.transpose(1, 2).reshape(b, t, d)
        out = self.proj_drop(self.proj(out))
        return out, probs


class MlpBlock(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.width, config.mlp_dim)
        self.act = nn.GELU(approximate="tanh" if config.gelu == "tanh" else "none")
        self.drop1 = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.mlp_dim, config.width)
        self.drop2 = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample, scaling the kept ones by 1/keep."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)), each branch under stochastic depth."""

    def __init__(self, config: ViTConfig, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = _layer_norm(config)
        self.attn = Attention(config)
        self.norm2 = _layer_norm(config)
        self.mlp = MlpBlock(config)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, probs = self.attn(self.norm1(x), return_probs=return_probs)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, probs


class ViT(nn.Module):
    """Vision Transformer on NCHW float images.

    `model(images)` returns logits; `model.train()` turns on dropout and stochastic depth.
    `model(images, return_intermediates=True)` returns (logits, intermediates) with the same keys as
    jax_vit.ViT: "patch_embed", "embed", "blocks", "attn", "encoded", "pooled", "pre_logits", "logits".
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        d = config.width
        self.patch_embed = PatchEmbed(config)
        if config.pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        # The [CLS] slot is part of the position embedding (timm, Google's vision_transformer).
        if config.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, d))
        else:
            # Fixed, but kept in the state dict so that timm loads the file with strict=True.
            self.register_buffer("pos_embed", torch.from_numpy(sincos_2d(config)))
        self.pos_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(config, rate) for rate in config.drop_path_rates())
        self.norm = _layer_norm(config)
        if config.representation_size:
            self.pre_logits = nn.Sequential(
                OrderedDict(fc=nn.Linear(d, config.representation_size), act=nn.Tanh())
            )
        else:
            self.pre_logits = nn.Identity()
        self.head = nn.Linear(config.features_dim, config.num_classes) if config.num_classes else nn.Identity()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """timm's initialisation: truncated normal(0.02) weights, zero biases, unit norms."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.config.pool == "cls":
            nn.init.normal_(self.cls_token, std=1e-6)

    @torch.no_grad()
    def init_like_flax(self) -> None:
        """jax_vit's initialisation (big_vision's), so that both trainers start from the same distributions:
        Xavier-uniform attention and MLP matrices (MLP biases normal(1e-6), others zero), LeCun-normal patch
        embedding and pre-logits, normal(0.02) position embedding, zero [CLS] token and zero head."""

        def lecun_normal_(weight: torch.Tensor) -> None:
            fan_in = weight[0].numel()
            std = (1.0 / fan_in) ** 0.5 / 0.87962566103423978  # flax's truncated normal, corrected to unit variance
            nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)

        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for linear in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2):
                nn.init.xavier_uniform_(linear.weight)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)
            nn.init.normal_(block.mlp.fc1.bias, std=1e-6)
            nn.init.normal_(block.mlp.fc2.bias, std=1e-6)
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        if self.config.representation_size:
            lecun_normal_(self.pre_logits.fc.weight)
            nn.init.zeros_(self.pre_logits.fc.bias)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.normal_(self.pos_embed, std=0.02)
        if self.config.pool == "cls":
            nn.init.zeros_(self.cls_token)
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor, return_intermediates: bool = False) -> Any:
        cfg = self.config
        check_images(cfg, images.shape, str(images.dtype), images.is_floating_point(), "NCHW")
        inter: dict[str, Any] = {}

        x = self.patch_embed(images)
        inter["patch_embed"] = x
        if cfg.pool == "cls":
            x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed.to(x.dtype)
        inter["embed"] = x
        x = self.pos_drop(x)

        blocks, attn = [], []
        for block in self.blocks:
            x, probs = block(x, return_probs=return_intermediates)
            blocks.append(x)
            attn.append(probs)
        inter["blocks"], inter["attn"] = tuple(blocks), tuple(attn)

        x = self.norm(x)
        inter["encoded"] = x
        # Mean pooling normalises every token first (Google's "gap", timm's fc_norm=False).
        x = x[:, 0] if cfg.pool == "cls" else x.mean(dim=1)
        inter["pooled"] = x
        x = self.pre_logits(x)
        inter["pre_logits"] = x
        x = self.head(x)
        inter["logits"] = x
        return (x, inter) if return_intermediates else x
