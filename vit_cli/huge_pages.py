"""Large host buffers on transparent huge pages, through glibc's `glibc.malloc.hugetlb=1` tunable.

On the CPU, XLA allocates every step's temporaries afresh (hundreds of MB to GB for a training step),
and glibc serves allocations above 32 MiB with fresh mmaps: each step faults in every 4 KiB page of
them again. Measured (`/usr/bin/time -v`, 12 training steps of the w256d6 model, batch 128): 3.2
million minor page faults, and 78 images/s; with the tunable, malloc asks the kernel for 2 MiB pages
on those mappings (madvise(MADV_HUGEPAGE)): 0.14 million faults, and 92 images/s (+17%). PyTorch's
large tensors get the same. The tunable is read when a process starts, so `vit` re-executes itself
once with it set, where it can work: Linux, glibc 2.35 or newer, transparent huge pages in "always"
or "madvise" mode, and GLIBC_TUNABLES not already choosing it. `VIT_HUGE_PAGES=0` turns this off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _glibc_version() -> tuple[int, int] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # e.g. "glibc 2.36"
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def _thp_mode() -> str | None:
    """The bracketed mode of /sys/kernel/mm/transparent_hugepage/enabled, e.g. "madvise"."""
    try:
        text = THP_SETTING.read_text()
    except OSError:
        return None
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else None


def applies(environ: dict[str, str] | None = None) -> bool:
    """Whether re-executing with the tunable would change anything here."""
    env = os.environ if environ is None else environ
    if env.get("VIT_HUGE_PAGES", "1") == "0" or "malloc.hugetlb" in env.get("GLIBC_TUNABLES", ""):
        return False
    version = _glibc_version()
    return sys.platform == "linux" and version is not None and version >= (2, 35) and _thp_mode() in ("always", "madvise")


def status() -> str:
    """One line for benchmark headers: whether this process runs with the tunable."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "malloc.hugetlb" in tunables:
        return f"GLIBC_TUNABLES={tunables} (transparent huge pages: {_thp_mode()})"
    return "glibc malloc default (4 KiB pages for large buffers)"


def reexec(argv: list[str]) -> None:
    """Replaces this process by `python -m vit_cli.main ARGV` with the tunable set, where it applies."""
    if not applies():
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES"), TUNABLE) if t)
    try:
        os.execve(sys.executable, [sys.executable, "-m", "vit_cli.main", *argv], env)
    except OSError:
        return  # cannot re-execute (an embedded interpreter): run as we are
