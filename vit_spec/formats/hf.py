"""Hugging Face transformers' ViT (`ViTModel`, `ViTForImageClassification`) <-> the shared layout; the other
families (DINOv2, SigLIP, CLIP, DeiT) are in hf_families.py, reached through read_hf and to_hf here.

Differences handled here:
- q, k and v are separate Linear layers in HF, one fused (3*D, D) `qkv` in the shared layout
  (concatenated in q, k, v order, as timm's reshape reads them).
- HF's LayerNorm epsilon defaults to 1e-12 (timm and Google: 1e-6); `layer_norm_eps` is carried over.
- `hidden_act`: "gelu"/"gelu_python" are the exact erf GELU; "gelu_new", "gelu_fast",
  "gelu_accurate", "gelu_pytorch_tanh" and "gelu_python_tanh" are the tanh approximation. Any other
  activation is refused.
- ViTForImageClassification reads the [CLS] token after the final LayerNorm; ViTModel's pooler is a
  Dense + tanh on it, which is the shared layout's pre-logits layer (`representation_size`). Which one a
  file is comes from config.json's `architectures`: a ViTForImageClassification builds its ViT without a
  pooler and ignores pooler tensors its file holds, so they are left out here too (and named). Without
  `architectures` (a bare state dict) pooler tensors are read as the pre-logits layer, and that is said.
- Input normalisation comes from preprocessor_config.json (image_mean, image_std) when present,
  otherwise ViTImageProcessor's default (0.5, 0.5, 0.5) is assumed and reported.
A bare HF state dict (no config.json) records neither heads, epsilon nor activation: heads come
from --variant/--heads and the rest is HF's ViTConfig default (1e-12, "gelu"), reported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

import vit_spec.formats.hf_families as families
from vit_spec.formats.checkpoint import Checkpoint
from vit_spec.formats.errors import FormatError, UnsupportedModelError
from vit_spec.formats.tensor_files import read_tensor_file, write_json, write_safetensors
from vit_spec.formats.flags import CONVERT_FLAGS, Flags
from vit_spec.formats.timm import config_from_shared_layout, describe_keys

HF_EXACT_GELUS = ("gelu", "gelu_python")
HF_TANH_GELUS = ("gelu_new", "gelu_fast", "gelu_accurate", "gelu_pytorch_tanh", "gelu_python_tanh")
HF_DEFAULT_EPS = 1e-12
HF_PROCESSOR_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # ViTImageProcessor's IMAGENET_STANDARD_MEAN/STD

# HF name within a layer (after the "vit." prefix) -> shared name, for everything but q/k/v. Files on the Hub
# (and save_pretrained, also in transformers 5) use "encoder.layer.N" names; transformers 5's in-memory
# state_dict() uses "layers.N" with q_proj/k_proj/v_proj/o_proj and mlp.fc1/fc2. Both are read; files
# are written with the first, which every transformers version loads.
_BLOCK = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_BLOCK_V5 = {"attention.o_proj": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_QKV_V5 = {"q": "query", "k": "key", "v": "value"}
_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "pooler.dense.weight": "pre_logits.fc.weight",
    "pooler.dense.bias": "pre_logits.fc.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}
_PATCH_KEY = "embeddings.patch_embeddings.projection.weight"


def is_hf_state_dict(arrays: Mapping[str, Any]) -> bool:
    return _PATCH_KEY in arrays or f"vit.{_PATCH_KEY}" in arrays or families.looks_like_family(arrays)


def hf_architecture(config) -> str:
    """The transformers class `vit convert --to hf` writes `config` as (raises UnsupportedModelError if none)."""
    arch, why = families.architecture_for(config)
    if arch is None:
        raise UnsupportedModelError(f"no Hugging Face class computes this model: {why}")
    return arch or ("ViTForImageClassification" if config.num_classes else "ViTModel")


def gelu_from_hidden_act(act: str, source: str) -> str:
    if act in HF_EXACT_GELUS:
        return "exact"
    if act in HF_TANH_GELUS:
        return "tanh"
    raise UnsupportedModelError(
        f"{source} uses hidden_act={act!r}; this project's ViT computes the exact GELU ({', '.join(HF_EXACT_GELUS)}) "
        f"or its tanh approximation ({', '.join(HF_TANH_GELUS)}) only"
    )


def shared_from_hf_names(arrays: Mapping[str, np.ndarray], source: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """HF names -> shared names; q, k, v fused into qkv. Raises on names it does not know."""
    notes: list[str] = []
    prefixed = any(k.startswith("vit.") for k in arrays)
    out: dict[str, np.ndarray] = {}
    qkv: dict[tuple[int, str, str], np.ndarray] = {}
    unknown = []
    for name, array in arrays.items():
        key = name[len("vit."):] if prefixed and name.startswith("vit.") else name
        if key in _TOP:
            out[_TOP[key]] = array
            continue
        if key == "embeddings.mask_token":
            notes.append("dropped embeddings.mask_token (used only for masked-image pre-training)")
            continue
        m = re.fullmatch(r"(encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)", key)
        if m:
            legacy, i, sub, leaf = m.group(1) == "encoder.layer", int(m.group(2)), m.group(3), m.group(4)
            qm = re.fullmatch(r"attention\.attention\.(query|key|value)" if legacy else r"attention\.([qkv])_proj", sub)
            if qm:
                qkv[(i, leaf, qm.group(1) if legacy else _QKV_V5[qm.group(1)])] = array
                continue
            table = _BLOCK if legacy else {**_BLOCK_V5, "layernorm_before": "norm1", "layernorm_after": "norm2"}
            if sub in table:
                out[f"blocks.{i}.{table[sub]}.{leaf}"] = array
                continue
        unknown.append(name)
    if unknown:
        raise UnsupportedModelError(
            f"{source} has tensors a Hugging Face ViTModel/ViTForImageClassification does not: {unknown[:5]}"
            f"{' and more' if len(unknown) > 5 else ''} (a different architecture, or a model with a decoder)"
        )
    for i, leaf in sorted({(i, leaf) for i, leaf, _ in qkv}):
        parts = [qkv.get((i, leaf, p)) for p in ("query", "key", "value")]
        if any(p is None for p in parts):
            raise FormatError(f"{source}: layer {i} lacks one of query/key/value.{leaf}")
        out[f"blocks.{i}.attn.qkv.{leaf}"] = np.concatenate(parts, axis=0)
    return out, notes


def from_hf(
    arrays: Mapping[str, np.ndarray],
    hf_config: Mapping[str, Any] | None,
    preprocessor: Mapping[str, Any] | None,
    source: str,
    *,
    variant: str | None = None,
    heads: int | None = None,
    source_image_size: int | tuple[int, int] | None = None,
    flags: Flags = CONVERT_FLAGS,
) -> Checkpoint:
    """HF ViT weights (+ config.json, preprocessor_config.json where there are) -> Checkpoint; `flags` name the
    caller's flags in messages."""
    if not is_hf_state_dict(arrays):
        raise FormatError(
            f"{source} is not a Hugging Face ViT state dict: expected {_PATCH_KEY} (or vit.{_PATCH_KEY}), "
            f"found {describe_keys(arrays)}"
        )
    shared, notes = shared_from_hf_names(arrays, source)
    notes += _follow_architecture(arrays, hf_config, shared)
    known: dict[str, Any] = {}
    if hf_config is not None:
        model_type = hf_config.get("model_type")
        if model_type != "vit":
            raise UnsupportedModelError(
                f"{source}: config.json has model_type={model_type!r}; this reader takes 'vit' (ViTModel, "
                f"ViTForImageClassification); {', '.join(sorted(families.MODEL_TYPES))} are read from a model directory"
            )
        if hf_config.get("pooler_act", "tanh") != "tanh" and "pre_logits.fc.weight" in shared:
            raise UnsupportedModelError(f"{source}: pooler_act={hf_config['pooler_act']!r}; only tanh is supported")
        _check_hf_sizes(hf_config, shared, source)
        # HF's ViTConfig defaults stand for any field config.json leaves out.
        known = dict(
            heads=int(hf_config.get("num_attention_heads", 12)),
            image_size=_size(hf_config.get("image_size", 224)),
            layer_norm_eps=float(hf_config.get("layer_norm_eps", HF_DEFAULT_EPS)),
            gelu=gelu_from_hidden_act(hf_config.get("hidden_act", "gelu"), source),
            dropout=float(hf_config.get("hidden_dropout_prob", 0.0)),
            attention_dropout=float(hf_config.get("attention_probs_dropout_prob", 0.0)),
        )
    if preprocessor is not None:
        mean, std, more = _normalisation(preprocessor, source)
        known.update(image_mean=mean, image_std=std)
        notes += more
    no_processor = "no preprocessor_config.json: ViTImageProcessor's default"
    defaults = {
        "layer_norm_eps": (HF_DEFAULT_EPS, "no config.json: Hugging Face ViTConfig's default"),
        "gelu": ("exact", "no config.json: Hugging Face ViTConfig's default hidden_act='gelu' (exact)"),
        "image_mean": (HF_PROCESSOR_MEAN_STD[0], no_processor),
        "image_std": (HF_PROCESSOR_MEAN_STD[1], no_processor),
    }
    config, shared, assumed, more, given = config_from_shared_layout(
        shared, source, variant=variant, heads=heads, source_image_size=source_image_size, known=known, defaults=defaults,
        flags=flags,
    )
    notes += more
    return Checkpoint(config, shared, "hf", assumed, notes, given)


