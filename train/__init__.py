"""Training the ViT on tfds image classification (CIFAR-10 first): `vit train`, `vit eval`, `vit recipes`, in
either framework.

Framework-free modules at the top, shared by both loops:
  data            tfds splits in memory (uint8), the validation hold-out and the step -> batch-indices order
  augment_config  what augmentation does (AugmentConfig)
  recipes         the `tutorial` and `default` recipes, and the regularisation scaled to a run's length
  schedule        a recipe's learning rate per step
  run             options, config.json, train records and the rules for resuming a workdir
  metrics         metrics.jsonl, curves.png, the progress bar
  finetune        `--init-from`: a checkpoint in any format, sized for the dataset
  launch          a run in the framework its options name
  evaluation      `vit eval`: a weights file scored by either twin, and where the two disagree
  recipe_grid     `vit recipes`: a grid of runs and their table
The two loops, module for module (trainer, step, augment, checkpoint, evaluate, optim):
  jax_loop/       JAX (never torch): jitted optax steps, on-device augmentation, sharding, orbax checkpoints
  torch_loop/     PyTorch (never jax), `--framework torch`: torch.optim, torchvision augmentation, torch.save
"""
