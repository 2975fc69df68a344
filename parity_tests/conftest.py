"""The parity tests share the suite's compilation cache and grouping of xdist workers (tests/conftest.py), also
when run on their own."""

from tests.conftest import pytest_collection_modifyitems, pytest_configure, pytest_unconfigure  # noqa: F401
