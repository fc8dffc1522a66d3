"""Atomic writes: a killed writer leaves no target and its temporary file is removed by the next write."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mars_core import atomic
from mars_core.atomic import atomic_open, remove_stale_temporaries, write_bytes_atomic

REPO = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sigkill_inside_a_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "last.pt"
    code = ("import os, signal, sys; from mars_core.atomic import atomic_open\n"
            "with atomic_open(sys.argv[1]) as fh:\n"
            "    fh.write(b'x' * 1000); fh.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    res = subprocess.run([sys.executable, "-c", code, str(target)], cwd=REPO)
    assert res.returncode == -9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 1 and left[0].startswith(".last.pt.") and left[0].endswith(".tmp")  # no target
    write_bytes_atomic(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"] and target.read_bytes() == b"new"


def test_only_temporaries_of_gone_writers_are_removed(tmp_path):
    target = tmp_path / "final.pt"
    host = atomic._HOST
    dead = tmp_path / f".final.pt.{host}-{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".final.pt.{host}-{os.getppid()}.abc123.tmp"  # our parent is alive
    mine = tmp_path / f".final.pt.{host}-{os.getpid()}.abc123.tmp"  # this process: never stale
    remote = tmp_path / ".final.pt.some-other-host-1.abc123.tmp"  # another machine on a shared folder
    old_style_new = tmp_path / ".final.pt.k2j4x8zq.tmp"  # tempfile's default naming, recent
    old_style_old = tmp_path / ".final.pt.p0q9w8e7.tmp"
    other_target = tmp_path / f".other.pt.{host}-{_dead_pid()}.abc123.tmp"
    for p in (dead, live, mine, remote, old_style_new, old_style_old, other_target):
        p.write_bytes(b"")
    hour_ago = time.time() - atomic.STALE_AFTER_S - 60
    os.utime(old_style_old, (hour_ago, hour_ago))
    assert sorted(remove_stale_temporaries(target)) == sorted([dead, old_style_old])
    assert {p.name for p in tmp_path.iterdir()} == {x.name for x in (live, mine, remote, old_style_new, other_target)}


def test_temporary_names_carry_host_and_pid(tmp_path):
    target = tmp_path / "a[1].json"  # glob metacharacters in the name
    with atomic_open(target) as fh:
        (tmp,) = [p for p in tmp_path.iterdir()]
        assert tmp.name.startswith(f".a[1].json.{atomic._HOST}-{os.getpid()}.") and tmp.name.endswith(".tmp")
        assert not atomic.is_stale(tmp, target.name)
        fh.write(b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a[1].json"]
    assert atomic._HOST and set(atomic._HOST) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_open(tmp_path / "x.bin") as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
