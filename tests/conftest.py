"""What every test run shares: one persistent JAX compilation cache, PyTorch's threads split between the
xdist workers, and `--dist loadgroup` keeping each xdist_group on one worker.

The cache: many tests start `vit train` in subprocesses (faults, resumes, meshes, several processes), and
each start compiles the same train step again; that compiling was half of such a run's time. The controller
makes one cache directory for the session (workers and their subprocesses inherit it through the
environment) and removes it at the end. A cache hit loads the executable XLA compiled for the same program,
so every bit-for-bit comparison compares what it did before. A JAX_COMPILATION_CACHE_DIR already set is
left alone.

The threads: PyTorch gives each process a thread per core, so two workers on two cores, each starting runs
in subprocesses, ask for twice the cores; on the tiny models of the tests its threads then mostly wait on
each other (a 300-step run of the fault tests: 67 s, and 8 s with one thread). With `-n N` each process gets
cores / N threads; an OMP_NUM_THREADS already set is left alone. XLA's CPU backend ignores it.

pytest-xdist names an item's group by appending "@group" to `item._nodeid`; pytest 9 keeps the node id in
`item._id` instead, so the suffix is lost without a word and every test becomes a unit of its own. A module's
tests then spread over both workers, interleaved with other modules', and its costly module-scoped fixtures
(whole training runs) are built again on each worker and after each interleaving (a CI log showed
test_train_mesh's and test_run_faults's fixtures built twice, about 100 s each). This hook appends the suffix
where pytest now keeps the id; where xdist's own suffix took (older pytest, or an xdist with the fix), it leaves the item alone. Upstream:
pytest-dev/pytest-xdist#1386 (the bug), #1388 (the same fix, in xdist).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_CACHE_ENV = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # a run's small programs too: compiling under load is slow
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(4 * 2**30),  # a size turns on JAX's file lock: workers write at once
}


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is not None or getattr(config, "_vit_configured", False):
        return  # an xdist worker (the controller set its environment), or done by the other conftest
    config._vit_configured = True
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # else the user's cache
        config._jax_cache_dir = tempfile.mkdtemp(prefix="vit-tests-jax-cache-")
        os.environ.update(JAX_COMPILATION_CACHE_DIR=config._jax_cache_dir, **_CACHE_ENV)
    workers = config.getoption("numprocesses", None)  # xdist's -n, resolved to a number by now
    if isinstance(workers, int) and workers > 0 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))


def pytest_unconfigure(config: pytest.Config) -> None:
    where = getattr(config, "_jax_cache_dir", None)
    if where:
        shutil.rmtree(where, ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if getattr(config, "workerinput", None) is None or not config.getvalue("loadgroup"):
        return  # not an xdist worker of a --dist loadgroup run: no groups to name
    for item in items:
        groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                         for mark in item.iter_markers("xdist_group")})
        # xdist finds the group after the last "@" past the parameters' "]".
        if not groups or not hasattr(item, "_id") or "@" in item.nodeid.rpartition("]")[2]:
            continue
        item._id = type(item._id).parse(f"{item.nodeid}@{'_'.join(groups)}")
