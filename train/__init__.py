"""Training the ViT on tfds image classification (CIFAR-10 first): `vit train`, `vit eval`, `vit recipes`, in
either framework.

Framework-free modules at the top, shared by both loops:
  data            tfds splits in memory (uint8), the validation hold-out and the step -> batch-indices order
  image_folder    a folder of images (folder:PATH): its layout, reading any image file, per-image transforms
  image_pipeline  decoding files in grain worker processes, once (decode_files) or per step (FolderStream)
  folder_dataset  a folder as a run's data: image size, hold-out, decode cache, or streaming
  cifar_folders   CIFAR-10 written as two image folders: the transfer-learning example
  param_groups    which parameters train (--freeze) and their layer-wise learning-rate scale (--layer-decay)
  augment_config  what augmentation does (AugmentConfig)
  recipes         the `tutorial`, `default` and `finetune` recipes, and the regularisation scaled to a run's length
  schedule        a recipe's learning rate per step
  run             options, config.json, train records and the rules for resuming a workdir
  metrics         metrics.jsonl, curves.png, the progress bar
  finetune        `--init-from`: a checkpoint in any format, sized for the dataset
  launch          a run in the framework its options name
  evaluation      `vit eval`: a weights file scored by either twin, and where the two disagree
  recipe_grid     `vit recipes`: a grid of runs and their table
  length_advice   what a CPU run of a recipe's own length says of its time and of the measured shorter runs
  interrupts      SIGINT / SIGTERM: stop after the step in flight, with a checkpoint of it
  workdir_lock    one live run per workdir
  checkpoint_cadence  when a run checkpoints: steps, time, or each epoch and every 30 minutes
  write_errors    a full disk in one line; what unfinished saves left, removed at the next start
The two loops, module for module (trainer, step, augment, checkpoint, evaluate, optim):
  jax_loop/       JAX (never torch): jitted optax steps, on-device augmentation, sharding, orbax checkpoints
  torch_loop/     PyTorch (never jax), `--framework torch`: torch.optim, torchvision augmentation, torch.save
"""
