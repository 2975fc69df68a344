"""Writing a figure: in the format its file name's suffix names (a.jpg is a JPEG, b.svg an SVG), atomically.

Every figure of the project goes through `save` (vit attention, embeddings, plot, compare --out); a command
calls `figure_format` on its output path before doing any work, so that a name matplotlib cannot write
(a.bmp, a name without a suffix) is refused at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# What matplotlib's Agg backend writes by suffix (pgf needs LaTeX, raw/rgba are headerless: left out).
FORMATS = ("png", "jpg", "jpeg", "pdf", "svg", "svgz", "eps", "ps", "tif", "tiff", "webp")
DPI = 100


def figure_format(path: str | Path, flag: str = "") -> str:
    """The format of `path`'s suffix (one of FORMATS, lower case); ValueError naming `flag` (e.g. "--out") and the
    formats for a suffix matplotlib does not write, or none."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    named = f"{flag} {path}" if flag else str(path)
    what = f"ends in .{suffix}, which is not a picture format this command writes" if suffix else "has no suffix"
    raise ValueError(f"{named} {what}: end the name in one of {', '.join('.' + f for f in FORMATS)} "
                     "(the suffix picks the format)")


def save(fig: Figure, out: str | Path, dpi: int = DPI) -> None:
    """Writes `fig` at `out` in the format of its suffix (figure_format), atomically (nothing half-written on
    failure; its directory is created), and closes it."""
    import matplotlib.pyplot as plt

    from vit_spec import atomic_path

    try:
        fmt = figure_format(out)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
    finally:
        plt.close(fig)
