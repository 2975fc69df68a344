"""The flags that the converters' messages name: those of the command that reads the checkpoint.

`vit convert` (CONVERT_FLAGS, the default) says what a source does not record with --variant, --heads,
--source-image-size, ...; `vit train --init-from` has only --init-variant (train.finetune.INIT_FROM_FLAGS).
Every message that asks the user for something names the calling command's flag, and where that command has
no such flag it says how to get there through `vit convert` first (Flags.convert_first).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Flags:
    """A command's names for what a checkpoint may not record; None: the command has no such flag."""

    command: str = "vit convert"
    source: str = "SRC"  # how the command is given the checkpoint
    variant: str = "--variant"
    heads: str | None = "--heads"
    source_image_size: str | None = "--source-image-size"
    image_mean_std: str | None = "--image-mean/--image-std"
    image_size: str | None = "--image-size"

    def convert_first(self, source: str, convert_args: str, lacks: str) -> str:
        """How a command without the needed flag (`lacks`) gets there: `vit convert SOURCE ... convert_args`, then
        the converted file."""
        return (f"convert it first, `vit convert {source} converted.safetensors {convert_args}` ({self.command} has "
                f"no {lacks}), then give {self.source} converted.safetensors")


CONVERT_FLAGS = Flags()
