"""Fixtures for the VM system tests: cached assets, the guests, the measurement table.

Nothing here skips: a machine that cannot build the assets or boot QEMU fails the tests.
At most one guest runs at a time: asking for the other one shuts the current one down.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.system import assets as assets_mod
from tests.system import flavours
from tests.system.measure import Row, table
from tests.system.scenarios import Guest
from tests.system.vm import Vm

_ROWS: list[Row] = []
_TIMINGS: list[str] = []
_SUMMARY: list[str] = []


def _present(a: assets_mod.Assets) -> bool:
    files = (a.vmlinuz, a.rootfs_cpio, a.acpi_cpio, a.kernel_cpio)
    return all(f.exists() for f in files if f is not None)


class GuestPool:
    """Keeps one guest alive between tests; boots a new one when another kind is asked for."""

    def __init__(
        self,
        assets: assets_mod.Assets,
        vm_class: type[Vm] = Vm,
        guest_class: type[Guest] = Guest,
    ) -> None:
        self.assets = assets
        # Another architecture's guest (tests/system/test_ppc64.py) on its own assets: it has
        # the default flavour only.
        self.vm_class = vm_class
        self.guest_class = guest_class
        self._flavours = {flavours.DEFAULT: assets}
        self.vm: Vm | None = None
        self.guest: Guest | None = None
        self.kind = ""

    def get(
        self,
        kind: str,
        *,
        fresh_cpus: bool = False,
        flavour: flavours.Flavour = flavours.DEFAULT,
        no_reboot: bool = False,
    ) -> Guest:
        """The guest `kind` (one kind per flavour), booted if it is not the current one.
        `no_reboot`: QEMU exits where the guest would reboot (a kind that ends in a crash)."""
        stale = self.vm is not None and fresh_cpus and self.vm.cpu_removed
        if self.guest is None or self.kind != kind or stale:
            self.close()
            self.vm = self.vm_class(self.assets_for(flavour), name=kind, no_reboot=no_reboot)
            self.vm.__enter__()
            _TIMINGS.append(
                f"VM {kind}: booted in {self.vm.boot_s:.1f} s after waiting "
                f"{self.vm.lock_wait_s:.0f} s for other guests (logs in {self.vm.dir})"
            )
            self.guest = self.guest_class(self.vm)
            self.kind = kind
        return self.guest

    def assets_for(self, flavour: flavours.Flavour) -> assets_mod.Assets:
        known = self._flavours.get(flavour)
        # Another checkout's run can prune a build this session still holds (the shared
        # cache keeps one ACPI override per QEMU setup): then build or find it again.
        if known is None or not _present(known):
            if self.vm_class is not Vm:
                raise RuntimeError(f"{self.vm_class.__name__} has no {flavour.name} assets")
            started = time.monotonic()
            known = self._flavours[flavour] = flavours.ensure(flavour)
            took = time.monotonic() - started
            _TIMINGS.append(f"assets {flavour.name}: built or reused in {took:.0f} s")
        return known

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
