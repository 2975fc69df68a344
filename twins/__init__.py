"""The twin comparisons: the same weights through the JAX and the PyTorch model, held side by side.

Used by `vit parity`, `vit compare`, `vit export`, `vit summary`, `vit eval --framework both` and the parity
suite alike. Framework-free modules compare what the two sides compute; each side's work is in a module of
its own, so no module imports both frameworks:

  differences     Difference, compare, format_table, the tolerances, scaled and largest differences
  jax_side        the JAX twin's forward (intermediates), gradients, AdamW steps and lockstep trainer steps
  torch_side      the PyTorch twin's, function for function
  parity          the layer-by-layer comparison of `vit parity` and the parity suite
  lockstep        the parity suite's training runs: a recipe with randomness off, and the inputs both steps see
  exports         an ONNX or StableHLO export, checked against both twins before it is written
  summary         both twins' per-layer shapes and parameter counts in one table
  training_runs   `vit compare`: both trainers run for the same budget from the same weights
"""