# The transformers ViT classes that build their ViTModel with add_pooling_layer=False: their files' pooler
# tensors (saved by some trainers, or left from a ViTModel checkpoint) are ignored by from_pretrained.
_NO_POOLER = ("ViTForImageClassification", "ViTForMaskedImageModeling")


def _follow_architecture(
    arrays: Mapping[str, np.ndarray], hf_config: Mapping[str, Any] | None, shared: dict[str, np.ndarray]
) -> list[str]:
    """Keeps the pooler (as pre_logits) only where config.json's `architectures` computes it; drops it from `shared`
    otherwise. Returns the notes saying which."""
    pooler = [name for name in arrays if re.fullmatch(r"(vit\.)?pooler\.dense\.(weight|bias)", name)]
    if not pooler:
        return []
    named = ", ".join(sorted(pooler))
    architectures = list((hf_config or {}).get("architectures") or [])
    if "ViTModel" in architectures:
        return []
    no_pooler = [a for a in architectures if a in _NO_POOLER]
    if no_pooler:
        shared.pop("pre_logits.fc.weight", None)
        shared.pop("pre_logits.fc.bias", None)
        return [
            f"left out {named}: config.json's architectures is {no_pooler[0]}, which builds its ViT without a "
            "pooler and ignores them (it reads the [CLS] token after the final LayerNorm)"
        ]
    if hf_config is None:
        where = "no config.json, so no architectures"
    elif architectures:
        where = f"config.json's architectures {architectures} names neither ViTModel nor {' nor '.join(_NO_POOLER)}"
    else:
        where = "config.json records no architectures"
    return [
        f"{where}: {named} read as the pre-logits layer (Dense + tanh on [CLS], as ViTModel's pooler); a "
        "ViTForImageClassification ignores its pooler tensors, so convert such a file with its config.json"
    ]


