"""Analytic FLOP count of the ViT, per image: what `vit bench` divides its speeds by.

Multiply-adds count 2 FLOPs. With N patches of ph x pw x C pixels, T tokens (N, plus 1 for the
[CLS] token), width D, MLP width M, K classes and an optional pre-logits width R:

    forward  = patch embedding   2 * N * (ph * pw * C) * D
             + depth x [ qkv     2 * T * D * 3D
                       + scores  2 * T * T * D       (q @ k^T, over all heads)
                       + attn*V  2 * T * T * D
                       + proj    2 * T * D * D
                       + MLP     2 * 2 * T * D * M ]  (fc1 and fc2)
             + pre-logits        2 * D * R            (only with representation_size)
             + head              2 * (R or D) * K
    training = 3 * forward        (the backward pass costs twice the forward: gradients of the
                                   inputs and of the weights of every matmul)

Element-wise work (LayerNorm, GELU, softmax, biases, residual adds, the loss, the optimizer update)
is not counted: it is a few percent of the matmuls here and is memory-bound, not FLOP-bound.
"""

from __future__ import annotations

from vit_spec import ViTConfig


def forward_flops(config: ViTConfig) -> int:
    """FLOPs of one image's forward pass (matmuls and the patch convolution only)."""
    (ph, pw), n, t = config.patch_hw, config.num_patches, config.num_tokens
    d, m = config.width, config.mlp_dim
    patch_embed = 2 * n * (ph * pw * config.channels) * d
    block = 2 * t * d * 3 * d + 2 * t * t * d + 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * m
    pre_logits = 2 * d * config.representation_size if config.representation_size else 0
    head = 2 * config.features_dim * config.num_classes
    return patch_embed + config.depth * block + pre_logits + head


def train_flops(config: ViTConfig) -> int:
    """FLOPs of one image's training step: forward + backward (twice the forward)."""
    return 3 * forward_flops(config)


def task_flops(config: ViTConfig, task: str) -> int:
    """FLOPs per image of a `vit bench` task: "train" or "inference"."""
    if task == "train":
        return train_flops(config)
    if task == "inference":
        return forward_flops(config)
    raise ValueError(f"unknown task {task!r}: use 'train' or 'inference'")


def matmul_flops(n: int) -> int:
    """FLOPs of an (n x n) @ (n x n) matmul."""
    return 2 * n**3
