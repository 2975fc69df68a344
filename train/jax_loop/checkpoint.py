"""Orbax checkpoints of a run: every N steps and at the end, the last K kept, written atomically.

Each checkpoint holds the TrainState (parameters, optimizer state, step), the run's rng key and a
JSON "meta" item (model config, dataset, recipe) used to refuse another model's checkpoint.
Orbax writes into a temporary directory and renames it when complete, so a killed run leaves
only whole checkpoints; one damaged later (truncated files) is moved aside and the previous used.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from train import write_errors
from train.run import CheckpointMismatchError, check_keep, check_same_run  # noqa: F401 (CheckpointMismatchError re-exported)

# The meta of the run that resumes a checkpoint, or how to get it from the checkpoint's own meta (a resumed run
# keeps the regularisation it began with: train.run.as_begun).
ExpectedMeta = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


class NoUsableCheckpointError(ValueError):
    """Checkpoints exist but none can be read."""


class Checkpoints:
    """The checkpoints under WORKDIR/checkpoints."""

    def __init__(self, workdir: str | Path, keep: int = 3):
        check_keep(keep)
        self.directory = Path(workdir).resolve() / "checkpoints"
        if self.directory.is_dir() and any(self.directory.glob("step_*.pt")):
            raise CheckpointMismatchError(
                f"{self.directory} holds checkpoints of a PyTorch run: use a fresh --workdir for --framework jax, "
                "or --framework torch to resume it"
            )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,  # debris of a save interrupted by a kill
            enable_async_checkpointing=False,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, rng_data: jax.Array, meta: dict[str, Any]) -> None:
        """Saves {state, rng} and meta as checkpoint `step`, then drops those beyond the last K. A full disk
        (or another write error of the file system) is a one-line train.write_errors.WriteError."""
        write_errors.check_room(self.directory.parent, step)
        with (write_errors.writing(f"the checkpoint of step {step}", self.directory, self.directory.parent),
              write_errors.quiet_unless_it_succeeds(self.directory)):
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave({"state": state, "rng": rng_data}),
                    meta=ocp.args.JsonSave(meta),
                ),
                force=True,
            )
            self.manager.wait_until_finished()

    def read_meta(self, step: int) -> dict[str, Any]:
        return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def restore_latest(
        self, template: dict[str, Any], meta: ExpectedMeta
    ) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
        """(step, {"state", "rng"}, meta) of the newest readable checkpoint, or None when there is none.

        `template` gives shapes, dtypes and shardings. Raises CheckpointMismatchError when a checkpoint
        was written for another run than `meta` (or `meta(its meta)`) describes: train.run.check_same_run.
        """
        steps = self.steps()
        broken: list[str] = []
        for step in reversed(steps):
            try:
                found = self.read_meta(step)
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped, not fatal
                broken.append(self._set_aside(step, e))
                continue
            check_same_run(found, meta(found) if callable(meta) else meta, self.directory)
            abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
            except Exception as e:  # noqa: BLE001
                broken.append(self._set_aside(step, e))
                continue
            if broken:
                print(f"resuming from the previous good checkpoint, step {step}", file=sys.stderr)
            return step, restored["state"], found
        if broken:
            raise NoUsableCheckpointError(
                f"no checkpoint under {self.directory} could be read ({'; '.join(broken)}); "
                "start afresh in a new --workdir"
            )
        return None

    def _set_aside(self, step: int, error: Exception) -> str:
        """Moves a damaged checkpoint out of the manager's way (kept for inspection) and says so."""
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        message = f"checkpoint step {step} in {self.directory} is unreadable ({reason})"
        aside = self.directory.parent / "broken_checkpoints" / str(step)
        if jax.process_index() == 0:
            aside.parent.mkdir(parents=True, exist_ok=True)
            if aside.exists():
                shutil.rmtree(aside)
            shutil.move(str(self.directory / str(step)), str(aside))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self.manager.reload()
        print(f"warning: {message}; moved it to {aside}", file=sys.stderr)
        return message

    def close(self) -> None:
        self.manager.close()