def _size(value: Any) -> int | tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return value[0] if value[0] == value[1] else (int(value[0]), int(value[1]))
    return int(value)


def _check_hf_sizes(hf_config: Mapping[str, Any], shared: Mapping[str, np.ndarray], source: str) -> None:
    """config.json against the tensors, so that a mismatch names both."""
    proj = np.shape(shared["patch_embed.proj.weight"])
    checks = [
        ("hidden_size", hf_config.get("hidden_size", 768), proj[0], "patch embedding"),
        ("num_channels", hf_config.get("num_channels", 3), proj[1], "patch embedding"),
        ("intermediate_size", hf_config.get("intermediate_size", 3072),
         np.shape(shared["blocks.0.mlp.fc1.weight"])[0] if "blocks.0.mlp.fc1.weight" in shared else None, "intermediate.dense"),
    ]
    depth = len({k.split(".")[1] for k in shared if k.startswith("blocks.")})
    checks.append(("num_hidden_layers", hf_config.get("num_hidden_layers", 12), depth, "encoder.layer.N"))
    patch = _size(hf_config.get("patch_size", 16))
    patch = (patch, patch) if isinstance(patch, int) else patch
    checks.append(("patch_size", tuple(patch), tuple(proj[2:]), "patch embedding"))
    for name, want, found, where in checks:
        if found is not None and want != found:
            raise FormatError(f"{source}: config.json has {name}={want}, but the weights ({where}) have {found}")


