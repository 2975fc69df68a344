"""One live run per workdir (train.workdir_lock): a second is refused naming the first; the lock of a run that
died is taken over, saying so; a run refused before writing anything leaves no workdir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.workdir_lock import LOCK_NAME, WorkdirBusyError, WorkdirLock

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time\nfrom train.workdir_lock import WorkdirLock\nwith WorkdirLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(300)\n"


def _holder(workdir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_named_and_a_dead_ones_lock_is_taken_over(tmp_path):
    workdir = tmp_path / "run"
    holder = _holder(workdir)
    try:
        with pytest.raises(WorkdirBusyError, match=f"is in use by another `vit train` \\(process {holder.pid} on "):
            with WorkdirLock(workdir):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    said = []
    with WorkdirLock(workdir, say=said.append):
        assert json.loads((workdir / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(said) == 1 and f"from process {holder.pid} on " in said[0] and "no longer runs" in said[0]
    assert (workdir / LOCK_NAME).read_text() == ""
    said.clear()
    with WorkdirLock(workdir, say=said.append):  # a lock released cleanly: nothing to say
        pass
    assert said == []


def test_two_locks_in_one_process_exclude_each_other_too(tmp_path):
    with WorkdirLock(tmp_path):
        with pytest.raises(WorkdirBusyError, match=f"process {os.getpid()}"):
            with WorkdirLock(tmp_path):
                pass


def test_a_run_refused_before_writing_leaves_no_new_workdir(tmp_path):
    workdir = tmp_path / "new"
    with pytest.raises(ValueError, match="bad flag"):
        with WorkdirLock(workdir):
            raise ValueError("bad flag")
    assert not workdir.exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(ValueError):
        with WorkdirLock(tmp_path / "old"):
            raise ValueError("bad flag")
    assert (tmp_path / "old").is_dir(), "an existing workdir stays"
