"""`vit embeddings`: the ViT paper's figure 7 for any weights file: position-embedding similarity and
the principal components of the patch-embedding filters (vit_figures.embeddings).

Each WEIGHTS is a weights file or the workdir of a finished `vit train` run (its model.safetensors). The
picture's format is its --out suffix (.png, .jpg, .pdf, .svg, ...); an existing --out is replaced only with
--overwrite.
"""

from __future__ import annotations

import argparse

from vit_cli.output_files import add_overwrite_flag, check_output


def _run(args: argparse.Namespace) -> int:
    from vit_figures.embeddings import draw, embeddings_of, locality
    from vit_figures.figure_files import figure_format
    from vit_spec import load_weights, resolve_weights_path
    from vit_spec.embedding_maps import row_column_parts

    if args.labels and len(args.labels) != len(args.weights):
        raise ValueError(f"--labels gives {len(args.labels)} names for {len(args.weights)} weights files: give one per file")
    check_output(args.out, args.overwrite, "--out")
    figure_format(args.out, "--out")
    models = []
    for i, given in enumerate(args.weights):
        path = resolve_weights_path(given)
        config, weights = load_weights(path)
        name = args.labels[i] if args.labels else path.parent.name or path.name
        model = embeddings_of(name, config, weights)
        models.append(model)
        neighbours, others = locality(model.similarity)
        print(f"{path}: {config.pos_embed} position embedding, mean cosine similarity with the 4 neighbours "
              f"{neighbours:.3f}, with all other patches {others:.3f}; first {len(model.ratio)} filter components "
              f"explain {model.ratio.sum():.1%} of the variance")
        parts = row_column_parts(weights, config)
        if parts is not None:
            print(f"  row + column parts explain {parts.share:.1%} of the position table's variance "
                  f"({parts.chance:.1%} for random vectors, 100% for sin-cos); similarity of the first and last "
                  f"row's parts {parts.rows[0, -1]:.2f}, of the first and last column's {parts.columns[0, -1]:.2f}")
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
    p.add_argument("weights", nargs="+", help=".safetensors weights files of this project, or finished `vit train` "
                   "workdirs (their model.safetensors)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the picture goes here; its suffix picks the format (.png, .jpg, .pdf, .svg, ...)")
    add_overwrite_flag(p, "--out")
    p.add_argument("--labels", nargs="+", metavar="NAME", help="a name per file (default: each file's folder)")
    p.set_defaults(run=_run)
