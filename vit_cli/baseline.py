"""`vit baseline`: the tutorial's reference CNN, a CIFAR ResNet-18, on the ViT runs' data (train.torch_loop.resnet_baseline)."""

from __future__ import annotations

import argparse

from vit_cli.flag_types import non_negative_int, positive_float, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "baseline",
        help="train the tutorial's reference CNN (a CIFAR ResNet-18, PyTorch) on the ViT runs' data, to compare",
        description="Trains torchvision's ResNet-18 in its CIFAR form (3x3 stem, no max-pool) with the CIFAR baselines' "
        "recipe (SGD, Nesterov momentum 0.9, weight decay 5e-4, warmup + cosine, crop + flip) on the same splits, "
        "batch order and augmentation code as `vit train`. A reference point, not a twin: PyTorch only. Writes "
        "metrics.jsonl (for `vit plot` beside ViT runs), config.json, checkpoints and model.pt; the same command resumes.",
    )
    p.add_argument("--epochs", type=positive_int, required=True,
                   help="epochs; the schedule spans them (pick them for the time you want to compare at)")
    p.add_argument("--workdir", required=True, help="where the run's files go; a workdir holding a checkpoint is resumed")
    p.add_argument("--dataset", default="cifar10", help="tfds dataset of 32x32 RGB images (default: cifar10)")
    p.add_argument("--data-dir", help="tfds data directory (default: $TFDS_DATA_DIR, else tfds's default)")
    p.add_argument("--validation", type=non_negative_int, metavar="N",
                   help="training examples held out for validation, as `vit train` holds them out (default: 5000)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of initialisation, data order and augmentation (default: 0)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default: 0.1)")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default: 128)")
    p.add_argument("--log-every", type=positive_int, default=50, help="steps between metrics.jsonl records (default: 50)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from train.torch_loop.resnet_baseline import ResNetRecipe, train
    from train.run import TrainOptions

    recipe = ResNetRecipe()
    recipe = dataclasses.replace(recipe, lr=args.lr or recipe.lr, batch_size=args.batch_size or recipe.batch_size)
    options = TrainOptions(workdir=args.workdir, epochs=args.epochs, dataset=args.dataset, data_dir=args.data_dir,
                           validation=args.validation, seed=args.seed, log_every=args.log_every, progress=args.progress,
                           framework="torch")
    evals = train(options, recipe)
    scores = ", ".join(f"{name} accuracy {value['accuracy']:.2%}" for name, value in evals.items())
    print(f"{scores}; weights in {args.workdir}/model.pt")
    return 0
