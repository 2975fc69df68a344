"""`vit summary VARIANT|FILE`: per-layer output shapes and parameter counts, from both twins (twins.summary).

Nothing is computed: JAX traces with jax.eval_shape and PyTorch runs on the meta device, so even
ViT-H/14 is summarised in seconds.
"""

from __future__ import annotations

import argparse

from vit_cli.flag_types import non_negative_int, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "summary",
        help="per-layer parameter and shape table of a variant or weights file, from both twins",
        description="Prints each layer's output shape and parameter count as the JAX and the PyTorch model see "
        "them, and the totals; exits 1 if the twins disagree.",
    )
    p.add_argument("model", help="a variant (tutorial, Ti/16, S/16, B/16, L/16, H/14, ...) or a .safetensors weights file")
    p.add_argument("--depth", type=positive_int, default=2, help="how deep to list modules (blocks.0.attn is 2; default 2)")
    p.add_argument("--num-classes", type=non_negative_int, help="override the variant's number of classes")
    p.add_argument("--image-size", type=positive_int, help="override the variant's image size")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from twins.summary import agree, config_of, format_summary, summarize
    from vit_spec import num_params

    overrides = {k: v for k, v in (("num_classes", args.num_classes), ("image_size", args.image_size)) if v is not None}
    config = config_of(args.model, **overrides)
    rows, jax_total, torch_total = summarize(config, args.depth)
    print(format_summary(config, rows, jax_total, torch_total, f"ViT {args.model}"))
    if not agree(config, rows, jax_total, torch_total):
        print(f"FAIL: the twins disagree (the shared layout counts {num_params(config):,})")
        return 1
    return 0
