"""The PyTorch ViT and its weight I/O. Never imports jax."""

from torch_vit.model import Attention, EncoderBlock, MlpBlock, PatchEmbed, ViT
from torch_vit.weights import load, model_from_state_dict, save, state_dict_numpy

__all__ = [
    "Attention",
    "EncoderBlock",
    "MlpBlock",
    "PatchEmbed",
    "ViT",
    "load",
    "model_from_state_dict",
    "save",
    "state_dict_numpy",
]
