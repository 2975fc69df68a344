"""The parity tests share the suite's grouping of xdist workers (tests/conftest.py), also when run on their own."""

from tests.conftest import pytest_collection_modifyitems  # noqa: F401
