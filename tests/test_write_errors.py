"""A write error of the file system (full disk, quota, read-only) becomes one line naming what, where and the
last good checkpoint; what unfinished saves left is removed and said (train.write_errors)."""

from __future__ import annotations

import errno
import os

import pytest

from train.write_errors import WriteError, checkpoint_steps, remove_unfinished_saves, write_errno, writing


def test_the_file_systems_errors_are_found_however_they_are_wrapped():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert write_errno(full) == errno.ENOSPC
    try:
        try:
            raise full
        except OSError as e:
            raise RuntimeError("orbax: save failed") from e
    except RuntimeError as wrapped:
        assert write_errno(wrapped) == errno.ENOSPC
    assert write_errno(ValueError("tensorstore: [Errno 28] No space left on device")) == errno.ENOSPC
    assert write_errno(OSError(errno.EROFS, "Read-only file system")) == errno.EROFS
    assert write_errno(FileNotFoundError(errno.ENOENT, "gone")) is None
    assert write_errno(ValueError("a bad flag")) is None


def test_writing_turns_them_into_one_line_naming_the_last_good_checkpoint(tmp_path):
    (tmp_path / "checkpoints" / "40").mkdir(parents=True)
    (tmp_path / "checkpoints" / "20").mkdir()
    (tmp_path / "checkpoints" / "60.orbax-checkpoint-tmp-123").mkdir()
    with pytest.raises(WriteError) as raised:
        with writing("the checkpoint of step 60", tmp_path / "checkpoints", tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"could not write the checkpoint of step 60 to {tmp_path / 'checkpoints'}: no space left on "
                              "the file system ")
    assert message.endswith("the last good checkpoint is step 40: free space and run the same command to resume")
    with pytest.raises(KeyError):  # anything else passes through untouched
        with writing("metrics.jsonl", tmp_path / "metrics.jsonl", tmp_path):
            raise KeyError("not a write error")


def test_checkpoint_steps_count_whole_checkpoints_of_either_framework(tmp_path):
    c = tmp_path / "checkpoints"
    c.mkdir()
    for name in ("20", "40", "60.orbax-checkpoint-tmp-1"):
        (c / name).mkdir()
    for name in ("step_5.pt", ".step_7.pt.abc.tmp"):
        (c / name).write_bytes(b"x")
    assert checkpoint_steps(tmp_path) == [5, 20, 40]


def test_what_unfinished_saves_left_is_removed_and_said(tmp_path):
    c = tmp_path / "checkpoints"
    c.mkdir()
    (c / "60.orbax-checkpoint-tmp-1712").mkdir()
    (c / ".step_7.pt.x1y2.tmp").write_bytes(b"half")
    (c / "40").mkdir()
    (tmp_path / ".metrics.jsonl.abc.tmp").write_text("half")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    said = []
    removed = remove_unfinished_saves(tmp_path, say=said.append)
    assert sorted(removed) == [".metrics.jsonl.abc.tmp", ".step_7.pt.x1y2.tmp", "60.orbax-checkpoint-tmp-1712"]
    assert sorted(p.name for p in c.iterdir()) == ["40"]
    assert (tmp_path / "metrics.jsonl").exists()
    assert len(said) == 2 and all(line.startswith("note: removed what an unfinished save left in ") for line in said)


def test_a_checkpoint_that_cannot_fit_is_not_begun(tmp_path, monkeypatch):
    import train.write_errors as write_errors

    (tmp_path / "checkpoints" / "40").mkdir(parents=True)
    (tmp_path / "checkpoints" / "40" / "state").write_bytes(b"\0" * 100_000)
    monkeypatch.setattr(write_errors, "_free_bytes", lambda path: 50_000)
    with pytest.raises(WriteError, match=r"could not write the checkpoint of step 60 to .*: no space left on the file "
                                         r"system .*, a checkpoint needs 0.1 MB; the last good checkpoint is step 40"):
        write_errors.check_room(tmp_path, 60)
    monkeypatch.setattr(write_errors, "_free_bytes", lambda path: 200_000)
    write_errors.check_room(tmp_path, 60)  # room enough
    write_errors.check_room(tmp_path / "fresh", 1)  # no checkpoint yet: nothing to go by
