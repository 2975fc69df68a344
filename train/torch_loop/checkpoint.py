"""Checkpoints of a PyTorch run: WORKDIR/checkpoints/step_N.pt, written atomically, the last K kept.

Each holds the model's and the optimizer's state dicts and the run's meta (as train.jax_loop.checkpoint's JSON
"meta" item for JAX), used to refuse another run's checkpoint. A file is written beside its final name
and renamed when complete, so a killed run leaves only whole checkpoints; one damaged later is moved
aside and the previous one used.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from train import write_errors
from train.run import CheckpointMismatchError, check_keep, check_same_run
from vit_spec import atomic_path

_NAME = re.compile(r"^step_(\d+)\.pt$")


class NoUsableCheckpointError(ValueError):
    """Checkpoints exist but none can be read."""


class TorchCheckpoints:
    """The checkpoints under WORKDIR/checkpoints."""

    def __init__(self, workdir: str | Path, keep: int = 3):
        check_keep(keep)
        self.directory = Path(workdir).resolve() / "checkpoints"
        self.keep = keep
        if self.directory.is_dir():
            jax_steps = [p.name for p in self.directory.iterdir() if p.is_dir() and p.name.isdigit()]
            if jax_steps:
                raise CheckpointMismatchError(
                    f"{self.directory} holds checkpoints of a JAX run (steps {sorted(jax_steps, key=int)}): use a fresh "
                    "--workdir for --framework torch, or --framework jax to resume it"
                )

    def steps(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := _NAME.match(p.name)))

    def path(self, step: int) -> Path:
        return self.directory / f"step_{step}.pt"

    def save(self, step: int, model: torch.nn.Module, optimizer: dict[str, Any], meta: dict[str, Any]) -> None:
        """Saves checkpoint `step`, then drops those beyond the last K. A full disk (or another write error of the
        file system) is a one-line train.write_errors.WriteError."""
        write_errors.check_room(self.directory.parent, step)
        with write_errors.writing(f"the checkpoint of step {step}", self.directory, self.directory.parent):
            # Through a Python file: a full disk then raises OSError(ENOSPC) (torch's own writer says only
            # "unexpected pos").
            with atomic_path(self.path(step)) as tmp, open(tmp, "wb") as f:
                torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer, "meta": json.dumps(meta)}, f)
        for old in self.steps()[: -self.keep]:
            self.path(old).unlink(missing_ok=True)

    def restore_latest(
        self, meta: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]
    ) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
        """(step, {"model", "optimizer"}, its meta) of the newest readable checkpoint, or None when there is none.

        Raises CheckpointMismatchError when a checkpoint was written for another run than `meta` (or
        `meta(its meta)`: the resumed run's, train.run.as_begun) describes: train.run.check_same_run.
        """
        broken: list[str] = []
        for step in reversed(self.steps()):
            try:
                saved = torch.load(self.path(step), map_location="cpu", weights_only=True)
                found = json.loads(saved["meta"])
                state = {"model": saved["model"], "optimizer": saved["optimizer"]}
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped, not fatal
                broken.append(self._set_aside(step, e))
                continue
            check_same_run(found, meta(found) if callable(meta) else meta, self.directory)
            if broken:
                print(f"resuming from the previous good checkpoint, step {step}", file=sys.stderr)
            return step, state, found
        if broken:
            raise NoUsableCheckpointError(
                f"no checkpoint under {self.directory} could be read ({'; '.join(broken)}); start afresh in a new --workdir"
            )
        return None

    def _set_aside(self, step: int, error: Exception) -> str:
        """Moves a damaged checkpoint out of the way (kept for inspection) and says so."""
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        message = f"checkpoint step {step} in {self.directory} is unreadable ({reason})"
        aside = self.directory.parent / "broken_checkpoints" / self.path(step).name
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.path(step)), str(aside))
        print(f"warning: {message}; moved it to {aside}", file=sys.stderr)
        return message
