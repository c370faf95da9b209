"""Fixtures of the fault-injection suite: the real daemon in a private namespace per test.

Same fake host as ``tests/integration`` (:class:`tests.support.nshost.FakeHost`); every
process it started is stopped when the test ends, passed or failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nshost import FakeHost, fake_host


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    with fake_host(tmp_path / "host") as fake:
        yield fake
