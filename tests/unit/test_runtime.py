"""The runtime directory's locks: one daemon, one reload at a time, failing closed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crashhp.lock import ReloadLock
from crashhp.runtime import AlreadyRunning, InstanceLock, daemon_alive


def test_one_daemon(tmp_path: Path) -> None:
    assert not daemon_alive(tmp_path)
    first = InstanceLock(tmp_path)
    first.acquire()
    assert daemon_alive(tmp_path)
    with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
        InstanceLock(tmp_path).acquire()
    first.release()
    assert not daemon_alive(tmp_path)
    InstanceLock(tmp_path).acquire()  # free again


def test_8_the_reload_lock_fails_closed(tmp_path: Path) -> None:
    """A lock that cannot be made is no licence to reload beside another crashhp reload.
    Before: acquire() returned True."""
    blocked = tmp_path / "file"
    blocked.write_text("")
    lock = ReloadLock(blocked / "crashhp")  # its directory cannot be made
    with pytest.raises(OSError, match="Not a directory"):
        lock.acquire()
    assert not lock.held


def test_reload_lock_is_exclusive(tmp_path: Path) -> None:
    a, b = ReloadLock(tmp_path), ReloadLock(tmp_path)
    assert a.acquire()
    assert not b.acquire(timeout_s=0.0)
    a.release()
    assert b.acquire()
