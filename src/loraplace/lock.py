"""The single-writer lock of a results store: an OS file lock beside ``loraplace.db``.

Two ``loraplace run`` on one study directory would otherwise both run every run, and the
second would mark the first one's live run ``interrupted``. The lock is ``flock`` on
``loraplace.db.lock``; the OS drops it when its holder dies (``kill -9`` included), so a
lock left by a dead process is simply taken over. The file's text names the holder (pid,
host, start time) for the one line a second writer prints. The file itself stays: removing
a lock file races with a process that has just opened it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from loraplace.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer per study is then the user's care
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """A blocking exclusive file lock, so two processes never build one cache entry at once.

    Used around first-use work (pretraining a built-in, converting a GGUF); the atomic
    rename of the finished entry keeps the cache whole even where there is no lock.
    """
    if fcntl is None:  # Windows
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".lock")


def _holder_text(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096).decode("utf-8", "replace")
    try:
        info = json.loads(raw)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']} (since {since})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def busy_error(store_path: Path, holder: str) -> UserError:
    return UserError(
        f"{store_path} is being written by {holder}: wait for that study to end, or stop it, "
        "then run again (two writers would run every run twice)"
    )


class WriterLock:
    """Held by the one process that writes a store; ``acquire`` fails with the holder's name."""

    def __init__(self, store_path: Path):
        self.store_path = store_path
        self.path = lock_path(store_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            raise busy_error(self.store_path, holder) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # no holder named once released
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def live_holder(store_path: Path) -> str | None:
    """Who holds the store's writer lock ("pid N on HOST ..."), or None when nobody does.

    Reading never creates the lock file, so readers work on read-only media.
    """
    path = lock_path(store_path)
    if fcntl is None or not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder_text(fd)
    finally:
        os.close(fd)  # closing drops the shared lock taken above, if any
    return None


def writer_alive(store_path: Path) -> bool:
    return live_holder(store_path) is not None
