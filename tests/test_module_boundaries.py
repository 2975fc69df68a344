"""The layout's promises, checked on the source: vit_spec imports neither framework, jax_vit never imports
torch, torch_vit never imports jax; the top of train/ is framework-free and its two loops keep to their own
framework; no module anywhere imports both frameworks; no two modules import each other, directly or round
a circle; and tests use the `vit` command only through its entry point. Imports inside functions count too."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JAX = ("jax", "flax", "optax", "orbax", "jax_vit")
TORCH = ("torch", "torchvision", "torch_vit", "timm")  # timm imports torch
# Reading a PyTorch pickle (.pth/.bin) needs torch, and reading a timm model's architecture by name needs timm
# (built on the meta device): vit_spec's two exceptions, each imported inside its reader only.
EXCEPTIONS = {"vit_spec/formats/tensor_files.py": {"torch"}, "vit_spec/formats/timm_models.py": {"timm"}}
PACKAGES = ("vit_spec", "jax_vit", "torch_vit", "train", "twins", "vit_figures", "vit_bench", "vit_cli")
# What tests may import of the command: its entry point, and the process start it runs first.
CLI_FOR_TESTS = {"vit_cli", "vit_cli.main", "vit_cli.huge_pages"}


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


@pytest.mark.parametrize("package, forbidden", [
    ("vit_spec", JAX + TORCH), ("jax_vit", TORCH), ("torch_vit", JAX),
    ("train/jax_loop", TORCH), ("train/torch_loop", JAX),
])
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


def test_the_top_of_train_is_framework_free():
    found = {p.name: sorted(imported(p) & set(JAX + TORCH)) for p in sorted((ROOT / "train").glob("*.py"))}
    found = {name: frameworks for name, frameworks in found.items() if frameworks}
    assert not found, f"framework-free modules of train/ that import a framework: {found}"


def test_no_module_imports_both_frameworks():
    both = {p.relative_to(ROOT).as_posix(): sorted(imported(p) & set(JAX + TORCH))
            for package in PACKAGES for p in _modules(package)
            if imported(p) & set(JAX) and imported(p) & set(TORCH)}
    assert not both, f"modules that import both jax and torch (put each side in a module of its own): {both}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules that `path` imports (`from a.b import c` imports a.b.c where that is a module, else a.b)."""
    name, found = _module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)
    return found - {name}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_circles():
    paths = {_module_name(p): p for package in PACKAGES for p in _modules(package)}
    graph = defaultdict(set, {name: project_imports(path, set(paths)) for name, path in paths.items()})
    assert import_cycles(graph) == [], "modules that import each other (directly or round a circle)"


def test_the_cycle_check_finds_a_circle():
    assert import_cycles(defaultdict(set, {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})) == [["a", "b", "c"]]
    assert import_cycles(defaultdict(set, {"a": {"b"}, "b": set()})) == []


def test_tests_use_the_command_only_through_its_entry_point():
    modules = {_module_name(p) for p in _modules("vit_cli")}
    used = {p.relative_to(ROOT).as_posix(): sorted(project_imports(p, modules) - CLI_FOR_TESTS)
            for tests in ("tests", "parity_tests") for p in _modules(tests)}
    used = {name: internals for name, internals in used.items() if internals}
    assert not used, (
        f"tests that import the command's internals (test the library, or run the command through vit_cli.main): {used}")


def test_the_torch_trainer_runs_without_jax():
    code = ("import sys, train.torch_loop.trainer, train.torch_loop.evaluate, vit_cli.train; "
            "print(sorted(m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"the PyTorch trainer loads {out.strip()}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import numpy\n\ndef f():\n    import torch.nn\n    from jax import numpy as jnp\n")
    assert imported(module) == {"numpy", "torch", "jax"}
