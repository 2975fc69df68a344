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


class QuickGELU(nn.Module):
    """OpenAI CLIP's GELU approximation, x * sigmoid(1.702 x) (timm `quick_gelu`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class RmsNorm(nn.Module):
    """RMSNorm as timm's RmsNorm computes it: x * rsqrt(mean(x^2) + eps) * weight (no bias)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


def _activation(config: ViTConfig) -> nn.Module:
    if config.activation == "quick_gelu":
        return QuickGELU()
    if config.activation == "silu":
        return nn.SiLU()
    return nn.GELU(approximate="tanh" if config.gelu == "tanh" else "none")


def _norm(config: ViTConfig, dim: int | None = None) -> nn.Module:
    if config.norm == "rms":
        return RmsNorm(dim or config.width, eps=config.layer_norm_eps)
    return nn.LayerNorm(dim or config.width, eps=config.layer_norm_eps)


class PatchEmbed(nn.Module):
    """Cuts NCHW images into patches and projects each to `width`: (B, C, H, W) -> (B, N, D); patch_norm: then a norm
    (timm's PatchEmbed with embed_norm_layer)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(config.channels, config.width, config.patch_hw, stride=config.patch_hw, bias=config.patch_bias)
        self.patch_norm = config.patch_norm
        if self.patch_norm:
            self.norm = _norm(config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.proj(images).flatten(2).transpose(1, 2)
        return self.norm(x) if self.patch_norm else x


class Attention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection (timm's layout)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=config.qkv_bias)
        if config.qk_norm:
            self.q_norm = _norm(config, config.head_dim)
            self.k_norm = _norm(config, config.head_dim)
        if config.attn_norm:
            self.norm = _norm(config)
        self.proj = nn.Linear(config.width, config.width, bias=config.proj_bias)
        self.attn_drop = nn.Dropout(config.attention_dropout)
        self.proj_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.config
        b, t, d = x.shape
        # Features are laid out (3, heads, head_dim).
        qkv = self.qkv(x).reshape(b, t, 3, cfg.heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, T, head_dim)
        if cfg.qk_norm:  # each head's query and key normed over head_dim (timm)
            q, k = self.q_norm(q), self.k_norm(k)
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
        if cfg.attn_norm:  # the heads' concatenated output normed before the projection (timm scale_attn_norm)
            out = self.norm(out)
        out = self.proj_drop(self.proj(out))
        return out, probs


class MlpBlock(nn.Module):
    """fc1 -> activation -> dropout -> (norm) -> fc2 -> dropout (timm's Mlp).

    `hidden`, `dropout` and `norm` default to the config's blocks' (mlp_dim, dropout, mlp_norm); the MAP head's
    MLP sets its own.
    """

    def __init__(self, config: ViTConfig, hidden: int | None = None, dropout: float | None = None, norm: bool | None = None,
                 bias: bool | None = None):
        super().__init__()
        hidden = hidden or config.mlp_dim
        rate = config.dropout if dropout is None else dropout
        bias = config.proj_bias if bias is None else bias
        self.fc1 = nn.Linear(config.width, hidden, bias=bias)
        self.act = _activation(config)
        self.drop1 = nn.Dropout(rate)
        self.inner_norm = config.mlp_norm if norm is None else norm
        if self.inner_norm:
            self.norm = _norm(config, hidden)
        self.fc2 = nn.Linear(hidden, config.width, bias=bias)
        self.drop2 = nn.Dropout(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        if self.inner_norm:
            x = self.norm(x)
        return self.drop2(self.fc2(x))


class GluMlp(nn.Module):
    """Gated MLP with one packed fc1 of 2*mlp_dim (timm's GluMlp): its halves are value and gate.

    mlp="swiglu_packed" (timm SwiGLUPacked): act(first half) * second half; mlp="geglu" (timm GluMlp, gate last):
    first half * act(second half). Then dropout -> (norm) -> fc2 -> dropout.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.gate_first = config.mlp == "swiglu_packed"
        self.fc1 = nn.Linear(config.width, 2 * config.mlp_dim, bias=config.proj_bias)
        self.act = _activation(config)
        self.drop1 = nn.Dropout(config.dropout)
        self.inner_norm = config.mlp_norm
        if self.inner_norm:
            self.norm = _norm(config, config.mlp_dim)
        self.fc2 = nn.Linear(config.mlp_dim, config.width, bias=config.proj_bias)
        self.drop2 = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.fc1(x).chunk(2, dim=-1)
        x = self.drop1(self.act(x1) * x2 if self.gate_first else x1 * self.act(x2))
        if self.inner_norm:
            x = self.norm(x)
        return self.drop2(self.fc2(x))


class SwiGLU(nn.Module):
    """Gated MLP with separate gate and value projections (timm's SwiGLU): act(fc1_g(x)) * fc1_x(x) -> dropout ->
    (norm) -> fc2 -> dropout."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.fc1_g = nn.Linear(config.width, config.mlp_dim, bias=config.proj_bias)
        self.fc1_x = nn.Linear(config.width, config.mlp_dim, bias=config.proj_bias)
        self.act = _activation(config)
        self.drop1 = nn.Dropout(config.dropout)
        self.inner_norm = config.mlp_norm
        if self.inner_norm:
            self.norm = _norm(config, config.mlp_dim)
        self.fc2 = nn.Linear(config.mlp_dim, config.width, bias=config.proj_bias)
        self.drop2 = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1_g(x)) * self.fc1_x(x))
        if self.inner_norm:
            x = self.norm(x)
        return self.drop2(self.fc2(x))


def _mlp(config: ViTConfig) -> nn.Module:
    """The block's MLP, by config.mlp."""
    if config.mlp == "plain":
        return MlpBlock(config)
    if config.mlp == "swiglu":
        return SwiGLU(config)
    return GluMlp(config)


class LayerScale(nn.Module):
    """Per-channel gains on a residual branch (timm's LayerScale, CaiT/DeiT III), initialised to layer_scale_init."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((config.width,), float(config.layer_scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


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
        self.layer_scale = bool(config.layer_scale_init)
        self.norm1 = _norm(config)
        self.attn = Attention(config)
        if self.layer_scale:
            self.ls1 = LayerScale(config)
        self.norm2 = _norm(config)
        self.mlp = _mlp(config)
        if self.layer_scale:
            self.ls2 = LayerScale(config)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, probs = self.attn(self.norm1(x), return_probs=return_probs)
        if self.layer_scale:
            y = self.ls1(y)
        x = x + self.drop_path(y)
        y = self.mlp(self.norm2(x))
        if self.layer_scale:
            y = self.ls2(y)
        x = x + self.drop_path(y)
        return x, probs


class MAPHead(nn.Module):
    """Multihead attention pooling (big_vision's MAPHead, timm's AttentionPoolLatent as VisionTransformer builds it):
    one learned latent query attends over the tokens, then a residual MLP on its normed output: (B, T, D) -> (B, D).

    The query is a single token, so the (1, T) probabilities are computed directly; no fused kernel is needed.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        d = config.width
        self.latent = nn.Parameter(torch.zeros(1, 1, d))
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.norm = _norm(config)
        # timm's AttentionPoolLatent MLP: plain, of the blocks' fc1 width (its hidden = width * mlp_ratio), no dropout.
        self.mlp = MlpBlock(config, hidden=config.mlp_fc1_dim, dropout=0.0, norm=False, bias=True)

    def forward(self, x: torch.Tensor, return_probs: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The pooled (B, D); with return_probs, also the latent's attention over the tokens, (B, heads, 1, T)."""
        cfg = self.config
        b, t, d = x.shape
        q = self.q(self.latent.expand(b, -1, -1)).reshape(b, 1, cfg.heads, cfg.head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(b, t, 2, cfg.heads, cfg.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        probs = ((q * cfg.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = self.proj((probs @ v).transpose(1, 2).reshape(b, 1, d))
        out = out + self.mlp(self.norm(out))
        return (out[:, 0], probs) if return_probs else out[:, 0]


class ViT(nn.Module):
    """Vision Transformer on NCHW float images.

    `model(images)` returns logits; `model.train()` turns on dropout and stochastic depth.
    `model(images, return_intermediates=True)` returns (logits, intermediates) with the same keys as
    jax_vit.ViT: "patch_embed", "embed", ("norm_pre",) "blocks", "attn", "encoded", "pooled", "pre_logits", "logits"
    (distilled: also "head_logits", "head_dist_logits"; the output is their mean in train mode too, see jax_vit.ViT;
    pool="map": also "attn_pool", the MAP head's attention (B, heads, 1, patches)).
    Features, as timm's: `forward_features(images)` gives the final tokens (B, T, D), `forward_head(tokens)` their
    logits and `forward_head(tokens, pre_logits=True)` what the head reads (the pooled feature), as jax_vit.ViT's.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        d = config.width
        self.patch_embed = PatchEmbed(config)
        # Prefix tokens in timm's order: [CLS], the distillation token, the registers.
        if config.has_class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if config.reg_tokens:
            self.reg_token = nn.Parameter(torch.zeros(1, config.reg_tokens, d))
        if config.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, config.num_pos_embed_tokens, d))
        else:
            # Fixed, but kept in the state dict so that timm loads the file with strict=True.
            # torch.tensor (a copy) follows the default device, so the model builds on the meta device too (summary).
            self.register_buffer("pos_embed", torch.tensor(sincos_2d(config)))
        if config.distilled:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_drop = nn.Dropout(config.dropout)
        if config.pre_norm:
            self.norm_pre = _norm(config)
        self.blocks = nn.ModuleList(EncoderBlock(config, rate) for rate in config.drop_path_rates())
        if config.final_norm == "tokens":
            self.norm = _norm(config)
        if config.pool == "map":
            self.attn_pool = MAPHead(config)
        if config.final_norm == "pooled":
            self.fc_norm = _norm(config)
        if config.representation_size:
            self.pre_logits = nn.Sequential(
                OrderedDict(fc=nn.Linear(d, config.representation_size), act=nn.Tanh())
            )
        else:
            self.pre_logits = nn.Identity()
        self.head = nn.Linear(config.features_dim, config.num_classes) if config.num_classes else nn.Identity()
        if config.distilled and config.num_classes:
            self.head_dist = nn.Linear(d, config.num_classes)
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
            elif isinstance(module, RmsNorm):
                nn.init.ones_(module.weight)
            elif isinstance(module, LayerScale):
                nn.init.constant_(module.gamma, self.config.layer_scale_init)
        for module in self.modules():  # after their Linears, as timm's depth-first init
            if isinstance(module, (GluMlp, SwiGLU)):
                _init_gate_like_timm(module)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.config.has_class_token:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.config.reg_tokens:
            nn.init.normal_(self.reg_token, std=1e-6)
        if self.config.distilled:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        if self.config.pool == "map":  # timm's trunc_normal_tf_(latent, std=latent_dim ** -0.5): cut at 2 std
            std = self.config.width**-0.5
            nn.init.trunc_normal_(self.attn_pool.latent, std=std, a=-2 * std, b=2 * std)

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
            elif isinstance(module, RmsNorm):
                nn.init.ones_(module.weight)
            elif isinstance(module, LayerScale):
                nn.init.constant_(module.gamma, self.config.layer_scale_init)
            elif isinstance(module, (MlpBlock, GluMlp, SwiGLU)):  # big_vision's MlpBlock: biases normal(1e-6)
                for linear in module.children():
                    if isinstance(linear, nn.Linear):
                        nn.init.xavier_uniform_(linear.weight)
                        if linear.bias is not None:
                            nn.init.normal_(linear.bias, std=1e-6)
        for block in self.blocks:
            for linear in (block.attn.qkv, block.attn.proj):
                nn.init.xavier_uniform_(linear.weight)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)
        lecun_normal_(self.patch_embed.proj.weight)
        if self.config.patch_bias:
            nn.init.zeros_(self.patch_embed.proj.bias)
        if self.config.representation_size:
            lecun_normal_(self.pre_logits.fc.weight)
            nn.init.zeros_(self.pre_logits.fc.bias)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.normal_(self.pos_embed, std=0.02)
        if self.config.has_class_token:
            nn.init.zeros_(self.cls_token)
        if self.config.reg_tokens:
            nn.init.normal_(self.reg_token, std=1e-6)
        if self.config.distilled:  # flax's truncated_normal(0.02): a unit normal cut at +-2, times 0.02
            nn.init.trunc_normal_(self.dist_token, std=0.02, a=-0.04, b=0.04)
        if self.config.pool == "map":
            pool = self.attn_pool
            bound = (6.0 / (1 + self.config.width)) ** 0.5  # flax's xavier_uniform of a (1, 1, D) latent
            nn.init.uniform_(pool.latent, -bound, bound)
            for linear in (pool.q, pool.kv, pool.proj):
                nn.init.xavier_uniform_(linear.weight)
                nn.init.zeros_(linear.bias)
        for head in (self.head, getattr(self, "head_dist", None)):
            if isinstance(head, nn.Linear):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def forward(self, images: torch.Tensor, return_intermediates: bool = False) -> Any:
        inter: dict[str, Any] = {}
        x = self._features(images, inter, return_intermediates)
        return self._head(x, inter, return_intermediates)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The final tokens (B, T, D): prefix tokens ([CLS], distillation, registers), then the patches, after the
        final token norm where final_norm="tokens" (timm's forward_features). vit_spec.tokens.split_tokens parts them."""
        return self._features(images, {}, False)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """forward_features' tokens -> logits; pre_logits=True: what the head reads, the pooled feature after fc_norm
        and the representation layer, (B, features_dim) (timm's forward_head). pool="none": the tokens."""
        return self._head(tokens, {}, False, pre_logits)

    def _features(self, images: torch.Tensor, inter: dict[str, Any], return_intermediates: bool) -> torch.Tensor:
        cfg = self.config
        check_images(cfg, images.shape, str(images.dtype), images.is_floating_point(), "NCHW")

        x = self.patch_embed(images)
        inter["patch_embed"] = x
        # Prefix tokens in timm's order: [CLS], the distillation token, the registers.
        names = ("cls_token",) * cfg.has_class_token + ("dist_token",) * cfg.distilled + ("reg_token",) * bool(cfg.reg_tokens)
        prefix = [getattr(self, n).to(x.dtype).expand(x.shape[0], -1, -1) for n in names]
        if cfg.pos_embed_covers_prefix:
            # The prefix slots are part of the position embedding (timm, Google's vision_transformer).
            x = torch.cat(prefix + [x], dim=1) if prefix else x
            x = x + self.pos_embed.to(x.dtype)
        else:
            # Patches only (timm no_embed_class: DeiT III, big_vision): add, then prepend.
            x = x + self.pos_embed.to(x.dtype)
            x = torch.cat(prefix + [x], dim=1) if prefix else x
        inter["embed"] = x
        x = self.pos_drop(x)
        if cfg.pre_norm:
            x = self.norm_pre(x)
            inter["norm_pre"] = x

        blocks, attn = [], []
        for block in self.blocks:
            x, probs = block(x, return_probs=return_intermediates)
            blocks.append(x)
            attn.append(probs)
        inter["blocks"], inter["attn"] = tuple(blocks), tuple(attn)

        if cfg.final_norm == "tokens":
            x = self.norm(x)
        inter["encoded"] = x
        return x

    def _head(self, x: torch.Tensor, inter: dict[str, Any], return_intermediates: bool, pre_logits: bool = False) -> Any:
        """Final tokens -> pooled -> (fc_norm) -> (pre-logits layer) -> logits; pre_logits: stop before the head."""
        cfg = self.config
        if cfg.distilled:
            return self._distilled_heads(x, inter, return_intermediates, pre_logits)
        x = self._pool(x, inter)
        if cfg.final_norm == "pooled":
            x = self.fc_norm(x)
        inter["pooled"] = x
        x = self.pre_logits(x)
        inter["pre_logits"] = x
        if pre_logits:
            return x
        x = self.head(x)
        inter["logits"] = x
        return (x, inter) if return_intermediates else x

    def _pool(self, x: torch.Tensor, inter: dict[str, Any]) -> torch.Tensor:
        cfg = self.config
        if cfg.pool == "cls":
            return x[:, 0]
        # timm pools the patch tokens, or every token (pool_include_prefix)
        patches = x[:, cfg.num_prefix_tokens :] if cfg.num_prefix_tokens and not cfg.pool_include_prefix else x
        if cfg.pool == "mean":
            # With final_norm="tokens", every token is normed first (Google's "gap", timm's fc_norm=False).
            return patches.mean(dim=1)
        if cfg.pool == "map":
            x, probs = self.attn_pool(patches, return_probs=True)
            # The patch columns (pool_include_prefix: the prefix tokens' are left out, as from every attention map).
            inter["attn_pool"] = probs[..., cfg.num_prefix_tokens :] if cfg.pool_include_prefix else probs
            return x
        return x  # "none": every token

    def _distilled_heads(self, x: torch.Tensor, inter: dict[str, Any], return_intermediates: bool,
                         pre_logits: bool = False) -> Any:
        """DeiT: one head on the [CLS] token, one on the distillation token, their logits averaged."""
        cls, dist = x[:, 0], x[:, 1]
        inter["pooled"] = inter["pre_logits"] = (cls + dist) / 2
        if pre_logits:
            return inter["pre_logits"]
        if self.config.num_classes:
            inter["head_logits"], inter["head_dist_logits"] = self.head(cls), self.head_dist(dist)
            x = (inter["head_logits"] + inter["head_dist_logits"]) / 2
        else:
            x = inter["pooled"]
        inter["logits"] = x
        return (x, inter) if return_intermediates else x


@torch.no_grad()
def _init_gate_like_timm(mlp: nn.Module) -> None:
    """timm's GluMlp/SwiGLU.init_weights: the gate projection near zero (normal(1e-6)) with bias one. timm's GluMlp
    takes the second half of fc1 for it, also where SwiGLUPacked gates with the first: copied as timm does it."""
    if isinstance(mlp, SwiGLU):
        if mlp.fc1_g.bias is not None:
            nn.init.ones_(mlp.fc1_g.bias)
        nn.init.normal_(mlp.fc1_g.weight, std=1e-6)
    else:
        half = mlp.fc1.weight.shape[0] // 2
        if mlp.fc1.bias is not None:
            nn.init.ones_(mlp.fc1.bias[half:])
        nn.init.normal_(mlp.fc1.weight[half:], std=1e-6)
