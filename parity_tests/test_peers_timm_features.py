"""timm's own VisionTransformer (VisionTransformerDistilled for DeiT) with the architecture features of each feature
config of the parity matrix (layer scale, registers, MAP head, fc_norm, pre_norm, GLU MLPs, RMSNorm, qk-norm, the
distillation token, ...) loads our random weights with strict=True and computes the same final tokens and logits as
both twins, within 1e-5 scaled (fused attention off in timm).

`timm_kwargs` is the mapping of each ViTConfig feature field to timm's constructor, the one the converters follow.
Prints one "peer-diff" line per config: pytest parity_tests/test_peers_timm_features.py -s | grep peer-diff
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("jax")

from timm.layers import GluMlp, LayerNorm, Mlp, PatchEmbed, RmsNorm, SwiGLU, SwiGLUPacked  # noqa: E402
from timm.models.deit import VisionTransformerDistilled  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from parity_tests.matrix import FEATURE_CONFIGS, weights_and_images  # noqa: E402
from parity_tests.peers import report, scaled_diff, unfused  # noqa: E402
from twins import jax_side, torch_side  # noqa: E402
from vit_spec import ViTConfig  # noqa: E402

_POOL = {"cls": "token", "mean": "avg", "map": "map", "none": ""}
_MLP = {"plain": Mlp, "swiglu_packed": SwiGLUPacked, "swiglu": SwiGLU, "geglu": GluMlp}


def timm_kwargs(config: ViTConfig) -> dict:
    """The timm VisionTransformer keyword arguments of `config` (timm's class: VisionTransformerDistilled when
    config.distilled)."""
    act = {"gelu": "gelu_tanh" if config.gelu == "tanh" else "gelu", "quick_gelu": "quick_gelu", "silu": "silu"}
    norm = RmsNorm if config.norm == "rms" else LayerNorm
    # timm ties the patch bias to pre_norm (bias=not pre_norm); an embed layer that takes ours lets both vary.
    embed = lambda **kw: PatchEmbed(**{**kw, "bias": config.patch_bias})  # noqa: E731
    return dict(
        img_size=config.image_size, patch_size=config.patch_size, in_chans=config.channels, num_classes=config.num_classes,
        embed_dim=config.width, depth=config.depth, num_heads=config.heads,
        mlp_ratio=config.mlp_fc1_dim / config.width,  # timm's hidden_features: fc1's width (both halves when packed)
        qkv_bias=config.qkv_bias, qk_norm=config.qk_norm, init_values=config.layer_scale_init,
        class_token=config.has_class_token, reg_tokens=config.reg_tokens,
        no_embed_class=not config.pos_embed_covers_prefix, pre_norm=config.pre_norm,
        final_norm=config.final_norm != "none", fc_norm=config.final_norm == "pooled",
        global_pool=_POOL[config.pool], scale_mlp_norm=config.mlp_norm,
        norm_layer=functools.partial(norm, eps=config.layer_norm_eps), act_layer=act[config.activation],
        mlp_layer=_MLP[config.mlp], embed_layer=embed,
    )


def timm_model(config: ViTConfig) -> torch.nn.Module:
    cls = VisionTransformerDistilled if config.distilled else VisionTransformer
    model = cls(**timm_kwargs(config))
    assert int(config.width * (config.mlp_fc1_dim / config.width)) == config.mlp_fc1_dim  # timm's int(dim * ratio)
    return unfused(model)


@pytest.mark.parametrize("name", FEATURE_CONFIGS)
def test_timm_loads_our_weights_strictly_and_agrees(name):
    config, weights, images = weights_and_images(name)
    model = timm_model(config)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
    assert list(model.state_dict()) == list(weights), "our layout's order is not timm's state_dict order"
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        tokens, logits = model.forward_features(x), model(x)
    ours = {"jax": jax_side.forward(config, weights, images), "torch": torch_side.forward(config, weights, images)}
    diffs = {}
    for twin, out in ours.items():
        diffs[f"{twin} tokens"] = scaled_diff(out["encoded"], tokens.numpy())
        diffs[f"{twin} logits"] = scaled_diff(out["logits"], logits.numpy())
        diffs[f"{twin} logits (fused)"] = scaled_diff(out["logits (fused attention)"], logits.numpy())
    report(f"timm features [{name}]", **diffs)


def test_every_feature_field_is_covered():
    """Each feature field takes a non-default value in at least one of the configs above."""
    from vit_spec.config import _DEFAULTS, FEATURE_FIELDS

    configs = [weights_and_images(n)[0] for n in FEATURE_CONFIGS]
    uncovered = [f for f in FEATURE_FIELDS if all(getattr(c, f) == _DEFAULTS[f] for c in configs)]
    assert not uncovered, f"no feature config sets {uncovered}"
    for value in ("map", "none"):
        assert any(c.pool == value for c in configs), f"no feature config has pool={value!r}"
    for field, values in (("mlp", ("swiglu_packed", "swiglu", "geglu")), ("activation", ("quick_gelu", "silu")),
                          ("final_norm", ("pooled", "none"))):
        missing = [v for v in values if not any(getattr(c, field) == v for c in configs)]
        assert not missing, f"no feature config has {field} in {missing}"
