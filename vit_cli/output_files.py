"""The one rule for every command that writes a file (vit convert, export, attention, embeddings, plot,
compare --out, bench --json): an existing output is replaced only with --overwrite,
and the refusal comes before any work is done."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_overwrite_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "the output") -> None:
    """Adds --overwrite ("replace `what` if it exists")."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what} if it exists")


def check_output(path: str | Path, overwrite: bool, flag: str = "") -> None:
    """Refuses an output path that cannot or may not be written, naming `flag` (e.g. "--out").

    A folder is never an output file; an existing file needs `overwrite`. (vit convert's hf output is a
    folder: it applies the same rule to a non-empty folder itself.)
    """
    path = Path(path)
    named = f"{flag} {path}" if flag else str(path)
    if path.is_dir():
        raise ValueError(f"{named} is a directory: give the path of a file")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{named} exists; pass --overwrite to replace it")
