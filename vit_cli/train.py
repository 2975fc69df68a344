"""`vit train`: train either twin on CIFAR-10 (or another tfds dataset); the run is train.launch's."""

from __future__ import annotations

import argparse
import os

from vit_cli.flag_types import (byte_size, float_in, mesh_spec, non_negative_float, non_negative_int, positive_float, positive_int, rate,
                                 steps_or_duration)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the ViT on CIFAR-10 (or another tfds image-classification dataset: cifar100, mnist, ...)",
        description="Trains the Flax ViT with jitted optax steps, data-parallel over every device, or (--framework torch) "
        "the PyTorch twin with torch.optim and torchvision's augmentation: the same recipe, data order and schedule. "
        "Run it again in the same --workdir to resume from the last checkpoint.",
    )
    p.add_argument("--framework", default="jax", choices=("jax", "torch"),
                   help="which twin trains: jax (Flax, jitted optax steps) or torch (PyTorch; CUDA when present) (default: jax)")
    p.add_argument("--model", default="tutorial", help="model variant: 'tutorial' or '<size>/<patch>', e.g. 'Ti/4' (default: tutorial)")
    p.add_argument("--recipe", default="default", choices=("default", "tutorial", "finetune"),
                   help="'default' (ours, from scratch), 'tutorial' (the tutorial's setup) or 'finetune' (for "
                   "--init-from: the ViT paper's SGD fine-tuning) (default: default)")
    p.add_argument("--epochs", type=positive_int, help="epochs (default: the recipe's, 200 default / 50 tutorial)")
    p.add_argument("--steps", type=positive_int, help="train for this many steps instead (the schedule spans them)")
    p.add_argument("--batch-size", type=positive_int, help="global batch size, split over all devices (default: the recipe's, 128)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--optimizer", choices=("adamw", "sgd", "adam_l2"),
                   help="adamw (decoupled weight decay on matrices), sgd (momentum 0.9) or adam_l2 (Adam, L2 decay on "
                   "every parameter) (default: the recipe's: adamw default, adam_l2 tutorial, sgd finetune)")
    p.add_argument("--weight-decay", type=non_negative_float, metavar="WD", help="weight decay (default: the recipe's)")
    p.add_argument("--layer-decay", type=float_in(0.0, 1.0, low_open=True), metavar="RATE",
                   help="layer-wise learning-rate decay (BEiT, MAE; timm's): block i's rate scaled by "
                   "RATE ** (depth - i), the embeddings' by RATE ** (depth + 1), the head's not (default: none)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of initialisation, data order and augmentation (default: 0)")
    p.add_argument("--workdir", help="checkpoints, metrics.jsonl, curves.png, config.json and model.safetensors go here; "
                   "a workdir holding a checkpoint is resumed (default: runs/DATASET-RECIPE-MODEL)")
    p.add_argument("--data-dir", help="tfds data directory (default: $TFDS_DATA_DIR, else tfds's default)")
    p.add_argument("--dataset", default="cifar10", help="tfds image-classification dataset of fixed image size, or "
                   "folder:PATH, your own images: PATH/train/CLASS/*.jpg (any size, mode and format Pillow reads), "
                   "optionally PATH/validation/CLASS/* (or val/) and PATH/test/CLASS/* (default: cifar10)")
    p.add_argument("--image-size", type=positive_int, metavar="N", help="folder:PATH: the model's resolution, N x N "
                   "(default: the training images' own size where they all share one; --init-from resamples to it)")
    p.add_argument("--crop-pct", type=float_in(0.0, 1.0, low_open=True), metavar="F",
                   help="folder:PATH: timm's crop_pct of the evaluation transform (resize to N / F, centre-crop N) "
                   "(default: 1, the whole centre square, as `vit predict` reads files)")
    p.add_argument("--workers", type=non_negative_int, default=default_workers(), metavar="N",
                   help="folder:PATH: processes decoding images (grain), once into memory or, streamed, for every "
                   f"step; 0 decodes in the training process (default: one per core, at most 8: {default_workers()})")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype; parameters stay float32")
    p.add_argument("--eval-every", type=non_negative_int, default=1, help="epochs between validation evaluations; 0: only at the end (default: 1)")
    p.add_argument("--validation", type=non_negative_int, metavar="N",
                   help="training examples held out (a fixed permutation, the same for every seed) to evaluate on while "
                   "training; the test split is scored once, at the end. 0: train on all (default: 5000 of a tfds "
                   "dataset; a folder's validation/ split, else a tenth of its training images)")
    p.add_argument("--pos-embed", choices=("learned", "sincos2d"), help="position embedding (default: the recipe's: sincos2d for default, learned for tutorial)")
    p.add_argument("--pool", choices=("cls", "mean"), help="[CLS] token or mean of the tokens (default: the variant's, cls)")
    g = p.add_argument_group("regularisation", "each overrides that part of the recipe (the default recipe scales them "
                             "with the run's length: see README, 'A recipe that scales with the run')")
    g.add_argument("--crop-padding", type=non_negative_int, metavar="PIXELS", help="random crop after zero padding by this much (0: off)")
    g.add_argument("--randaugment-ops", type=non_negative_int, metavar="N", help="RandAugment ops per image (0: off)")
    g.add_argument("--randaugment-magnitude", type=float_in(0.0, 10.0), metavar="M", help="RandAugment magnitude, 0-10")
    g.add_argument("--mixup", type=non_negative_float, metavar="ALPHA", dest="mixup_alpha", help="mixup Beta alpha (0: off)")
    g.add_argument("--cutmix", type=non_negative_float, metavar="ALPHA", dest="cutmix_alpha", help="CutMix Beta alpha (0: off)")
    g.add_argument("--label-smoothing", type=rate, metavar="EPS")
    g.add_argument("--drop-path", type=rate, metavar="RATE", help="stochastic depth rate of the last block")
    g.add_argument("--dropout", type=rate, metavar="RATE", help="dropout after the position embedding, attention and MLP")
    p.add_argument("--log-every", type=positive_int, default=50, help="steps between metrics.jsonl records (default: 50)")
    p.add_argument("--checkpoint-every", type=steps_or_duration, metavar="N|TIME",
                   help="steps between checkpoints (500), or the time between them (90s, 10m, 1.5h) "
                   "(default: each epoch, and at most 30 minutes after the last)")
    p.add_argument("--keep-checkpoints", type=positive_int, default=3, help="the newest checkpoints kept, at least 1 (default: 3)")
    p.add_argument("--init-from", metavar="FILE", help="fine-tune from a checkpoint in any format `vit convert` reads "
                   "(vit, timm, hf, npz, big_vision): its architecture and normalisation, resampled to the dataset's "
                   "image size, with a new head for its classes; --model is then not used")
    p.add_argument("--init-variant", help="what --init-from's file does not record, as `vit convert --variant` "
                   "(a variant such as S/16, or a timm model name; a timm name may carry the size the file was saved "
                   "at, e.g. vit_small_patch16_64)")
    p.add_argument("--freeze", choices=("backbone",),
                   help="backbone: linear probing, only the head of the --init-from checkpoint trains (default: all)")
    p.add_argument("--streaming", action="store_true", help="read training batches from the data source instead of memory")
    p.add_argument("--steps-per-dispatch", type=positive_int, default=1, metavar="K",
                   help="train steps per jitted call (a scan over K steps), for small models on fast accelerators where a "
                   "step costs less than its dispatch; K>1 keeps the training split on the device and sends only the "
                   "batches' indices. The same steps, equal to float32 rounding (default: 1)")
    p.add_argument("--data-on-device", action="store_true",
                   help="keep the training split on the device and gather each batch there (implied by --steps-per-dispatch > 1)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--mesh", type=mesh_spec, metavar="AXIS=N,...",
                   help="JAX: the devices on the axes data (batch split, parameters whole), fsdp (batch and parameters "
                        "and optimizer state split) and model (matmuls split), e.g. data=2,fsdp=4 or fsdp=-1 (-1: the "
                        "devices the others leave; default: all on data)")
    p.add_argument("--shard-min-mb", type=non_negative_float, default=4.0, metavar="MB",
                   help="under fsdp, tensors smaller than this stay whole on every device (default: 4, big_vision's)")
    p.add_argument("--remat", action="store_true",
                   help="JAX: run the blocks as one scan over depth and recompute their activations in the backward "
                        "pass: a fraction of the activation memory for about one more forward pass")
    p.add_argument("--dry-run", action="store_true",
                   help="JAX: compile the train step for the run's model, batch and mesh without training or reading "
                        "images, and print each device's bytes (parameters, optimizer state, activations, peak); "
                        "exit 1 where it does not fit --device-memory")
    p.add_argument("--device-memory", type=byte_size, metavar="SIZE",
                   help="--dry-run: the device's memory, e.g. 16GB or 80GiB (default: the device's own, where known)")
    p.add_argument("--simulate-devices", type=positive_int, metavar="N",
                   help="--dry-run: plan for N devices, simulated on this machine's CPU (e.g. a pod's mesh)")
    p.add_argument("--coordinator", help="multi-process runs: host:port of process 0, or 'auto' (TPU pods, SLURM: jax.distributed detects it)")
    p.add_argument("--num-processes", type=positive_int, help="multi-process runs: number of processes")
    p.add_argument("--process-id", type=non_negative_int, help="multi-process runs: this process's index")
    p.set_defaults(run=run_train)


