"""The JAX twin's per-layer table: each Flax module's output shape and parameter count, traced with
jax.eval_shape (nothing computed, so even ViT-H/14 takes seconds). torch_vit.summary is its twin; twins.summary
puts the two side by side."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jax_vit.model import ViT
from vit_spec import ViTConfig

Layer = tuple[str, tuple, int]  # (kind, output shape, parameter count)


def _timm_name(flax_path: tuple[str, ...]) -> str:
    parts = []
    for p in flax_path:
        parts += p.split("_", 1) if p.startswith("blocks_") else [p]
    name = ".".join(parts)
    return "pre_logits.fc" if name == "pre_logits" else name


def _count(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def layers(config: ViTConfig) -> dict[str, Layer]:
    """timm name -> (kind, output shape, parameter count) of every Flax module ("module"), top-level parameter
    ("parameter") and the whole model ("(model)", kind "ViT")."""
    h, w = config.image_hw
    images = jax.ShapeDtypeStruct((1, h, w, config.channels), jnp.float32)
    model = ViT(config)
    params = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    _, state = jax.eval_shape(
        lambda p, x: model.apply({"params": p}, x, capture_intermediates=True, mutable=["intermediates"]), params, images
    )
    found: dict[str, Layer] = {}

    def walk(captured: dict, param_tree: dict, path: tuple[str, ...]) -> None:
        for key, value in captured.items():
            if key == "__call__":
                continue
            sub_params = param_tree.get(key, {})
            out = jax.tree.leaves(value.get("__call__", ()))
            found[_timm_name(path + (key,))] = ("module", tuple(out[0].shape) if out else None, _count(sub_params))
            walk(value, sub_params, path + (key,))

    walk(state["intermediates"], params, ())
    for key in ("cls_token", "reg_token", "pos_embed", "dist_token"):
        if key in params:
            found[key] = ("parameter", tuple(params[key].shape), _count(params[key]))
    found["(model)"] = ("ViT", (1, config.num_classes or config.features_dim), _count(params))
    return found
