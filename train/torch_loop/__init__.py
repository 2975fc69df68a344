"""The PyTorch training loop (never jax), `vit train --framework torch`: the same run as train/jax_loop/'s,
module for module.

  trainer      the run: set-up, resume, the loop, evaluation, saving
  step         one update: augmentation, loss, clipping, the optimizer step
  augment      the same augmentation with torchvision's transforms
  checkpoint   torch.save checkpoints, written atomically
  evaluate     accuracy, and of a weights file
  optim        the torch.optim optimizer of a recipe, its weight-decay mask, global-norm clipping
And beside the twin's loop, not part of it:
  resnet_baseline  `vit baseline`: the tutorial's reference CNN (a CIFAR ResNet-18), trained on the same data
"""
