"""What every test run shares: `--dist loadgroup` keeps each xdist_group on one worker.

pytest-xdist names an item's group by appending "@group" to `item._nodeid`; pytest 9 keeps the node id in
`item._id` instead, so the suffix is lost without a word and every test becomes a unit of its own. A module's
tests then spread over both workers, interleaved with other modules', and its costly module-scoped fixtures
(whole training runs) are built again on each worker and after each interleaving (a CI log showed
test_train_mesh's and test_run_faults's fixtures built twice, about 100 s each). This hook appends the suffix
where pytest now keeps the id; where xdist's own suffix took (older pytest, or an xdist with the fix), it leaves the item alone. Upstream:
pytest-dev/pytest-xdist#1386 (the bug), #1388 (the same fix, in xdist).
"""

from __future__ import annotations

import pytest


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
