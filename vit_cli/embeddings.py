"""`vit embeddings`: the ViT paper's figure 7 for any weights file: position-embedding similarity and
the principal components of the patch-embedding filters (vit_figures.embeddings)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from vit_figures.embeddings import draw, embeddings_of, locality
    from vit_spec import load_weights

    if args.labels and len(args.labels) != len(args.weights):
        raise ValueError(f"--labels gives {len(args.labels)} names for {len(args.weights)} weights files: give one per file")
    models = []
    for i, path in enumerate(args.weights):
        config, weights = load_weights(path)
        name = args.labels[i] if args.labels else Path(path).parent.name or Path(path).name
        model = embeddings_of(name, config, weights)
        models.append(model)
        neighbours, others = locality(model.similarity)
        print(f"{path}: {config.pos_embed} position embedding, mean cosine similarity with the 4 neighbours "
              f"{neighbours:.3f}, with all other patches {others:.3f}; first {len(model.ratio)} filter components "
              f"explain {model.ratio.sum():.1%} of the variance")
    draw(args.out, models)
    print(f"wrote {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embeddings",
        help="draw what the embedding learned: position-embedding similarity and patch-filter components",
        description="The ViT paper's figure 7 for each weights file (one row each; give a learned and a sincos2d model "
        "to compare them): the cosine similarity of each patch's position embedding with every other patch's, and "
        "the first 28 principal components of the patch-embedding filters as image tiles.",
    )
    p.add_argument("weights", nargs="+", help=".safetensors weights files of this project")
    p.add_argument("--out", required=True, metavar="PNG", help="the picture goes here")
    p.add_argument("--labels", nargs="+", metavar="NAME", help="a name per file (default: each file's folder)")
    p.set_defaults(run=_run)
