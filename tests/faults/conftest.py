"""Fixtures of the fault-injection suite: the real daemon in a private namespace per test.

Same fake host as ``tests/integration`` (:class:`tests.support.nshost.FakeHost`); every
process it started is stopped when the test ends, passed or failed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nshost import FakeHost


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "fault tests need root (netlink multicast, unshare, mounts)"
    if shutil.which("unshare") is None:
        return "fault tests need unshare(1) from util-linux"
    return None


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with FakeHost(tmp_path / "host") as fake:
        yield fake
