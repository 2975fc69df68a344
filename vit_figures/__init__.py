"""The pictures (matplotlib, Agg): what a ViT looks at, what its embedding learned, and how runs trained.

  attention    per-head attention maps, their mean and rollout over layers, overlaid on the images
  embeddings   the ViT paper's figure 7: position-embedding similarity, patch-filter components
  curves       loss, accuracy and learning rate of training runs (metrics.jsonl) on shared axes
  figure_files the one writer of them all: the format the file name's suffix names (png, jpg, pdf, svg, ...),
               atomically
"""
