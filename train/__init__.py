"""Training the Flax ViT on tfds image classification (CIFAR-10 first): `vit train`, `vit eval`.

Modules, each small and flat (big_vision style):
  data        tfds splits in memory (uint8) and the step -> batch-indices order
  augment     on-device augmentation inside the jitted step (crop, flip, RandAugment, mixup/cutmix)
  recipes     the `tutorial` and `default` recipes
  optim       optax optimizer and learning-rate schedule of a recipe
  step        TrainState and the jitted train step
  sharding    the device mesh, batch sharding, multi-host start
  checkpoint  orbax checkpoints: save every N steps, resume, fall back past broken ones
  evaluate    test accuracy (JAX, sharded) and `vit eval` for either framework
  metrics     metrics.jsonl, curves.png, the progress bar
  trainer     the training loop
  cli         `vit train` and `vit eval`
"""