def default_workers() -> int:
    """--workers' default: one decoding process per core, at most 8."""
    return min(8, os.cpu_count() or 1)


def run_train(args: argparse.Namespace) -> int:
    from train.recipes import REGULARISATION_PARTS
    from train.launch import launch
    from train.run import TrainOptions

    regularisation = {k: getattr(args, k) for k in REGULARISATION_PARTS if getattr(args, k) is not None}
    options = TrainOptions(
        workdir=args.workdir, model=args.model, recipe=args.recipe, epochs=args.epochs, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        layer_decay=args.layer_decay, seed=args.seed, dataset=args.dataset, data_dir=args.data_dir,
        dtype=args.dtype, eval_every=args.eval_every, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every[0] if args.checkpoint_every else None,
        checkpoint_seconds=args.checkpoint_every[1] if args.checkpoint_every else None, keep_checkpoints=args.keep_checkpoints,
        streaming=args.streaming, progress=args.progress, init_from=args.init_from, init_variant=args.init_variant,
        freeze=args.freeze,
        steps_per_dispatch=args.steps_per_dispatch, data_on_device=args.data_on_device,
        validation=args.validation, pos_embed=args.pos_embed, pool=args.pool, regularisation=regularisation,
        framework=args.framework, image_size=args.image_size, crop_pct=args.crop_pct, workers=args.workers,
        mesh=args.mesh, shard_min_mb=args.shard_min_mb, remat=args.remat,
    )
    if args.dry_run:
        return _dry_run(options, args)
    for flag, value in (("--device-memory", args.device_memory), ("--simulate-devices", args.simulate_devices)):
        if value is not None:
            raise ValueError(f"{flag} sizes a --dry-run: add --dry-run, or drop {flag}")
    result, lead = launch(options, args.coordinator, args.num_processes, args.process_id)
    if lead:
        held_out = ("" if result.validation_accuracy is None else
                    f"validation accuracy {result.validation_accuracy:.2%}, ")
        test = ("no test split" if result.test_accuracy is None else
                f"test accuracy {result.test_accuracy:.2%}, test loss {result.test_loss:.4f}")
        print(f"step {result.step}: {held_out}{test}; weights in {result.workdir}/model.safetensors")
    return 0


def _dry_run(options, args: argparse.Namespace) -> int:
    """Prints each device's bytes for the run's train step (train.jax_loop.memory_plan); exit 1 where it does not fit
    --device-memory (default: the device's own memory, where the backend says)."""
    if options.framework != "jax":
        raise ValueError("--dry-run plans the JAX train step: drop it with --framework torch")
    if args.coordinator:
        raise ValueError("--dry-run plans on one process: drop --coordinator (plan a pod's mesh with --simulate-devices N)")
    if args.simulate_devices:
        import jax

        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.simulate_devices)
    from train.jax_loop import device_data, trainer

    plan = trainer.dry_run(options)
    limit = args.device_memory if args.device_memory is not None else device_data.device_memory_limit()
    print(f"vit train --dry-run: {options.model}, global batch {plan.global_batch}"
          f"{', remat' if options.remat else ''}{', ' + options.dtype if options.dtype != 'float32' else ''}")
    for line in plan.lines(limit):
        print(line)
    return 0 if limit is None or plan.fits(limit) else 1

