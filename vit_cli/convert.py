"""`vit convert SRC DST`: port weights between this project, timm, Hugging Face and Google's checkpoints.

All conversion is vit_spec.formats (numpy); this module parses arguments and reports what was done.
torch is imported only to read a .pth/.bin source.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from vit_cli.flag_types import non_negative_int, positive_float, positive_int
from vit_spec.config import ACTIVATIONS, GELUS, ViTConfig

FORMAT_HELP = """formats:
  vit         this project's .safetensors (weights + config)                       read, write
  timm        timm VisionTransformer / VisionTransformerDistilled state dict
              (.safetensors, .pth, .bin): DINOv2, DeiT (III, distilled), SigLIP,
              CLIP, MAE, ...                                                        read, write (.safetensors)
  hf          Hugging Face ViT, DINOv2 (with registers), SigLIP, CLIP, DeiT models
              and their classifiers: a directory with config.json, or a
              state-dict file beside one                                            read, write (a directory)
  npz         Google's vision_transformer .npz (big_vision's layout is read too)    read, write
  big_vision  big_vision ViT .npz, SigLIP's image tower (MAP head) included         read, write

What a source does not record (heads of a timm state dict; its activation, GELU, norm eps and
input normalisation, as those of npz files) is taken from --variant (any timm name: timm builds
it on the meta device) or --heads, or assumed and printed; --gelu, --layer-norm-eps, --activation,
--image-mean and --image-std set it instead.

examples:
  vit convert vit_small.pth small.safetensors --variant vit_small_patch16_224
  vit convert dinov2.safetensors s14.safetensors --variant vit_small_patch14_reg4_dinov2.lvd142m
  vit convert ViT-B_16.npz b16.safetensors
  vit convert b16.safetensors b16-hf/ --to hf
  vit convert ViT-B_16.npz b16-384-cifar.safetensors --image-size 384 --num-classes 10
