"""The JAX training loop (never torch): the Flax ViT trained with jitted optax steps, data-parallel over every
device. Its modules mirror train/torch_loop/ name for name.

  trainer      the run: set-up, resume, the loop, evaluation, saving
  step         TrainState and the jitted train step (and K steps per dispatch)
  augment      on-device augmentation inside the jitted step (crop, flip, RandAugment, mixup/CutMix)
  checkpoint   orbax checkpoints: save every N steps, resume, fall back past broken ones
  evaluate     accuracy, sharded, and of a weights file
  optim        the optax optimizer and learning-rate schedule of a recipe
JAX's own:
  sharding     the device mesh, batch sharding, multi-host start
  device_data  the training split kept on the device (--steps-per-dispatch, --data-on-device)
"""
