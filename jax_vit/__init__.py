"""The Flax (linen) ViT and its weight I/O. Never imports torch."""

from jax_vit.block_layout import stack_blocks, unstack_blocks
from jax_vit.model import Attention, EncoderBlock, MlpBlock, PatchEmbed, ViT, init_params
from jax_vit.weights import load, params_from_state_dict, save, state_dict_from_params

__all__ = [
    "Attention",
    "EncoderBlock",
    "MlpBlock",
    "PatchEmbed",
    "ViT",
    "init_params",
    "load",
    "params_from_state_dict",
    "save",
    "stack_blocks",
    "state_dict_from_params",
    "unstack_blocks",
]
