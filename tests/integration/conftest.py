"""Fixtures of the real-netlink suite: the real daemon in a private namespace per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nshost import FakeHost, fake_host


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    """A fake host whose processes are all stopped when the test ends, passed or not."""
    with fake_host(tmp_path / "host") as fake:
        yield fake
