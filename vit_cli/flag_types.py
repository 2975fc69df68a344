"""argparse types of the numeric flags, so that every command refuses an out-of-range number at parse time,
in argparse's one line ("vit eval: error: argument --batch-size: must be at least 1, got 0"), before
anything is loaded."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer flag of at least `minimum`."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its "invalid int value" fallback
    return parse


def float_in(low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """A float flag in [low, high] (an end excluded where `low_open`/`high_open`; no upper end where high is None)."""

    def parse(text: str) -> float:
        value = _number(text, float)
        below = value <= low if low_open else value < low
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            raise argparse.ArgumentTypeError(f"must be {_range_text(low, high, low_open, high_open)}, got {value:g}")
        return value

    parse.__name__ = "float"
    return parse


def _range_text(low: float, high: float | None, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'above' if low_open else 'at least'} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = float_in(0.0, low_open=True)
non_negative_float = float_in(0.0)
rate = float_in(0.0, 1.0, high_open=True)  # a probability that must leave something: dropout, drop path, smoothing


def steps_or_duration(text: str) -> tuple[int | None, float | None]:
    """--checkpoint-every: (steps, None) for "500", (None, seconds) for "90s", "10m", "1.5h"."""
    from train.checkpoint_cadence import parse_every

    try:
        return parse_every(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def mesh_spec(text: str) -> str:
    """--mesh: "data=2,fsdp=4" (train.mesh_shape.parse checks the axes; their product is checked against the
    devices once the run starts)."""
    from train.mesh_shape import parse

    try:
        parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def byte_size(text: str) -> int:
    """--device-memory: "16GB", "80GiB", "40000MB" -> bytes (train.byte_sizes.parse_bytes)."""
    from train.byte_sizes import parse_bytes

    try:
        value = parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 bytes, got {text}")
    return value
