"""Atomic file writes: write to a temporary file in the target folder, fsync, rename over the target.

A process killed at any moment leaves either the old file or the new one, never a
truncated file; a failed write leaves no temporary file behind.

A process killed by SIGKILL (or a power cut) cannot remove its temporary file. The
temporary file of ``<dir>/<name>`` is ``<dir>/.<name>.<host>-<pid>.<random>.tmp``, so
the next write of the same target removes the leftovers of writers that are gone
(:func:`remove_stale_temporaries`): those of a process of this host that no longer
exists, and unrecognised ``.<name>.*.tmp`` files (the older naming) untouched for
``STALE_AFTER_S``. A temporary file of a live writer, or of another host sharing the
folder, is never removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

STALE_AFTER_S = 3600.0
"""Age after which an unrecognised temporary file of a target is treated as left by a killed writer."""

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"
_OWNER = re.compile(r"^(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[^.]+$")


def temporary_prefix(path: str | os.PathLike) -> str:
    """``.<name>.<host>-<pid>.``: the start of this process's temporary file names for ``path``."""
    return f".{Path(path).name}.{_HOST}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(tmp: str | os.PathLike, target_name: str, now: float | None = None) -> bool:
    """Whether ``tmp`` (a ``.<target_name>.*.tmp`` file) was left by a writer that is gone."""
    tmp = Path(tmp)
    middle = tmp.name[len(target_name) + 2 : -len(".tmp")]
    m = _OWNER.match(middle)
    if m:
        return m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
    try:
        age = (time.time() if now is None else now) - tmp.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_AFTER_S


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the stale temporary files of target ``path`` (see the module docstring); return them."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        if is_stale(tmp, path.name):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[IO[bytes]]:
    """``with atomic_open(path) as fh: fh.write(...)``: ``path`` appears only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path) as fh:
        fh.write(data)
