"""Training the ViT on tfds image classification (CIFAR-10 first): `vit train`, `vit eval`, in either framework.

Modules, each small and flat (big_vision style). Framework-free, shared by both trainers:
  data            tfds splits in memory (uint8), the validation hold-out and the step -> batch-indices order
  augment_config  what augmentation does (AugmentConfig)
  recipes         the `tutorial` and `default` recipes, and the regularisation scaled to a run's length
  schedule        a recipe's learning rate per step
  run             options, config.json, train records and the rules for resuming a workdir
  metrics         metrics.jsonl, curves.png, the progress bar
  finetune        `--init-from`: a checkpoint in any format, sized for the dataset
  cli             `vit train` and `vit eval`
JAX (never torch):
  augment     on-device augmentation inside the jitted step (crop, flip, RandAugment, mixup/CutMix)
  optim       optax optimizer and learning-rate schedule of a recipe
  step        TrainState and the jitted train step
  sharding    the device mesh, batch sharding, multi-host start
  device_data the training split kept on the device (--steps-per-dispatch, --data-on-device)
  checkpoint  orbax checkpoints: save every N steps, resume, fall back past broken ones
  evaluate    accuracy, sharded, and of a weights file
  trainer     the training loop
PyTorch (never jax), `--framework torch`:
  torch_augment     the same augmentation with torchvision's transforms
  torch_step        torch.optim optimizer, clipping, loss and one update
  torch_checkpoint  torch.save checkpoints, written atomically
  torch_evaluate    accuracy, and of a weights file
  torch_trainer     the training loop
"""
