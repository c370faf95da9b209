"""The lead's figures, measured on every netlink run and printed (never asserted)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.figures import measure

pytestmark = pytest.mark.netlink


def test_print_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    figures = measure(tmp_path / "host", runs=2)
    with capsys.disabled():
        print("\ncrashhp figures (packaged coalescing defaults, recorder as reload command):")
        for line in figures.lines():
            print(f"  {line}")
