"""What the user sees: WORKDIR/metrics.jsonl, WORKDIR/curves.png and the progress bar."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from vit_spec import atomic_path


class MetricsLog:
    """metrics.jsonl: one JSON object per logged train step ("kind": "train") and per evaluation ("eval")."""

    def __init__(self, workdir: str | Path, resume_step: int, enabled: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the half-written last line of a killed run
                # Steps after the checkpoint we resume from are re-run, and re-logged.
                if isinstance(record, dict) and record.get("step", math.inf) <= resume_step:
                    self.records.append(record)
        if enabled:
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def plot(self, path: str | Path) -> None:
        """Redraws the loss and accuracy curves (atomically: a reader never sees half a PNG)."""
        if not self.enabled:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [r for r in self.records if r.get("kind") == "train"]
        evals = [r for r in self.records if r.get("kind") == "eval"]
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
        ax_loss.plot([r["epoch"] for r in train], [r["loss"] for r in train], label="train")
        ax_loss.plot([r["epoch"] for r in evals], [r["loss"] for r in evals], "o-", label="test")
        ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
        ax_acc.plot([r["epoch"] for r in train], [r["accuracy"] for r in train], label="train (augmented)")
        ax_acc.plot([r["epoch"] for r in evals], [r["accuracy"] for r in evals], "o-", label="test")
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)


class Progress:
    """A tqdm bar over the run's steps with loss, accuracy and images/s (ETA comes from tqdm)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def show(self, **values: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
