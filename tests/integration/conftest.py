"""Fixtures of the real-netlink layer: a fake host in a private namespace per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nshost import FakeHost


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "real-netlink tests need root (netlink multicast, unshare, mounts)"
    if shutil.which("unshare") is None:
        return "real-netlink tests need unshare(1) from util-linux"
    return None


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    """A fake host whose processes are all stopped when the test ends, passed or not."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with FakeHost(tmp_path / "host") as fake:
        yield fake
