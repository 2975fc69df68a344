"""Hugging Face's other ViT families (DINOv2, DINOv2 with registers, SigLIP, CLIP, DeiT) <-> the shared layout.

Read from a model directory (config.json says which family: `model_type`; which class: `architectures`), written
as the one class that computes the model (hf.hf_architecture picks it from the config):

    Dinov2Model                   layer scale (lambda1 -> ls1/ls2.gamma), SwiGLU (`weights_in` packed gate first ->
                                  mlp="swiglu_packed"), [CLS] with a position slot; mask_token dropped
    Dinov2WithRegistersModel      + register tokens, which get no position: HF adds the [CLS] slot before inserting the
                                  registers, so that slot is folded into cls_token (pos_embed_covers_prefix=False)
    SiglipVisionModel             no [CLS]; post_layernorm on every token; MAP head (`head.probe`, packed
                                  `in_proj_weight` -> attn_pool.q + attn_pool.kv); without head: pool="none"
    SiglipForImageClassification  mean of the (normed) tokens; its vision tower's unused MAP head is dropped
    CLIPVisionModel               pre_layrnorm (norm_pre), class_embedding, no patch bias; post_layernorm on the pooled
                                  [CLS] only (final_norm="pooled")
    CLIPForImageClassification    mean of the patch tokens, not normed (its unused post_layernorm is dropped)
    DeiTModel / DeiTForImageClassification  the distillation token, which these read nothing from, is a register
                                  token in front of the patches with a position slot (reg_tokens=1); DeiTModel's pooler
                                  is the pre-logits layer, as ViTModel's
    DeiTForImageClassificationWithTeacher   distilled=True: cls_classifier -> head, distillation_classifier -> head_dist
SiglipModel / CLIPModel (both towers) and CLIPVisionModelWithProjection are read as their vision tower; the text
tower, logit scale/bias and visual_projection are dropped, and named. Dinov2ForImageClassification (and the
registers one) classify [CLS] concatenated with the mean of the patch tokens: no config of this ViT computes that,
so they are refused. HF's position-embedding interpolation at run time (`interpolate_pos_encoding`) is not part of a
checkpoint; `--image-size` resamples the table once, as timm does.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import numpy as np

from vit_spec.config import ViTConfig
from vit_spec.formats.checkpoint import Checkpoint, build_config, check_layout
from vit_spec.formats.errors import FormatError, UnsupportedModelError

# model_type -> family
MODEL_TYPES = {
    "dinov2": "dinov2", "dinov2_with_registers": "dinov2", "siglip_vision_model": "siglip", "siglip": "siglip",
    "clip_vision_model": "clip", "clip": "clip", "deit": "deit",
}
_COMPOSITE = ("siglip", "clip")  # config.json with vision_config (and text_config)
_PREFIXES = ("dinov2_with_registers.", "dinov2.", "deit.", "vision_model.")
_DROPPED_TOWER = re.compile(r"(text_model\.|text_projection\.|logit_scale$|logit_bias$)")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
# Each family's transformers defaults for what config.json may leave out, and its image processor's normalisation.
_DEFAULTS = {
    "dinov2": dict(num_attention_heads=12, layer_norm_eps=1e-6, hidden_act="gelu", mean_std=IMAGENET,
                   processor="BitImageProcessor"),
    "siglip": dict(num_attention_heads=12, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
                   mean_std=((0.5,) * 3, (0.5,) * 3), processor="SiglipImageProcessor"),
    "clip": dict(num_attention_heads=12, layer_norm_eps=1e-5, hidden_act="quick_gelu", mean_std=OPENAI_CLIP,
                 processor="CLIPImageProcessor"),
    "deit": dict(num_attention_heads=12, layer_norm_eps=1e-12, hidden_act="gelu", mean_std=IMAGENET,
                 processor="DeiTImageProcessor"),
}
_EXACT = ("gelu", "gelu_python")
_TANH = ("gelu_new", "gelu_fast", "gelu_accurate", "gelu_pytorch_tanh", "gelu_python_tanh")

# Placeholders in the rename tables: parts fused after renaming.
_QKV, _GATE, _INPROJ, _DROP = "<qkv>", "<gate>", "<in_proj>", "<drop>"
_ATTN_PART = {"query": 0, "q": 0, "key": 1, "k": 1, "value": 2, "v": 2}

_DINOV2 = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.register_tokens", "reg_token"),
    (r"embeddings\.mask_token", _DROP),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(weight|bias)", _QKV),
    (r"encoder\.layer\.(\d+)\.attention\.(?:output\.dense|o_proj)\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.(?:fc1|weights_in)\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.mlp\.(?:fc2|weights_out|down_proj)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"encoder\.layer\.(\d+)\.mlp\.(gate|up)_proj\.(weight|bias)", _GATE),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]
_CLIP_SIGLIP = [
    (r"embeddings\.class_embedding", "cls_token"),
    (r"embeddings\.patch_embedding\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"embeddings\.position_embedding\.weight", "pos_embed"),
    (r"pre_layrnorm\.(weight|bias)", r"norm_pre.\1"),
    (r"encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn\.()([qkv])_proj\.(weight|bias)", _QKV),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"post_layernorm\.(weight|bias)", r"post_layernorm.\1"),  # norm or fc_norm: decided by the class
    (r"head\.probe", "attn_pool.latent"),
    (r"head\.attention\.in_proj_(weight|bias)", _INPROJ),
    (r"head\.attention\.out_proj\.(weight|bias)", r"attn_pool.proj.\1"),
    (r"head\.layernorm\.(weight|bias)", r"attn_pool.norm.\1"),
    (r"head\.mlp\.(fc[12])\.(weight|bias)", r"attn_pool.mlp.\1.\2"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]
_DEIT = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.distillation_token", "dist_token"),
    (r"embeddings\.mask_token", _DROP),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)()\.(weight|bias)", _QKV),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"encoder\.layer\.(\d+)\.layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"pooler\.dense\.(weight|bias)", r"pre_logits.fc.\1"),
    (r"(?:cls_)?classifier\.(weight|bias)", r"head.\1"),
    (r"distillation_classifier\.(weight|bias)", r"head_dist.\1"),
]
_RULES = {"dinov2": _DINOV2, "siglip": _CLIP_SIGLIP, "clip": _CLIP_SIGLIP, "deit": _DEIT}
_PATCH_KEYS = ("embeddings.patch_embeddings.projection.weight", "embeddings.patch_embedding.weight")


def looks_like_family(arrays: Mapping[str, Any]) -> bool:
    """Tensor names of one of these families (for format detection of a bare state dict)."""
    for name in arrays:
        for prefix in ("",) + _PREFIXES:
            if name.startswith(prefix) and name[len(prefix):] in _PATCH_KEYS:
                return True
    return False


def activation_from_hidden_act(act: str, source: str) -> tuple[str, str]:
    """HF's hidden_act -> (activation, gelu)."""
    if act in _EXACT:
        return "gelu", "exact"
    if act in _TANH:
        return "gelu", "tanh"
    if act == "quick_gelu":
        return "quick_gelu", "exact"
    if act in ("silu", "swish"):
        return "silu", "exact"
    raise UnsupportedModelError(
        f"{source} uses hidden_act={act!r}; this project's ViT computes GELU ({', '.join(_EXACT + _TANH)}), quick_gelu "
        "and silu only"
    )


