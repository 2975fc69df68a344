"""A `vit train` run in the framework its options name: the JAX trainer (multi-process where asked) or the
PyTorch one, imported only when it runs so that each works without the other framework installed."""

from __future__ import annotations

from train.run import TrainOptions, TrainResult


def launch(options: TrainOptions, coordinator: str | None = None, num_processes: int | None = None,
           process_id: int | None = None) -> tuple[TrainResult, bool]:
    """(the run's result, whether this process leads it and so reports it).

    Args:
        options: the run; options.framework picks the trainer.
        coordinator, num_processes, process_id: a multi-process JAX run (jax.distributed); 'auto' detects it.
    """
    if options.framework == "torch":
        if coordinator or num_processes or process_id is not None:
            raise ValueError("--coordinator, --num-processes and --process-id start a multi-process JAX run: "
                             "drop them with --framework torch")
        try:
            from train.torch_loop import trainer as torch_trainer
        except ModuleNotFoundError as e:
            raise ValueError(f"--framework torch needs PyTorch and torchvision ({e}): pip install 'vit-twins[torch]'") from None
        return torch_trainer.train(options), True
    from train.jax_loop import sharding, trainer

    sharding.initialize_distributed(coordinator, num_processes, process_id)
    return trainer.train(options), sharding.is_lead()
