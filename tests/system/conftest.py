"""Fixtures for the VM system tests: cached assets, the guests, the measurement table.

Nothing here skips: a machine that cannot build the assets or boot QEMU fails the tests.
At most one guest runs at a time: asking for the other one shuts the current one down.
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
_SUMMARY: list[str] = []


class GuestPool:
    """Keeps one guest alive between tests; boots a new one when another kind is asked for."""

    def __init__(
        self,
        assets: assets_mod.Assets,
        vm_class: type[Vm] = Vm,
        guest_class: type[Guest] = Guest,
    ) -> None:
        self.assets = assets
        self.vm_class = vm_class  # another architecture's guest (tests/system/test_ppc64.py)
        self.guest_class = guest_class
        self.vm: Vm | None = None
        self.guest: Guest | None = None
        self.kind = ""

    def get(self, kind: str, *, fresh_cpus: bool = False) -> Guest:
        stale = self.vm is not None and fresh_cpus and self.vm.cpu_removed
        if self.guest is None or self.kind != kind or stale:
            self.close()
            self.vm = self.vm_class(self.assets, name=kind)
            self.vm.__enter__()
            _TIMINGS.append(f"VM {kind}: booted in {self.vm.boot_s:.1f} s (logs in {self.vm.dir})")
            self.guest = self.guest_class(self.vm)
            self.kind = kind
        return self.guest

    def close(self) -> None:
        if self.vm is not None:
            self.vm.close()
        self.vm = None
        self.guest = None


@pytest.fixture(scope="session")
def assets() -> assets_mod.Assets:
    return assets_mod.ensure()


@pytest.fixture(scope="session")
def pool(assets: assets_mod.Assets) -> Iterator[GuestPool]:
    p = GuestPool(assets)
    yield p
    p.close()


@pytest.fixture(scope="session")
def rows() -> list[Row]:
    return _ROWS


@pytest.fixture(scope="session")
def summary() -> list[str]:
    """Lines a test wants in the measurements section at the end (figures for the docs)."""
    return _SUMMARY


@pytest.fixture
def main_guest(pool: GuestPool) -> Guest:
    """The guest for scenarios that only add hardware (A-D, F): ten free sockets, four slots."""
    return pool.get("main")


@pytest.fixture
def removal_guest(pool: GuestPool) -> Guest:
    """The guest for the peer (G, adds only) and then removals (E). After a CPU device_del,
    QEMU 7.2 must see no CPU device_add (VM-NOTES trap 3): a test that adds gets a new VM."""
    return pool.get("removal", fresh_cpus=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ROWS and not _TIMINGS and not _SUMMARY:
        return
    terminalreporter.section("crashhp on a real kernel: measurements")
    for line in _TIMINGS:
        terminalreporter.write_line(line)
    if _ROWS:
        terminalreporter.write_line(table(_ROWS))
    for line in _SUMMARY:
        terminalreporter.write_line(line)