def _normalisation(pre: Mapping[str, Any], source: str) -> tuple[tuple, tuple, list[str]]:
    notes = []
    rescale = pre.get("rescale_factor", 1 / 255) if pre.get("do_rescale", True) else 1.0
    if abs(rescale - 1 / 255) > 1e-9:
        notes.append(
            f"preprocessor_config.json rescales pixels by {rescale}, not 1/255; image_mean/image_std are recorded "
            "as given, for pixels the processor has rescaled"
        )
    if not pre.get("do_normalize", True):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), notes + ["preprocessor_config.json does not normalise (do_normalize=false)"]
    mean, std = pre.get("image_mean", HF_PROCESSOR_MEAN_STD[0]), pre.get("image_std", HF_PROCESSOR_MEAN_STD[1])
    if isinstance(mean, (int, float)):
        mean = [mean] * 3
    if isinstance(std, (int, float)):
        std = [std] * 3
    return tuple(float(m) for m in mean), tuple(float(s) for s in std), notes


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FormatError(f"{path} is not readable JSON ({type(e).__name__}: {e})") from None


def _read_weights_dir(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            arrays: dict[str, np.ndarray] = {}
            notes: list[str] = []
            for shard in shards:
                part, _, more = read_tensor_file(path / shard)
                arrays.update(part)
                notes += more
            return arrays, notes + [f"read {len(shards)} shards listed in {index_name}"]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            arrays, _, notes = read_tensor_file(path / name)
            return arrays, notes
    found = sorted(p.name for p in path.iterdir())[:10]
    raise FormatError(
        f"{path} has no Hugging Face weights: expected model.safetensors, pytorch_model.bin or a shard index; found {found}"
    )


def read_hf(
    path: str | Path,
    *,
    variant: str | None = None,
    heads: int | None = None,
    source_image_size: int | tuple[int, int] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    flags: Flags = CONVERT_FLAGS,
) -> Checkpoint:
    """A Hugging Face model directory, or a state-dict file (a ViT config.json beside it is used when present).

    `arrays`: the file's tensors when the caller has read them already.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    notes: list[str] = []
    if path.is_dir():
        folder = path
        if not (folder / "config.json").is_file():
            raise FormatError(f"{path} is a directory without config.json; a Hugging Face model directory was expected")
        arrays, notes = _read_weights_dir(folder)
    else:
        folder = path.parent
        if arrays is None:
            arrays, _, notes = read_tensor_file(path)
    hf_config = None
    if (folder / "config.json").is_file():
        candidate = _read_json(folder / "config.json")
        if path.is_dir() or candidate.get("model_type") == "vit" or candidate.get("model_type") in families.MODEL_TYPES:
            hf_config = candidate
            if not path.is_dir():
                notes.append(f"used {folder / 'config.json'} beside the weights")
    preprocessor = None
    if hf_config is not None and (folder / "preprocessor_config.json").is_file():
        preprocessor = _read_json(folder / "preprocessor_config.json")
    if hf_config is not None and hf_config.get("model_type") in families.MODEL_TYPES:
        checkpoint = families.from_hf_family(arrays, hf_config, preprocessor, str(path), _normalisation)
        checkpoint.notes[:0] = notes
        given = [f for f, v in ((flags.variant, variant), (flags.heads, heads), (flags.source_image_size, source_image_size))
                 if v and f]
        if given:
            checkpoint.notes.append(f"{'/'.join(given)} ignored: config.json records the architecture")
        return checkpoint
    if hf_config is None and families.looks_like_family(arrays) and not (_PATCH_KEY in arrays or f"vit.{_PATCH_KEY}" in arrays):
        raise FormatError(
            f"{path} holds the tensors of a Hugging Face DINOv2/SigLIP/CLIP/DeiT model, whose architecture only its "
            "config.json records: convert the model directory (with config.json)"
        )
    checkpoint = from_hf(
        arrays, hf_config, preprocessor, str(path), variant=variant, heads=heads, source_image_size=source_image_size,
        flags=flags,
    )
    checkpoint.notes[:0] = notes
    return checkpoint


def to_hf(checkpoint: Checkpoint) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any], list[str]]:
    """Checkpoint -> (HF state dict, config.json, preprocessor_config.json, notes)."""
    config, sd = checkpoint.config, checkpoint.state_dict
    arch = hf_architecture(config)
    if not arch.startswith("ViT"):
        arrays, hf_config, notes = families.to_hf_family(checkpoint, arch)
        hf_config["torch_dtype"] = str(next(iter(sd.values())).dtype)
        return arrays, hf_config, families.preprocessor_config(config), notes + [
            f"written as a {arch}: load it with transformers.{arch}.from_pretrained (or AutoModel)"]
    notes: list[str] = []
    if config.pool != "cls":
        raise UnsupportedModelError(
            "Hugging Face's ViT always reads a [CLS] token; this model has pool='mean' (no [CLS] token), so it has "
            "no Hugging Face ViT equivalent"
        )
    if config.representation_size and config.num_classes:
        raise UnsupportedModelError(
            f"ViTForImageClassification has no pre-logits layer, but this model has representation_size="
            f"{config.representation_size} before its head; convert with --drop-representation --num-classes N for a "
            "new head, or with --num-classes 0 to get a ViTModel whose pooler is the pre-logits layer"
        )
    classify = config.num_classes > 0
    prefix = "vit." if classify else ""
    out: dict[str, np.ndarray] = {}
    reverse = {v: k for k, v in _TOP.items()}
    for name, array in sd.items():
        if name in reverse:
            key = reverse[name]
            out[key if key.startswith("classifier") else prefix + key] = array
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", name)
        assert m, name
        i, sub, leaf = m.groups()
        base = f"{prefix}encoder.layer.{i}."
        if sub == "attn.qkv":
            for part, chunk in zip(("query", "key", "value"), np.split(array, 3, axis=0)):
                out[f"{base}attention.attention.{part}.{leaf}"] = np.ascontiguousarray(chunk)
            continue
        out[base + {v: k for k, v in _BLOCK.items()}[sub] + f".{leaf}"] = array
    if config.pos_embed == "sincos2d":
        notes.append("the fixed sin-cos position table is stored as HF's (learned) position_embeddings; it computes the same")
    image, patch = config.image_hw, config.patch_hw
    labels = {str(i): f"LABEL_{i}" for i in range(config.num_classes)}
    hf_config: dict[str, Any] = dict(
        architectures=["ViTForImageClassification" if classify else "ViTModel"],
        model_type="vit",
        hidden_size=config.width,
        num_hidden_layers=config.depth,
        num_attention_heads=config.heads,
        intermediate_size=config.mlp_dim,
        hidden_act="gelu" if config.gelu == "exact" else "gelu_pytorch_tanh",
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        initializer_range=0.02,
        layer_norm_eps=config.layer_norm_eps,
        image_size=image[0] if image[0] == image[1] else list(image),
        patch_size=patch[0] if patch[0] == patch[1] else list(patch),
        num_channels=config.channels,
        qkv_bias=config.qkv_bias,
        encoder_stride=patch[0],
        pooler_act="tanh",
        torch_dtype=str(next(iter(sd.values())).dtype),
    )
    if classify:
        hf_config.update(id2label=labels, label2id={v: int(k) for k, v in labels.items()})
    if config.representation_size:
        hf_config["pooler_output_size"] = config.representation_size
        notes.append("written as a ViTModel whose pooler (Dense + tanh on [CLS]) is the pre-logits layer: its pooler_output is this model's output")
    elif not classify:
        notes.append("written as a ViTModel without pooler: this model's output is last_hidden_state[:, 0] (load with add_pooling_layer=False)")
    preprocessor = dict(
        image_processor_type="ViTImageProcessor",
        do_resize=True,
        size={"height": image[0], "width": image[1]},
        resample=2,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
    )
    return out, hf_config, preprocessor, notes


def write_hf(path: str | Path, checkpoint: Checkpoint) -> list[str]:
    """Writes a Hugging Face model directory (config.json, model.safetensors, preprocessor_config.json)."""
    arrays, hf_config, preprocessor, notes = to_hf(checkpoint)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_safetensors(path / "model.safetensors", arrays, {"format": "pt"})
    write_json(path / "config.json", hf_config)
    write_json(path / "preprocessor_config.json", preprocessor)
    return notes
