"""Sizes of memory as people write them ("16GB", "80GiB") and as reports print them."""

from __future__ import annotations

import re

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """"16GB" -> 16e9, "80GiB" -> 80 * 2**30, "1024" -> 1024 bytes. Raises ValueError naming the forms."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a size: give a number with a unit, e.g. 16GB, 80GiB or 40000MB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "B").lower()])


def size_text(n: int) -> str:
    """Decimal units, as device memory is sold: "1.23 GB", "456.7 MB"."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
