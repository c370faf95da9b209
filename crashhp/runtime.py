"""The runtime directory (/run/crashhp), and one daemon per machine.

The daemon holds an exclusive flock on ``daemon.lock`` for its whole life: a second
``crashhp daemon`` (one by hand next to the service) refuses to start, and ``crashhp
status`` knows whether a daemon is alive by testing that lock, not by guessing from a pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

STATE_FILE = "state.json"
INSTANCE_LOCK = "daemon.lock"


def runtime_dir() -> Path:
    return Path(os.environ.get("RUNTIME_DIRECTORY", "/run/crashhp").split(":")[0])


class AlreadyRunning(Exception):
    """Another crashhp daemon holds the instance lock."""


class InstanceLock:
    def __init__(self, directory: Path) -> None:
        self.path = directory / INSTANCE_LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning (naming the holder's pid); OSError when
        the lock cannot be made at all (fail closed: two daemons would both reload)."""
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"another crashhp daemon (pid {holder}) is running: it holds {self.path}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def daemon_alive(directory: Path) -> bool:
    """A daemon holds the instance lock of ``directory`` now."""
    try:
        fd = os.open(directory / INSTANCE_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return False
