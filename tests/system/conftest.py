"""Fixtures for the VM system tests: cached assets, shared guests, the measurement table.

Nothing here skips: a machine that cannot build the assets or boot QEMU fails the tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.system import assets as assets_mod
from tests.system.measure import Row, table
from tests.system.scenarios import Guest
from tests.system.vm import Vm

_ROWS: list[Row] = []
_TIMINGS: list[str] = []


@pytest.fixture(scope="session")
def assets() -> assets_mod.Assets:
    return assets_mod.ensure()


@pytest.fixture(scope="session")
def rows() -> list[Row]:
    return _ROWS


def _guest(assets: assets_mod.Assets, name: str) -> Iterator[Guest]:
    with Vm(assets, name=name) as vm:
        _TIMINGS.append(f"VM {name}: booted in {vm.boot_s:.1f} s (logs in {vm.dir})")
        yield Guest(vm)


@pytest.fixture(scope="module")
def main_guest(assets: assets_mod.Assets) -> Iterator[Guest]:
    """One VM for the scenarios that only add hardware (A-D, F): ten CPU sockets, four slots."""
    yield from _guest(assets, "main")


@pytest.fixture(scope="module")
def removal_guest(assets: assets_mod.Assets) -> Iterator[Guest]:
    """A second VM for the peer (G, adds only) and then removals (E): after a CPU device_del
    QEMU 7.2 must not see another CPU device_add (VM-NOTES trap 3)."""
    yield from _guest(assets, "removal")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ROWS and not _TIMINGS:
        return
    terminalreporter.section("crashhp on a real kernel: measurements")
    for line in _TIMINGS:
        terminalreporter.write_line(line)
    if _ROWS:
        terminalreporter.write_line(table(_ROWS))