def _hidden_act(config: ViTConfig) -> str:
    if config.activation == "gelu":
        return "gelu" if config.gelu == "exact" else "gelu_pytorch_tanh"
    return config.activation


def _rename(arrays: Mapping[str, np.ndarray], family: str, source: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """HF names (any model prefix stripped) -> shared names; q/k/v, gate/up and in_proj fused or split."""
    notes: list[str] = []
    rules = [(re.compile(p), t) for p, t in _RULES[family]]
    out: dict[str, np.ndarray] = {}
    qkv: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    gate: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    unknown, dropped = [], []
    for name, array in arrays.items():
        key = name
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        for pattern, target in rules:
            m = pattern.fullmatch(key)
            if not m:
                continue
            if target == _DROP:
                dropped.append(name)
            elif target == _QKV:
                layer, long, short, leaf = m.groups()
                qkv.setdefault((layer, leaf), {})[_ATTN_PART[long or short]] = array
            elif target == _GATE:
                layer, part, leaf = m.groups()
                gate.setdefault((layer, leaf), {})[part] = array
            elif target == _INPROJ:
                d = array.shape[0] // 3
                out[f"attn_pool.q.{m.group(1)}"], out[f"attn_pool.kv.{m.group(1)}"] = array[:d], array[d:]
            else:
                out[m.expand(target)] = array
            break
        else:
            unknown.append(name)
    if unknown:
        raise UnsupportedModelError(
            f"{source} has tensors a Hugging Face {family} vision model does not: {unknown[:5]}"
            f"{' and more' if len(unknown) > 5 else ''}"
        )
    for (layer, leaf), parts in sorted(qkv.items()):
        if sorted(parts) != [0, 1, 2]:
            raise FormatError(f"{source}: layer {layer} lacks one of query/key/value.{leaf}")
        out[f"blocks.{layer}.attn.qkv.{leaf}"] = np.concatenate([parts[0], parts[1], parts[2]], axis=0)
    for (layer, leaf), parts in sorted(gate.items()):
        if sorted(parts) != ["gate", "up"]:
            raise FormatError(f"{source}: layer {layer} lacks one of mlp.gate_proj/up_proj.{leaf}")
        out[f"blocks.{layer}.mlp.fc1.{leaf}"] = np.concatenate([parts["gate"], parts["up"]], axis=0)
    if dropped:
        notes.append(f"dropped {', '.join(sorted(dropped))} (used only for masked-image pre-training)")
    return out, notes


def _size(value: Any) -> int | tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value[0] == value[1] else (int(value[0]), int(value[1]))
    return int(value)


def _architecture(hf_config: Mapping[str, Any]) -> str | None:
    architectures = list(hf_config.get("architectures") or [])
    return architectures[0] if architectures else None


def from_hf_family(
    arrays: Mapping[str, np.ndarray], hf_config: Mapping[str, Any], preprocessor: Mapping[str, Any] | None, source: str,
    normalisation: Callable[[Mapping[str, Any], str], tuple[tuple, tuple, list[str]]],
) -> Checkpoint:
    """One of these families' weights + config.json (+ preprocessor_config.json) -> Checkpoint.

    `normalisation` reads a preprocessor_config.json (hf._normalisation)."""
    model_type = hf_config.get("model_type")
    family = MODEL_TYPES[model_type]
    arch = _architecture(hf_config)
    notes: list[str] = []
    vc = dict(hf_config.get("vision_config") or {}) if model_type in _COMPOSITE else dict(hf_config)
    if model_type in _COMPOSITE and not arch:
        raise FormatError(f"{source}: config.json (model_type {model_type!r}) records no architectures, so which class "
                          "reads its vision tower is unknown")
    kept, dropped = {}, []
    for name, array in arrays.items():
        if _DROPPED_TOWER.match(name) or name == "visual_projection.weight":
            dropped.append(name)
        else:
            kept[name] = array
    if dropped:
        towers = sorted({n.split(".")[0] for n in dropped})
        notes.append(f"read the vision tower only: left out {len(dropped)} tensors ({', '.join(towers)}); "
                     "this model's output is the vision tower's pooled features"
                     + (" before visual_projection" if "visual_projection" in towers else ""))
    if arch in ("Dinov2ForImageClassification", "Dinov2WithRegistersForImageClassification"):
        raise UnsupportedModelError(
            f"{source} is a {arch}: its classifier reads the [CLS] token concatenated with the mean of the patch tokens "
            "(2 x hidden_size features), which no pooling of this project's ViT computes; convert its backbone as a "
            "Dinov2Model instead (its config.json with architectures ['Dinov2Model'], the classifier.* tensors removed)"
        )
    if arch and arch.endswith(("ForMaskedImageModeling", "Backbone")):
        raise UnsupportedModelError(f"{source} is a {arch}; only the vision models and their image classifiers are read")
    sd, more = _rename(kept, family, source)
    notes += more
    defaults = _DEFAULTS[family]
    heads = int(vc.get("num_attention_heads", defaults["num_attention_heads"]))
    activation, gelu = activation_from_hidden_act(vc.get("hidden_act", defaults["hidden_act"]), source)
    if "patch_embed.proj.weight" not in sd or "blocks.0.attn.qkv.weight" not in sd:
        raise FormatError(f"{source} lacks the patch embedding or the first block of a {family} vision model")
    width, channels, ph, pw = sd["patch_embed.proj.weight"].shape
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for field, found in (("hidden_size", width), ("num_hidden_layers", depth), ("num_channels", channels)):
        if field in vc and int(vc[field]) != found:
            raise FormatError(f"{source}: config.json has {field}={vc[field]}, but the weights have {found}")
    fields: dict[str, Any] = dict(
        patch_size=ph if ph == pw else (ph, pw), channels=int(channels), width=int(width), depth=depth, heads=heads,
        qkv_bias="blocks.0.attn.qkv.bias" in sd, layer_norm_eps=float(vc.get("layer_norm_eps", defaults["layer_norm_eps"])),
        activation=activation, gelu=gelu, num_classes=0,
        dropout=float(vc.get("hidden_dropout_prob", 0.0)),
        attention_dropout=float(vc.get("attention_probs_dropout_prob", vc.get("attention_dropout", 0.0))),
    )
    if "pos_embed" in sd and sd["pos_embed"].ndim == 2:  # nn.Embedding (N, D)
        sd["pos_embed"] = sd["pos_embed"][None]
    if "cls_token" in sd and sd["cls_token"].ndim == 1:  # CLIP's class_embedding (D,)
        sd["cls_token"] = sd["cls_token"].reshape(1, 1, -1)
    reader = {"dinov2": _read_dinov2, "siglip": _read_siglip, "clip": _read_clip, "deit": _read_deit}[family]
    prefix_tokens = reader(sd, fields, vc, arch, source, notes)
    # The image size: config.json's, checked against the position table (prefix slots = prefix_tokens).
    n = sd["pos_embed"].shape[1] - prefix_tokens
    if "image_size" in vc:
        fields["image_size"] = _size(vc["image_size"])
    else:
        side = int(round(n ** 0.5))
        fields["image_size"] = side * ph
        notes.append(f"config.json records no image_size: {side * ph} from the {n}-entry position table")
    if preprocessor is not None:
        fields["image_mean"], fields["image_std"], more = normalisation(preprocessor, source)
        notes += more
        assumed = {}
    else:
        fields["image_mean"], fields["image_std"] = defaults["mean_std"]
        why = f"no preprocessor_config.json: {defaults['processor']}'s default"
        assumed = {"image_mean": why, "image_std": why}
    config = build_config(fields, source)
    if config.num_patches != n:
        raise FormatError(
            f"{source}: the position table has {n} patch entries, but image_size {config.image_size} with patch size "
            f"{config.patch_size} makes {config.num_patches}"
        )
    check_layout(config, sd, source)
    return Checkpoint(config, sd, "hf", assumed, notes)


def _read_dinov2(sd, fields, vc, arch, source, notes) -> int:
    fields["layer_scale_init"] = float(vc.get("layerscale_value", 1.0))
    fields["reg_tokens"] = int(sd["reg_token"].shape[1]) if "reg_token" in sd else 0
    if bool(vc.get("use_swiglu_ffn", False)):
        fields.update(mlp="swiglu_packed", activation="silu", mlp_dim=int(sd["blocks.0.mlp.fc2.weight"].shape[1]))
        notes.append("SwiGLU MLP (use_swiglu_ffn): weights_in packs gate then value, as timm's SwiGLUPacked "
                     "(mlp='swiglu_packed')")
    else:
        fields["mlp_dim"] = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    if fields["reg_tokens"]:
        # HF adds position_embeddings to [CLS] + patches, then inserts the registers: fold the [CLS] slot into the token.
        pos = sd["pos_embed"]
        sd["cls_token"] = sd["cls_token"] + pos[:, :1]
        sd["pos_embed"] = np.ascontiguousarray(pos[:, 1:])
        fields["pos_embed_covers_prefix"] = False
        notes.append("register tokens get no position: the [CLS] slot of position_embeddings was added to cls_token "
                     "(pos_embed_covers_prefix=False, as timm's DINOv2-with-registers), which computes the same")
        return 0
    return 1


def _read_siglip(sd, fields, vc, arch, source, notes) -> int:
    fields.update(class_token=False, mlp_dim=int(sd["blocks.0.mlp.fc1.weight"].shape[0]))
    sd["norm.weight"], sd["norm.bias"] = sd.pop("post_layernorm.weight"), sd.pop("post_layernorm.bias")
    has_map = "attn_pool.latent" in sd
    if arch == "SiglipForImageClassification":
        fields.update(pool="mean", num_classes=int(sd["head.weight"].shape[0]))
        if has_map:
            for k in [k for k in sd if k.startswith("attn_pool.")]:
                del sd[k]
            notes.append("left out the vision tower's MAP head (head.*): SiglipForImageClassification classifies the "
                         "mean of the tokens and does not use it")
    elif has_map:
        fields["pool"] = "map"
        if vc.get("vision_use_head") is False:
            raise FormatError(f"{source}: config.json has vision_use_head=false, but the weights hold a MAP head (head.*)")
    else:
        fields["pool"] = "none"
        notes.append("no MAP head (vision_use_head=false): the model returns every token (pool='none'), as "
                     "SiglipVisionModel's last_hidden_state")
    return 0


def _read_clip(sd, fields, vc, arch, source, notes) -> int:
    fields.update(pre_norm=True, patch_bias="patch_embed.proj.bias" in sd,
                  mlp_dim=int(sd["blocks.0.mlp.fc1.weight"].shape[0]))
    post = {leaf: sd.pop(f"post_layernorm.{leaf}") for leaf in ("weight", "bias") if f"post_layernorm.{leaf}" in sd}
    if arch == "CLIPForImageClassification":
        fields.update(class_token=True, pool="mean", final_norm="none", num_classes=int(sd["head.weight"].shape[0]))
        notes.append("CLIPForImageClassification classifies the mean of the patch tokens, not normed: post_layernorm "
                     "(which it does not use) left out")
    else:
        fields.update(pool="cls", final_norm="pooled")
        sd.update({f"fc_norm.{leaf}": v for leaf, v in post.items()})
    return 1


def _read_deit(sd, fields, vc, arch, source, notes) -> int:
    fields["mlp_dim"] = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    if "head_dist.weight" in sd:
        fields.update(distilled=True, num_classes=int(sd["head.weight"].shape[0]))
        return 2
    sd["reg_token"] = sd.pop("dist_token")
    fields["reg_tokens"] = 1
    notes.append("the distillation token, which this class reads nothing from, is a register token with a position "
                 "slot (reg_tokens=1), as it sits: after [CLS], before the patches")
    if "head.weight" in sd:
        fields["num_classes"] = int(sd["head.weight"].shape[0])
        for leaf in ("weight", "bias"):
            if sd.pop(f"pre_logits.fc.{leaf}", None) is not None:
                notes.append(f"left out pooler.dense.{leaf}: {arch or 'a DeiT classifier'} reads [CLS] without a pooler")
    elif "pre_logits.fc.weight" in sd:
        if vc.get("pooler_act", "tanh") != "tanh":
            raise UnsupportedModelError(f"{source}: pooler_act={vc['pooler_act']!r}; only tanh is supported")
        fields["representation_size"] = int(sd["pre_logits.fc.weight"].shape[0])
        notes.append("DeiTModel's pooler (Dense + tanh on [CLS]) is the pre-logits layer: the output is its pooler_output")
    return 2


# Writing.


def architecture_for(config: ViTConfig) -> tuple[str | None, str]:
    """(the HF class that computes `config`, or None when none does; why), for the families here.

    Returns ("", "") for a model without any of their features (hf.py's ViT classes write it).
    """
    c = config
    # Features no Hugging Face vision class has (AIMv2's patch norm and bias-free projections, BEiT-3's attention
    # norm, pooling over the prefix tokens): refused whatever the rest.
    missing = [what for what, present in (
        ("norm on the patch embeddings (patch_norm)", c.patch_norm),
        ("norm on the attention output (attn_norm)", c.attn_norm),
        ("bias-free projections (proj_bias=False)", not c.proj_bias),
        ("pooling over the prefix tokens (pool_include_prefix)", c.pool_include_prefix),
    ) if present]
    if missing:
        return None, (f"the Hugging Face classes written here (ViT, DeiT, Dinov2, CLIP, Siglip) have no "
                      f"{' or '.join(missing)}; transformers' AIMv2 classes are not among them: use --to timm")
    features = [f for f in ("layer_scale_init", "reg_tokens", "pre_norm", "distilled") if getattr(c, f)]
    if not features and c.pool in ("cls",) and c.has_class_token and c.final_norm == "tokens" and c.patch_bias \
            and c.activation == "gelu" and c.mlp == "plain" and c.norm == "layer" and not c.qk_norm and not c.mlp_norm \
            and c.pos_embed_covers_prefix:
        return "", ""
    common = []
    if c.norm != "layer":
        common.append("RMSNorm (norm='rms')")
    if c.qk_norm:
        common.append("qk-norm")
    if c.mlp_norm:
        common.append("a norm inside the MLP (mlp_norm)")
    if c.mlp in ("swiglu", "geglu"):
        common.append(f"mlp={c.mlp!r}")
    if c.representation_size and not (c.reg_tokens == 1 and not c.num_classes):
        common.append("a pre-logits layer")
    if common:
        return None, f"no Hugging Face vision class has {' or '.join(common)}"
    square = c.image_hw[0] == c.image_hw[1] and c.patch_hw[0] == c.patch_hw[1]
    if c.distilled or (c.reg_tokens == 1 and c.pos_embed_covers_prefix and c.has_class_token):
        why = _deit_misfit(c)
        if why:
            return None, why
        if c.distilled:
            return ("DeiTForImageClassificationWithTeacher" if c.num_classes else "DeiTModel"), ""
        return ("DeiTForImageClassification" if c.num_classes else "DeiTModel"), ""
    if c.layer_scale_init or c.mlp == "swiglu_packed" or c.reg_tokens:
        why = _dinov2_misfit(c, square)
        return (None, why) if why else ("Dinov2WithRegistersModel" if c.reg_tokens else "Dinov2Model", "")
    if c.pre_norm:
        why = _clip_misfit(c, square)
        if why:
            return None, why
        return ("CLIPForImageClassification" if c.num_classes else "CLIPVisionModel"), ""
    if not c.has_class_token:
        why = _siglip_misfit(c, square)
        if why:
            return None, why
        return ("SiglipForImageClassification" if c.num_classes else "SiglipVisionModel"), ""
    return None, ("no Hugging Face vision class computes this combination (pool={!r}, final_norm={!r}, activation={!r}, "
                  "class token {})".format(c.pool, c.final_norm, c.activation, c.has_class_token))


def _deit_misfit(c: ViTConfig) -> str:
    if c.pre_norm or c.layer_scale_init or not c.patch_bias or c.final_norm != "tokens" or c.pool != "cls" or c.mlp != "plain":
        return ("DeiT (the Hugging Face class with a second prefix token) is a plain ViT: no pre-norm, layer scale, "
                "patch embedding without bias, other final norm, pooling or MLP")
    return ""


def _dinov2_misfit(c: ViTConfig, square: bool) -> str:
    if c.num_classes:
        return (f"Dinov2ForImageClassification classifies [CLS] concatenated with the mean of the patch tokens, not "
                f"this model's {c.pool!r} pooling; convert with --num-classes 0 for a Dinov2Model")
    if c.pool != "cls" or not c.has_class_token or c.final_norm != "tokens" or c.pre_norm or not c.patch_bias:
        return "Hugging Face's Dinov2 reads a normed [CLS] token, with no pre-norm and a patch embedding with bias"
    if c.reg_tokens and c.pos_embed_covers_prefix:
        return "Hugging Face's Dinov2WithRegisters gives the registers no position slot, but this model's pos_embed has them"
    if not square:
        return "Hugging Face's Dinov2 needs a square image and patch (it reshapes the position table to a square)"
    if not c.layer_scale_init:
        return ""
    if _mlp_ratio(c) is None:
        return f"Dinov2Config's mlp_ratio is an int, and none gives mlp_dim {c.mlp_dim} at width {c.width} ({c.mlp} MLP)"
    return ""


def _mlp_ratio(c: ViTConfig) -> int | None:
    for ratio in range(1, 33):
        hidden = c.width * ratio
        if c.mlp == "swiglu_packed":
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        if hidden == c.mlp_dim:
            return ratio
    return None


def _clip_misfit(c: ViTConfig, square: bool) -> str:
    if not c.has_class_token or c.patch_bias or c.reg_tokens or c.layer_scale_init or c.mlp != "plain":
        return "Hugging Face's CLIP (the class with a pre-norm) has a class embedding, no patch bias, no registers or layer scale"
    if not square:
        return "Hugging Face's CLIP needs a square image and patch"
    if c.num_classes and (c.pool, c.final_norm) != ("mean", "none"):
        return ("CLIPForImageClassification classifies the mean of the patch tokens without a final norm; this model's "
                f"head reads pool={c.pool!r}, final_norm={c.final_norm!r}: convert with --num-classes 0 for a "
                "CLIPVisionModel" + (" (its pooler_output)" if (c.pool, c.final_norm) == ("cls", "pooled") else ""))
    if not c.num_classes and (c.pool, c.final_norm) != ("cls", "pooled"):
        return ("CLIPVisionModel's pooler_output is post_layernorm([CLS]); this model computes pool="
                f"{c.pool!r}, final_norm={c.final_norm!r}")
    return ""


def _siglip_misfit(c: ViTConfig, square: bool) -> str:
    if c.reg_tokens or c.layer_scale_init or c.pre_norm or not c.patch_bias or c.mlp != "plain" or c.final_norm != "tokens":
        return "Hugging Face's SigLIP (the class without a [CLS] token) is a plain ViT with a final norm on every token"
    if not square:
        return ("Hugging Face's ViT always reads a [CLS] token, and SigLIP (the class without one) needs a square image "
                "and patch")
    if c.pool == "map" and c.num_classes:
        return ("SiglipForImageClassification classifies the mean of the tokens, not its MAP head's output; convert "
                "with --num-classes 0 for a SiglipVisionModel")
    if c.pool == "mean" and not c.num_classes:
        return ("SiglipVisionModel without head returns its tokens, not their mean; a mean-pooled model is written as "
                "SiglipForImageClassification, with a head")
    if c.pool == "none" and c.num_classes:
        return "pool='none' has no head"
    return ""


def _linear(out: dict, name: str, sd: Mapping[str, np.ndarray], shared: str, bias: bool = True) -> None:
    out[f"{name}.weight"] = sd[f"{shared}.weight"]
    if bias:
        out[f"{name}.bias"] = sd[f"{shared}.bias"]


def _split_qkv(out: dict, base: str, names: tuple[str, str, str], sd: Mapping[str, np.ndarray], i: int, notes: list) -> None:
    weight = sd[f"blocks.{i}.attn.qkv.weight"]
    bias = sd.get(f"blocks.{i}.attn.qkv.bias")
    if bias is None:
        bias = np.zeros(weight.shape[0], weight.dtype)
        if i == 0:
            notes.append("qkv_bias=False: written as zero query/key/value biases, which compute the same")
    for name, w, b in zip(names, np.split(weight, 3, axis=0), np.split(bias, 3)):
        out[f"{base}{name}.weight"], out[f"{base}{name}.bias"] = np.ascontiguousarray(w), np.ascontiguousarray(b)


def to_hf_family(checkpoint: Checkpoint, arch: str) -> tuple[dict[str, np.ndarray], dict[str, Any], list[str]]:
    """Checkpoint -> (HF state dict, config.json, notes) for `arch` (from architecture_for)."""
    config, sd = checkpoint.config, checkpoint.state_dict
    if arch.startswith("Dinov2"):
        return _write_dinov2(config, sd, arch)
    if arch.startswith("Siglip"):
        return _write_siglip(config, sd, arch)
    if arch.startswith("CLIP"):
        return _write_clip(config, sd, arch)
    return _write_deit(config, sd, arch)


def _common(config: ViTConfig, arch: str, model_type: str) -> dict[str, Any]:
    image, patch = config.image_hw, config.patch_hw
    return dict(
        architectures=[arch], model_type=model_type, hidden_size=config.width, num_hidden_layers=config.depth,
        num_attention_heads=config.heads, num_channels=config.channels, hidden_act=_hidden_act(config),
        layer_norm_eps=config.layer_norm_eps, image_size=image[0] if image[0] == image[1] else list(image),
        patch_size=patch[0] if patch[0] == patch[1] else list(patch), initializer_range=0.02,
    )


def _labels(config: ViTConfig) -> dict[str, Any]:
    labels = {str(i): f"LABEL_{i}" for i in range(config.num_classes)}
    return dict(id2label=labels, label2id={v: int(k) for k, v in labels.items()}) if config.num_classes else {}


def _write_dinov2(config: ViTConfig, sd, arch):
    notes: list[str] = []
    out: dict[str, np.ndarray] = {}
    e = "embeddings."
    cls = sd["cls_token"]
    pos = sd["pos_embed"]
    if not config.pos_embed_covers_prefix:
        # HF's table always has the [CLS] slot: zero, the token keeps its own value (the registers get none either way).
        pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    out[e + "cls_token"], out[e + "position_embeddings"] = cls, pos
    out[e + "mask_token"] = np.zeros((1, config.width), cls.dtype)
    if config.reg_tokens:
        out[e + "register_tokens"] = sd["reg_token"]
    _linear(out, e + "patch_embeddings.projection", sd, "patch_embed.proj")
    swiglu = config.mlp == "swiglu_packed"
    for i in range(config.depth):
        b, s = f"encoder.layer.{i}.", f"blocks.{i}."
        _linear(out, b + "norm1", sd, s + "norm1")
        _split_qkv(out, b + "attention.attention.", ("query", "key", "value"), sd, i, notes)
        _linear(out, b + "attention.output.dense", sd, s + "attn.proj")
        _linear(out, b + "norm2", sd, s + "norm2")
        _linear(out, b + ("mlp.weights_in" if swiglu else "mlp.fc1"), sd, s + "mlp.fc1")
        _linear(out, b + ("mlp.weights_out" if swiglu else "mlp.fc2"), sd, s + "mlp.fc2")
        for j in (1, 2):
            gamma = sd.get(f"{s}ls{j}.gamma")
            out[f"{b}layer_scale{j}.lambda1"] = gamma if gamma is not None else np.ones(config.width, cls.dtype)
    _linear(out, "layernorm", sd, "norm")
    if not config.layer_scale_init:
        notes.append("no layer scale: written as Dinov2's layer scale of ones, which computes the same")
    notes.append("mask_token written as zeros (used only for masked-image pre-training)")
    hf = _common(config, arch, "dinov2_with_registers" if config.reg_tokens else "dinov2")
    hf.update(mlp_ratio=_mlp_ratio(config) or 4, use_swiglu_ffn=swiglu, layerscale_value=float(config.layer_scale_init or 1.0),
              qkv_bias=True, hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.attention_dropout,
              drop_path_rate=0.0)
    if swiglu:
        hf["hidden_act"] = "gelu"  # unused by the SwiGLU MLP
    if config.reg_tokens:
        hf["num_register_tokens"] = config.reg_tokens
    else:
        hf["use_mask_token"] = True
    return out, hf, notes


def _encoder_clip_siglip(config: ViTConfig, sd, out: dict, notes: list) -> None:
    for i in range(config.depth):
        b, s = f"encoder.layers.{i}.", f"blocks.{i}."
        _linear(out, b + "layer_norm1", sd, s + "norm1")
        _split_qkv(out, b + "self_attn.", ("q_proj", "k_proj", "v_proj"), sd, i, notes)
        _linear(out, b + "self_attn.out_proj", sd, s + "attn.proj")
        _linear(out, b + "layer_norm2", sd, s + "norm2")
        _linear(out, b + "mlp.fc1", sd, s + "mlp.fc1")
        _linear(out, b + "mlp.fc2", sd, s + "mlp.fc2")


def _write_siglip(config: ViTConfig, sd, arch):
    notes: list[str] = []
    out: dict[str, np.ndarray] = {}
    _linear(out, "embeddings.patch_embedding", sd, "patch_embed.proj")
    out["embeddings.position_embedding.weight"] = np.ascontiguousarray(sd["pos_embed"][0])
    _encoder_clip_siglip(config, sd, out, notes)
    _linear(out, "post_layernorm", sd, "norm")
    if config.pool == "map":
        out["head.probe"] = sd["attn_pool.latent"]
        out["head.attention.in_proj_weight"] = np.concatenate([sd["attn_pool.q.weight"], sd["attn_pool.kv.weight"]])
        out["head.attention.in_proj_bias"] = np.concatenate([sd["attn_pool.q.bias"], sd["attn_pool.kv.bias"]])
        _linear(out, "head.attention.out_proj", sd, "attn_pool.proj")
        _linear(out, "head.layernorm", sd, "attn_pool.norm")
        _linear(out, "head.mlp.fc1", sd, "attn_pool.mlp.fc1")
        _linear(out, "head.mlp.fc2", sd, "attn_pool.mlp.fc2")
    vision = _common(config, "SiglipVisionModel", "siglip_vision_model")
    vision.update(intermediate_size=config.mlp_dim, attention_dropout=config.attention_dropout,
                  vision_use_head=config.pool == "map")
    del vision["architectures"], vision["initializer_range"]
    if config.pool == "none":
        notes.append("written as a SiglipVisionModel without head (vision_use_head=false): its last_hidden_state is this "
                     "model's output")
    if arch == "SiglipVisionModel":
        return out, {"architectures": [arch], **vision}, notes
    out = {"vision_model." + k: v for k, v in out.items()}
    _linear(out, "classifier", sd, "head")
    return out, dict(architectures=[arch], model_type="siglip", vision_config=vision, **_labels(config)), notes


def _write_clip(config: ViTConfig, sd, arch):
    notes: list[str] = []
    out: dict[str, np.ndarray] = {}
    out["embeddings.class_embedding"] = np.ascontiguousarray(sd["cls_token"].reshape(-1))
    out["embeddings.patch_embedding.weight"] = sd["patch_embed.proj.weight"]
    out["embeddings.position_embedding.weight"] = np.ascontiguousarray(sd["pos_embed"][0])
    _linear(out, "pre_layrnorm", sd, "norm_pre")
    _encoder_clip_siglip(config, sd, out, notes)
    if config.final_norm == "pooled":
        _linear(out, "post_layernorm", sd, "fc_norm")
    else:
        dtype = sd["patch_embed.proj.weight"].dtype
        out["post_layernorm.weight"], out["post_layernorm.bias"] = np.ones(config.width, dtype), np.zeros(config.width, dtype)
        notes.append("post_layernorm written as the identity: CLIPForImageClassification does not use it")
    vision = _common(config, "CLIPVisionModel", "clip_vision_model")
    vision.update(intermediate_size=config.mlp_dim, attention_dropout=config.attention_dropout, projection_dim=512)
    if arch == "CLIPVisionModel":
        return out, vision, notes
    del vision["architectures"]
    out = {"vision_model." + k: v for k, v in out.items()}
    _linear(out, "classifier", sd, "head")
    return out, dict(architectures=[arch], model_type="clip", vision_config=vision, **_labels(config)), notes


def _write_deit(config: ViTConfig, sd, arch):
    notes: list[str] = []
    out: dict[str, np.ndarray] = {}
    e = "embeddings."
    out[e + "cls_token"] = sd["cls_token"]
    out[e + "distillation_token"] = sd["dist_token"] if config.distilled else sd["reg_token"]
    out[e + "position_embeddings"] = sd["pos_embed"]
    _linear(out, e + "patch_embeddings.projection", sd, "patch_embed.proj")
    for i in range(config.depth):
        b, s = f"encoder.layer.{i}.", f"blocks.{i}."
        _linear(out, b + "layernorm_before", sd, s + "norm1")
        _split_qkv(out, b + "attention.attention.", ("query", "key", "value"), sd, i, notes)
        _linear(out, b + "attention.output.dense", sd, s + "attn.proj")
        _linear(out, b + "layernorm_after", sd, s + "norm2")
        _linear(out, b + "intermediate.dense", sd, s + "mlp.fc1")
        _linear(out, b + "output.dense", sd, s + "mlp.fc2")
    _linear(out, "layernorm", sd, "norm")
    if config.representation_size:
        _linear(out, "pooler.dense", sd, "pre_logits.fc")
    hf = _common(config, arch, "deit")
    hf.update(intermediate_size=config.mlp_dim, qkv_bias=True, hidden_dropout_prob=config.dropout,
              attention_probs_dropout_prob=config.attention_dropout, encoder_stride=config.patch_hw[0],
              pooler_act="tanh", **_labels(config))
    if config.representation_size:
        hf["pooler_output_size"] = config.representation_size
    if arch == "DeiTModel":
        if not config.representation_size:
            notes.append("written as a DeiTModel without pooler: load it with add_pooling_layer=False; its "
                         "last_hidden_state holds this model's final tokens"
                         + (" (this model's output is the mean of [CLS] and the distillation token)" if config.distilled
                            else " (this model's output is last_hidden_state[:, 0])"))
        return out, hf, notes
    out = {"deit." + k: v for k, v in out.items()}
    if arch == "DeiTForImageClassificationWithTeacher":
        _linear(out, "cls_classifier", sd, "head")
        _linear(out, "distillation_classifier", sd, "head_dist")
    else:
        _linear(out, "classifier", sd, "head")
    return out, hf, notes


def preprocessor_config(config: ViTConfig) -> dict[str, Any]:
    """A ViTImageProcessor config (resize to the model's size, rescale, normalise): what this model expects."""
    image = config.image_hw
    return dict(
        image_processor_type="ViTImageProcessor", do_resize=True, size={"height": image[0], "width": image[1]},
        resample=2, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=list(config.image_mean), image_std=list(config.image_std),
    )
