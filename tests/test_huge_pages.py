"""`vit` re-executes itself with large buffers on transparent huge pages, only where that can work."""

from __future__ import annotations

import sys

from vit_cli import huge_pages


def test_an_explicit_choice_is_left_alone():
    assert not huge_pages.applies({"VIT_HUGE_PAGES": "0"})
    assert not huge_pages.applies({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert not huge_pages.applies({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})


def test_it_applies_only_with_glibc_235_and_transparent_huge_pages(monkeypatch):
    monkeypatch.setattr(huge_pages, "_glibc_version", lambda: (2, 36))
    monkeypatch.setattr(huge_pages, "_thp_mode", lambda: "never")
    assert not huge_pages.applies({})
    monkeypatch.setattr(huge_pages, "_thp_mode", lambda: "madvise")
    assert huge_pages.applies({}) == (sys.platform == "linux")
    monkeypatch.setattr(huge_pages, "_glibc_version", lambda: (2, 31))
    assert not huge_pages.applies({})
    monkeypatch.setattr(huge_pages, "_glibc_version", lambda: None)  # musl, macOS
    assert not huge_pages.applies({})


def test_reexec_runs_the_same_command_with_the_tunable_added(monkeypatch):
    calls = []
    real_applies = huge_pages.applies
    monkeypatch.setattr(huge_pages, "applies", lambda environ=None: True)
    monkeypatch.setattr(huge_pages.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.x86_shstk=off")
    huge_pages.reexec(["bench", "--rows", "smoke"])
    (path, argv, env), = calls
    assert path == sys.executable and argv == [sys.executable, "-m", "vit_cli.main", "bench", "--rows", "smoke"]
    assert env["GLIBC_TUNABLES"] == "glibc.cpu.x86_shstk=off:glibc.malloc.hugetlb=1"
    assert not real_applies(env)  # the re-executed process does not loop


def test_the_reading_of_this_machine_is_well_formed():
    version = huge_pages._glibc_version()
    assert version is None or (len(version) == 2 and version[0] >= 2)
    assert huge_pages._thp_mode() in (None, "always", "madvise", "never")
    assert huge_pages.status()
