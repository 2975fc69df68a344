"""ViTConfig: the one description of a Vision Transformer that both frameworks build from."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

# big_vision's variant table (big_vision/models/vit.py: decode_variant): g and G are the giant and gigantic of
# "Scaling Vision Transformers" (1011M and 1843M parameters at g/14, G/14), So400m SigLIP's shape-optimised one
# ("Getting ViT in Shape").
_WIDTH = {"mu": 32, "Ti": 192, "S": 384, "M": 512, "B": 768, "L": 1024, "H": 1280, "g": 1408, "G": 1664, "So400m": 1152}
_DEPTH = {"mu": 1, "Ti": 12, "S": 12, "M": 12, "B": 12, "L": 24, "H": 32, "g": 40, "G": 48, "So400m": 27}
_MLP_DIM = {"mu": 128, "Ti": 768, "S": 1536, "M": 2048, "B": 3072, "L": 4096, "H": 5120, "g": 6144, "G": 8192,
            "So400m": 4304}
_HEADS = {"mu": 2, "Ti": 3, "S": 6, "M": 8, "B": 12, "L": 16, "H": 16, "g": 16, "G": 16, "So400m": 16}

# The tutorial's CIFAR-10 model: patch 4, width 128, depth 4, 8 heads, MLP 256.
_TUTORIAL = dict(image_size=32, patch_size=4, num_classes=10, width=128, depth=4, heads=8, mlp_dim=256)

VARIANTS = tuple(f"{name}/<patch>" for name in _WIDTH) + ("tutorial",)

POOLS = ("cls", "mean", "map", "none")
POS_EMBEDS = ("learned", "sincos2d")
GELUS = ("exact", "tanh")
ACTIVATIONS = ("gelu", "quick_gelu", "silu")
# The MLP of each block: timm's Mlp, SwiGLUPacked (GluMlp, gate first), SwiGLU (fc1_g, fc1_x), GluMlp (gate last).
MLPS = ("plain", "swiglu_packed", "swiglu", "geglu")
# The activation each gated MLP is named for.
_GATED_ACTIVATION = {"swiglu_packed": "silu", "swiglu": "silu", "geglu": "gelu"}
NORMS = ("layer", "rms")
# Where the final norm sits: on every token before pooling (timm `norm`), on the pooled features (timm `fc_norm`), nowhere.
FINAL_NORMS = ("tokens", "pooled", "none")


class ConfigError(ValueError):
    """A ViTConfig that cannot describe a working model."""


def _pair(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an int or (height, width), got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        raise ConfigError(f"{name} must be an int or (height, width), got {value!r}") from None
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ConfigError(f"{name} must be an int or (height, width) of ints, got {value!r}")
    if min(pair) <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    return pair


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """A standard pre-norm Vision Transformer (ViT paper, big_vision, timm).

    Args:
        image_size: input size, an int or (height, width).
        patch_size: patch size, an int or (height, width); must divide image_size.
        channels: input channels.
        num_classes: classifier outputs; 0 means no head (the model returns pre-logits).
        width: token width (embed_dim / hidden_size).
        depth: number of encoder blocks.
        heads: attention heads; must divide width.
        mlp_dim: hidden width of each block's MLP.
        qkv_bias: whether the fused q/k/v projection has a bias.
        pool: "cls" (the [CLS] token), "mean" (mean of the patch tokens), "map" (big_vision's MAP head, timm's
            AttentionPoolLatent, over the patch tokens) or "none" (the model returns every token; needs
            num_classes=0 and no representation_size).
        pos_embed: "learned" or "sincos2d" (fixed, big_vision's 2-D sin-cos).
        layer_norm_eps: epsilon of every norm, LayerNorm or RMSNorm (1e-6 in Google's checkpoints and timm).
        dropout: dropout after the position embedding, the attention output and in the MLP.
        attention_dropout: dropout on the attention probabilities.
        drop_path: stochastic depth rate of the last block (linearly increasing from 0).
        representation_size: width of the tanh pre-logits layer, or None for none.
        gelu: "exact" (erf; timm, PyTorch) or "tanh" (the approximation; Flax's default, Google's checkpoints):
            the form of GELU wherever activation (or a GeGLU MLP) uses it.
        image_mean, image_std: how [0, 1] pixels are normalised, (x - mean) / std, before the model, one
            value per channel (default 0.5 for every channel: Google's checkpoints).
            Metadata for data pipelines: the model itself takes normalised images.

    Architecture features of timm's VisionTransformer (each default keeps the standard ViT above):
        layer_scale_init: per-channel gains on both residual branches, initialised to this value (timm
            `init_values`: blocks.N.ls1.gamma, ls2.gamma); None: no layer scale.
        class_token: whether there is a [CLS] token; None: exactly when pool == "cls".
        reg_tokens: register tokens (timm `reg_tokens`, tensor reg_token), after the [CLS] token, before the patches.
        pos_embed_covers_prefix: whether the position embedding has slots for the prefix tokens ([CLS],
            distillation, registers) and is added after they are prepended (True, timm's default), or covers
            the patches only and is added before (False: timm `no_embed_class=True`; DeiT III, DINOv2, big_vision).
        final_norm: "tokens" (norm every token before pooling, timm `norm`), "pooled" (norm the pooled
            features, timm `fc_norm`), "none" (timm `final_norm=False`).
        pre_norm: a norm after the embeddings, before the blocks (timm `pre_norm=True`, tensor norm_pre; CLIP).
        patch_bias: whether the patch projection has a bias (timm builds it without one when pre_norm=True).
        activation: the MLPs' nonlinearity: "gelu" (its form set by `gelu`), "quick_gelu" (x * sigmoid(1.702 x),
            OpenAI CLIP) or "silu" (timm `act_layer`).
        mlp: "plain" (fc1 -> act -> fc2), "swiglu_packed" (timm SwiGLUPacked: fc1 of 2*mlp_dim, silu(first half) *
            second half), "swiglu" (timm SwiGLU: silu(fc1_g(x)) * fc1_x(x)), "geglu" (timm GluMlp with GELU: first half
            * gelu(second half)). mlp_dim is the width fc2 reads in every case; a gated MLP needs the activation
            it is named for.
        mlp_norm: a norm inside each MLP, before fc2 (timm `scale_mlp_norm=True`, tensor mlp.norm).
        norm: "layer" (LayerNorm) or "rms" (RMSNorm, weight only: timm RmsNorm), for every norm of the model.
        qk_norm: normalise queries and keys per head over head_dim (timm `qk_norm=True`: attn.q_norm, attn.k_norm).
        distilled: DeiT's distillation token and second head (timm VisionTransformerDistilled: dist_token,
            head_dist); the output is the mean of the two heads' logits, in training as in inference.
        patch_norm: a norm on the patch embeddings, after the projection, before the position embedding (timm
            `embed_norm_layer`, tensor patch_embed.norm; AIMv2).
        attn_norm: a norm on each attention output before its projection (timm `scale_attn_norm=True`, tensor
            attn.norm; BEiT-3).
        proj_bias: whether the attention output projection and the MLPs' layers have biases (timm `proj_bias`;
            False in AIMv2). The MAP head keeps its biases, as timm's.
        pool_include_prefix: mean or MAP pooling over every token, the prefix tokens too (timm
            `pool_include_prefix=True`); False pools the patch tokens only. Needs prefix tokens.
    """

    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    channels: int = 3
    num_classes: int = 1000
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    pool: str = "cls"
    pos_embed: str = "learned"
    layer_norm_eps: float = 1e-6
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.0
    representation_size: int | None = None
    gelu: str = "exact"
    image_mean: tuple[float, ...] | None = None  # None: 0.5 per channel
    image_std: tuple[float, ...] | None = None
    layer_scale_init: float | None = None
    class_token: bool | None = None  # None: pool == "cls"
    reg_tokens: int = 0
    pos_embed_covers_prefix: bool = True
    final_norm: str = "tokens"
    pre_norm: bool = False
    patch_bias: bool = True
    activation: str = "gelu"
    mlp: str = "plain"
    mlp_norm: bool = False
    norm: str = "layer"
    qk_norm: bool = False
    distilled: bool = False
    patch_norm: bool = False
    attn_norm: bool = False
    proj_bias: bool = True
    pool_include_prefix: bool = False

    def __post_init__(self) -> None:
        # JSON gives lists; keep hashable, comparable tuples.
        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is None:  # one default per channel, however many channels there are
                value = (0.5,) * self.channels if isinstance(self.channels, int) and self.channels > 0 else ()
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
            ):
                raise ConfigError(f"{name} must be a sequence of numbers, one per channel, got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        self._validate()

    def _validate(self) -> None:
        image, patch = _pair("image_size", self.image_size), _pair("patch_size", self.patch_size)
        for name in ("channels", "width", "depth", "heads", "mlp_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 0:
            raise ConfigError(f"num_classes must be an int >= 0 (0: no head), got {self.num_classes!r}")
        if image[0] % patch[0] or image[1] % patch[1]:
            raise ConfigError(
                f"image_size {image} is not divisible by patch_size {patch}: "
                "pick a patch size that divides the image height and width"
            )
        if self.width % self.heads:
            raise ConfigError(
                f"width {self.width} is not divisible by heads {self.heads}: "
                f"each head gets width/heads channels (try heads in {_divisors(self.width)})"
            )
        if self.pool not in POOLS:
            raise ConfigError(f"unknown pool {self.pool!r}: use one of {POOLS}")
        if self.pos_embed not in POS_EMBEDS:
            raise ConfigError(f"unknown pos_embed {self.pos_embed!r}: use one of {POS_EMBEDS}")
        if self.pos_embed == "sincos2d" and self.width % 4:
            raise ConfigError(f"pos_embed='sincos2d' needs width divisible by 4, got width {self.width}")
        if self.gelu not in GELUS:
            raise ConfigError(f"unknown gelu {self.gelu!r}: use one of {GELUS}")
        if not isinstance(self.qkv_bias, bool):
            raise ConfigError(f"qkv_bias must be True or False, got {self.qkv_bias!r}")
        if not (isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0):
            raise ConfigError(f"layer_norm_eps must be a positive number, got {self.layer_norm_eps!r}")
        for name in ("dropout", "attention_dropout", "drop_path"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ConfigError(f"{name} must be a rate in [0, 1), got {value!r}")
        rep = self.representation_size
        if rep is not None and (not isinstance(rep, int) or isinstance(rep, bool) or rep <= 0):
            raise ConfigError(f"representation_size must be a positive int or None, got {rep!r}")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) != self.channels:
                raise ConfigError(
                    f"{name} has {len(getattr(self, name))} values but channels is {self.channels}: give one per channel"
                )
        if any(s <= 0 for s in self.image_std):
            raise ConfigError(f"image_std must be positive, got {self.image_std}")
        self._validate_features()

    def _validate_features(self) -> None:
        """The timm architecture features: each value, then the combinations that do not make a model."""
        for name in ("pos_embed_covers_prefix", "pre_norm", "patch_bias", "mlp_norm", "qk_norm", "distilled", "patch_norm",
                     "attn_norm", "proj_bias", "pool_include_prefix"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.class_token is not None and not isinstance(self.class_token, bool):
            raise ConfigError(f"class_token must be True, False or None (None: pool == 'cls'), got {self.class_token!r}")
        scale = self.layer_scale_init
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0):
            raise ConfigError(
                f"layer_scale_init must be a positive number (e.g. 1e-5) or None for no layer scale, got {scale!r}"
            )
        if not isinstance(self.reg_tokens, int) or isinstance(self.reg_tokens, bool) or self.reg_tokens < 0:
            raise ConfigError(f"reg_tokens must be an int >= 0 (0: no register tokens), got {self.reg_tokens!r}")
        for name, allowed in (("final_norm", FINAL_NORMS), ("activation", ACTIVATIONS), ("mlp", MLPS), ("norm", NORMS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}: use one of {allowed}")
        if self.pool == "cls" and self.class_token is False:
            raise ConfigError(
                "pool='cls' reads the [CLS] token, but class_token=False: set class_token=True (or None), "
                "or pool='mean' or 'map'"
            )
        if self.pool == "none":
            if self.num_classes or self.representation_size:
                raise ConfigError(
                    "pool='none' returns every token, so there is no head: set num_classes=0 and representation_size=None"
                )
            if self.final_norm == "pooled":
                raise ConfigError("pool='none' pools nothing for final_norm='pooled' to norm: use final_norm='tokens' or 'none'")
        if self.pool_include_prefix:
            if self.pool not in ("mean", "map"):
                raise ConfigError(
                    f"pool_include_prefix=True widens mean or MAP pooling to the prefix tokens, but pool={self.pool!r}: "
                    "set pool='mean' or 'map', or pool_include_prefix=False"
                )
            if not self.num_prefix_tokens:
                raise ConfigError(
                    "pool_include_prefix=True, but the model has no prefix tokens (no [CLS], distillation or register "
                    "tokens): it pools the patches either way; set pool_include_prefix=False"
                )
        gated = _GATED_ACTIVATION.get(self.mlp)
        if gated and self.activation != gated:
            raise ConfigError(
                f"mlp={self.mlp!r} gates with {gated}, but activation={self.activation!r}: set activation={gated!r}"
            )
        if self.distilled:
            if self.pool != "cls":
                raise ConfigError(f"distilled=True reads the [CLS] and distillation tokens: set pool='cls', not {self.pool!r}")
            if self.reg_tokens:
                raise ConfigError("distilled=True with register tokens is no timm model: set reg_tokens=0")
            if not self.pos_embed_covers_prefix:
                raise ConfigError(
                    "distilled=True: timm's VisionTransformerDistilled always gives both prefix tokens position slots: "
                    "set pos_embed_covers_prefix=True"
                )
            if self.representation_size:
                raise ConfigError("distilled=True has two heads on the tokens themselves: set representation_size=None")
            if self.final_norm == "pooled":
                raise ConfigError(
                    "distilled=True: timm's distilled head skips fc_norm, so final_norm='pooled' would norm nothing; "
                    "use final_norm='tokens' or 'none'"
                )

    # Derived sizes.
    @property
    def image_hw(self) -> tuple[int, int]:
        return _pair("image_size", self.image_size)

    @property
    def patch_hw(self) -> tuple[int, int]:
        return _pair("patch_size", self.patch_size)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches along height and width."""
        (h, w), (ph, pw) = self.image_hw, self.patch_hw
        return h // ph, w // pw

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid
        return gh * gw

    @property
    def has_class_token(self) -> bool:
        return self.pool == "cls" if self.class_token is None else self.class_token

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: [CLS], the distillation token, the registers (timm's order)."""
        return int(self.has_class_token) + int(self.distilled) + self.reg_tokens

    @property
    def num_tokens(self) -> int:
        return self.num_patches + self.num_prefix_tokens

    @property
    def num_pos_embed_tokens(self) -> int:
        """Rows of the position embedding: every token, or the patches alone (pos_embed_covers_prefix=False)."""
        return self.num_tokens if self.pos_embed_covers_prefix else self.num_patches

    @property
    def mlp_fc1_dim(self) -> int:
        """Output width of each MLP's fc1: both halves for the packed gated MLPs (timm's hidden_features)."""
        return 2 * self.mlp_dim if self.mlp in ("swiglu_packed", "geglu") else self.mlp_dim

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def features_dim(self) -> int:
        """Width of what the head reads: the pre-logits layer's, else the tokens'."""
        return self.representation_size or self.width

    def drop_path_rates(self) -> list[float]:
        """Per-block stochastic depth rates, linear from 0 to drop_path (timm's schedule)."""
        if self.depth == 1:
            return [float(self.drop_path)]
        return [float(self.drop_path) * i / (self.depth - 1) for i in range(self.depth)]

    # Construction.
    @classmethod
    def from_variant(cls, variant: str, **overrides: Any) -> "ViTConfig":
        """A named model: "Ti/16", "S/32", "B/16", "L/14", "H/14", "g/14", "So400m/14", ..., or "tutorial".

        Args:
            variant: "<size>/<patch>" with size in mu, Ti, S, M, B, L, H, g, G, So400m (big_vision's table), or
                "tutorial".
            **overrides: any ViTConfig field, e.g. num_classes=10, image_size=384.
        """
        if variant == "tutorial":
            fields = dict(_TUTORIAL)
        else:
            match = re.fullmatch(r"(\w+)/(\d+)(?:x(\d+))?", variant or "")
            if not match or match.group(1) not in _WIDTH:
                raise ConfigError(
                    f"unknown variant {variant!r}: use 'tutorial' or '<size>/<patch>' with size in "
                    f"{list(_WIDTH)} (e.g. 'S/16', 'B/32')"
                )
            size, ph, pw = match.group(1), int(match.group(2)), match.group(3)
            fields = dict(
                patch_size=(ph, int(pw)) if pw else ph,
                width=_WIDTH[size],
                depth=_DEPTH[size],
                mlp_dim=_MLP_DIM[size],
                heads=_HEADS[size],
            )
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown ViTConfig fields {sorted(unknown)}")
        fields.update(overrides)
        return cls(**fields)

    def replace(self, **changes: Any) -> "ViTConfig":
        return dataclasses.replace(self, **changes)

    def features(self) -> dict[str, Any]:
        """The architecture features (FEATURE_FIELDS) this config sets away from the standard ViT's defaults."""
        return {name: getattr(self, name) for name in FEATURE_FIELDS if getattr(self, name) != _DEFAULTS[name]}

    def to_dict(self) -> dict[str, Any]:
        """Every field, except the architecture features still at their defaults: a standard ViT's dict (and file
        metadata) is the one written before those features existed, readable by earlier versions."""
        out = dataclasses.asdict(self)
        for name in set(FEATURE_FIELDS) - set(self.features()):
            del out[name]
        for name in ("image_size", "patch_size", "image_mean", "image_std"):
            if isinstance(out[name], tuple):
                out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ViTConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a ViTConfig dict was expected, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown ViTConfig fields {sorted(unknown)} (known: {sorted(known)})")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ViTConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"the config is not valid JSON: {e}") from None
        return cls.from_dict(data)


# The fields of timm's architecture features (layer scale, registers, MAP pooling, ...): left out of to_dict() at
# their defaults.
FEATURE_FIELDS = (
    "layer_scale_init", "class_token", "reg_tokens", "pos_embed_covers_prefix", "final_norm", "pre_norm", "patch_bias",
    "activation", "mlp", "mlp_norm", "norm", "qk_norm", "distilled", "patch_norm", "attn_norm", "proj_bias",
    "pool_include_prefix",
)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ViTConfig)}


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 32) + 1) if n % d == 0]
