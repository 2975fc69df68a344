"""The twin of a framework by name: what a command that runs either twin (`--framework jax|torch`) imports, only
when it runs, so that it works without the other framework installed."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

FRAMEWORKS = ("jax", "torch")
# The package of each twin, and the extra that installs its framework.
_PACKAGES = {"jax": ("jax_vit", "vit-twins"), "torch": ("torch_vit", "vit-twins[torch]")}


def twin_module(framework: str, module: str) -> ModuleType:
    """The module `module` of the `framework` twin: twin_module("torch", "inference") is torch_vit.inference.

    Raises ValueError naming what to install when the framework is missing.
    """
    if framework not in _PACKAGES:
        raise ValueError(f"unknown framework {framework!r}: use one of {', '.join(FRAMEWORKS)}")
    package, extra = _PACKAGES[framework]
    try:
        return importlib.import_module(f"{package}.{module}")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in (package, "vit_spec", "twins"):
            raise  # our own module is missing: a bug, not an install
        raise ValueError(f"the {framework} twin needs {e.name}, which is not installed: pip install '{extra}'") from None


def installed(framework: str) -> bool:
    """Whether `framework` ("jax" or "torch") can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(framework) is not None
    except ValueError:  # sys.modules[framework] is None or lacks a spec: not importable
        return False


def install_hint(framework: str) -> str:
    """The pip command that installs `framework`'s twin."""
    return f"pip install '{_PACKAGES[framework][1]}'"
