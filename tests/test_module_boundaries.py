"""The layout's promises, checked on the source: vit_spec imports neither framework, jax_vit never imports
torch, torch_vit never imports jax, and no module of train/ imports both (the two trainers share only
framework-free modules). Imports inside functions count too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JAX = ("jax", "flax", "optax", "orbax", "jax_vit")
TORCH = ("torch", "torchvision", "torch_vit")
# Reading a PyTorch pickle (.pth/.bin) needs torch: vit_spec's one exception, imported inside the reader only.
EXCEPTIONS = {"vit_spec/formats/tensor_files.py": {"torch"}}


def imported(path: Path) -> set[str]:
    """Top-level names of every module that `path` imports, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package, forbidden", [("vit_spec", JAX + TORCH), ("jax_vit", TORCH), ("torch_vit", JAX)])
def test_packages_keep_to_their_framework(package, forbidden):
    offenders = {}
    for path in _modules(package):
        name = path.relative_to(ROOT).as_posix()
        found = imported(path) & set(forbidden) - EXCEPTIONS.get(name, set())
        if found:
            offenders[name] = sorted(found)
    assert not offenders, f"{package} imports what it must not: {offenders}"
    for name, allowed in EXCEPTIONS.items():
        if name.startswith(package + "/"):
            top_level = {alias.name.split(".")[0] for node in ast.parse((ROOT / name).read_text()).body
                         if isinstance(node, ast.Import) for alias in node.names}
            assert not top_level & allowed, f"{name} may import {allowed} only where it reads such a file"


def test_no_training_module_imports_both_frameworks():
    both = {p.relative_to(ROOT).as_posix(): sorted(imported(p) & set(JAX + TORCH))
            for p in _modules("train") if imported(p) & set(JAX) and imported(p) & set(TORCH)}
    assert not both, f"modules of train/ that import both jax and torch: {both}"


def test_the_torch_trainer_runs_without_jax():
    code = ("import sys, train.torch_trainer, train.torch_evaluate, train.cli; "
            "print(sorted(m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"the PyTorch trainer loads {out.strip()}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import numpy\n\ndef f():\n    import torch.nn\n    from jax import numpy as jnp\n")
    assert imported(module) == {"numpy", "torch", "jax"}