"""


def _image_size(text: str) -> int | tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    h, w = int(match.group(1)), match.group(2)
    return h if w is None or int(w) == h else (h, int(w))


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from vit_spec.formats.checkpoint_io import FORMATS, WRITABLE_FORMATS
    from vit_spec.resample import MODES

    p = subparsers.add_parser(
        "convert",
        help="convert weights between this project, timm, Hugging Face and Google's checkpoints",
        description="Convert a ViT checkpoint between formats, optionally for a new image size or class count.",
        epilog=FORMAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="the checkpoint to read (a file, or a Hugging Face model directory)")
    p.add_argument("dst", metavar="DST", help="where to write (a file; a directory for --to hf)")
    p.add_argument("--from", dest="src_format", choices=FORMATS, metavar="FORMAT", help=f"the source format: {', '.join(FORMATS)} (default: detected)")
    p.add_argument("--to", dest="dst_format", choices=WRITABLE_FORMATS, default="vit", metavar="FORMAT", help=f"the target format: {', '.join(WRITABLE_FORMATS)} (default: vit)")
    g = p.add_argument_group("what the source does not record")
    g.add_argument("--variant", metavar="NAME", help="the source's model: this project's (S/16, B/16, ...) or timm's (vit_small_patch16_224)")
    g.add_argument("--heads", type=positive_int, metavar="N", help="attention heads, for a timm/HF state dict no variant describes")
    g.add_argument("--source-image-size", type=_image_size, metavar="HxW", help="the image size (N or HxW) a timm/HF state dict or npz was saved at, where its position "
                   "table is not square or not at the image size of a --variant name (this replaces the name's)")
    g.add_argument("--pool-type", choices=("gap", "tok", "map", "0", "none"), help="big_vision's pool_type (default: from the parameters, else gap)")
    g.add_argument("--gelu", choices=GELUS, help="the source's GELU, where it does not record it")
    g.add_argument("--activation", choices=ACTIVATIONS, help="a timm state dict's MLP activation, where no --variant says it "
                   "(silu or gelu also tells a packed SwiGLU from a GeGLU MLP)")
    g.add_argument("--layer-norm-eps", type=positive_float, metavar="EPS", help="the source's LayerNorm epsilon, where it does not record it")
    g.add_argument("--image-mean", type=_floats, metavar="R,G,B", help="input normalisation mean (comma-separated), where the source does not record it")
    g.add_argument("--image-std", type=_floats, metavar="R,G,B", help="input normalisation std (comma-separated), where the source does not record it")
    g = p.add_argument_group("resolution and head")
    g.add_argument("--image-size", type=_image_size, metavar="HxW", help="a new image size, N or HxW: the position embedding is resampled")
    g.add_argument("--resample", choices=MODES, default="bicubic", help="position-embedding interpolation (default: bicubic, as timm)")
    g.add_argument("--no-antialias", dest="antialias", action="store_false", help="interpolate without antialiasing (timm's default is with)")
    g.add_argument("--num-classes", type=non_negative_int, metavar="N", help="a new class count: the head is re-initialised (0: no head)")
    g.add_argument("--drop-representation", action="store_true", help="drop the pre-logits layer (re-initialises the head)")
    g.add_argument("--head-seed", type=non_negative_int, metavar="SEED", help="initialise a new head from normal(0, 0.02) with this seed (default: zeros)")
    g = p.add_argument_group("writing")
    g.add_argument("--accept-mismatch", action="store_true", help="write an npz even if the model's GELU/eps differ from Google's code")
    g.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(run=run)


def _describe(config: ViTConfig) -> str:
    parts = [
        f"image {config.image_size}", f"patch {config.patch_size}", f"width {config.width}", f"depth {config.depth}",
        f"heads {config.heads}", f"mlp {config.mlp_dim}", f"pool {config.pool}", f"classes {config.num_classes}",
    ]
    if config.representation_size:
        parts.append(f"pre-logits {config.representation_size}")
    if config.pos_embed != "learned":
        parts.append(f"pos_embed {config.pos_embed}")
    if not config.qkv_bias:
        parts.append("no qkv bias")
    parts += [f"{name} {value}" for name, value in config.features().items()]
    parts += [f"gelu {config.gelu}", f"eps {config.layer_norm_eps:g}", f"mean {config.image_mean}", f"std {config.image_std}"]
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    from vit_spec.formats import adapt_checkpoint, init_head, missing_params, read_checkpoint, write_checkpoint
    from vit_spec.formats.hf import hf_architecture
    from vit_spec.formats.timm import timm_snippet

    src, dst = Path(args.src), Path(args.dst)
    if not src.exists():
        raise FileNotFoundError(f"no checkpoint at {src}")
    if dst.exists() and src.resolve() == dst.resolve():
        raise FileExistsError(f"SRC and DST are the same path ({dst}); write the conversion elsewhere")
    if dst.exists() and not args.overwrite and (dst.is_file() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} exists; pass --overwrite to replace it")
    if args.num_classes is not None and args.num_classes < 0:
        raise ValueError(f"--num-classes must be >= 0, got {args.num_classes}")

    overrides = dict(
        gelu=args.gelu, layer_norm_eps=args.layer_norm_eps, image_mean=args.image_mean, image_std=args.image_std,
        activation=args.activation,
    )
    checkpoint = read_checkpoint(
        src, args.src_format, variant=args.variant, heads=args.heads, source_image_size=args.source_image_size,
        pool_type=args.pool_type,
        image_size=args.image_size, overrides=overrides,
    )
    print(f"read {src} ({checkpoint.fmt}): {_describe(checkpoint.config)}")
    for message in checkpoint.messages():
        print(f"  {message}")
    shown = len(checkpoint.notes)
    checkpoint = adapt_checkpoint(
        checkpoint, args.image_size, args.num_classes, not args.drop_representation, args.resample, args.antialias
    )
    for message in checkpoint.notes[shown:]:
        print(f"  {message}")
    if missing_params(checkpoint.config, checkpoint.state_dict):
        dtype = checkpoint.state_dict["patch_embed.proj.weight"].dtype
        checkpoint.state_dict.update(init_head(checkpoint.config, args.head_seed, dtype))
        how = "zeros" if args.head_seed is None else f"normal(0, 0.02), seed {args.head_seed}"
        print(f"  new head initialised: {how}")
    notes = write_checkpoint(checkpoint, dst, args.dst_format, accept_mismatch=args.accept_mismatch)
    print(f"wrote {dst} ({args.dst_format}): {_describe(checkpoint.config)}")
    for note in notes:
        print(f"  {note}")
    if args.dst_format == "timm":
        print("  load it in timm with (strict=True):")
        for line in timm_snippet(checkpoint.config, str(dst)).splitlines():
            print(f"    {line}")
    if args.dst_format == "hf":
        print(f"  load it with transformers.{hf_architecture(checkpoint.config)}.from_pretrained({str(dst)!r})")
    return 0
