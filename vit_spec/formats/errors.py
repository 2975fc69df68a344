"""Errors for checkpoints that cannot be read, written or computed by this project's models."""

from __future__ import annotations

from vit_spec.layout import WeightsError


class FormatError(WeightsError):
    """A file that is not in the expected format, or is damaged; the message says what was expected and found."""


class UnsupportedModelError(FormatError):
    """A well-formed checkpoint of a model this project's ViT cannot compute (e.g. a MAP head, layer scale)."""
