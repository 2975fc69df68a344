"""The measurements behind `vit bench` (the command itself is vit_cli/bench.py).

- report: runs the sections asked for and assembles the printed report and the JSON;
- sweep: the rows and the images/s table of the training step and inference, JAX against PyTorch;
- inference: `vit bench --inference`, latency and throughput of JAX, PyTorch, torch.compile, onnxruntime;
- host, compile, ablation, profile, dispatch: the sections beside the sweep (`--sections`);
- measure: what they share (the runners by name, the matmul peak, the machine, spreads, progress, JSON);
- jax_runner, torch_runner: all that runs JAX, and all that runs PyTorch; each imports its framework only,
  when used;
- flops: the analytic FLOP count.

Imports go one way, report -> sections -> measure -> runners, with no way back; this file imports nothing.
"""
