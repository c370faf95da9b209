"""The kernel matrix (issue 12, item 1): crashhp on three kernels, each a real boot with real
CPU and memory hotplug in QEMU and crashhp as its real systemd unit from the working tree.

    bookworm-6.1   Debian 12's userland and kernel: no crash_hotplug, systemd 252, kdump-tools
                   1.8 as the peer
    trixie-6.12    today's guest
    trixie-7.3     trixie with trixie-backports' 7.3 kernel: /sys/kernel/kexec/

Each kernel boots once and runs its steps in the order of `MATRIX` (they share that guest's
free CPU sockets and DIMM slots: at most four bursts of +2 CPUs and a DIMM per boot). Each
step resets what it depends on (crash kernel, crashhp's state). Steps marked `full` run only
in `make system-full`.

The dump check (issue "The dump is the product": crash the guest, read /proc/vmcore's ELF
header in the crash kernel, compare with /proc/iomem and the online CPUs) plugs in as the
**last** step of every kernel's tuple: it panics the guest, so nothing can follow it on that
boot, and it must end with `pool.close()` so that the next kernel boots afresh.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.system import dump, flavours
from tests.system.measure import Row
from tests.system.scenarios import CONFIG, CONFIG_PATH, Guest, Outcome
from tests.system.test_installed import CONFIG as PACKAGE_CONFIG
from tests.system.test_installed import DROPIN as PACKAGE_DROPIN
from tests.system.test_installed import _configure as configure
from tests.system.test_installed import _install as install_deb
from tests.system.test_installed import _one_reload as one_reload
from tests.system.test_installed import build_deb
from tests.system.vm import GUEST_PYTHONPATH, Vm

if TYPE_CHECKING:
    from tests.system.conftest import GuestPool

pytestmark = pytest.mark.system

BURST = "+2 CPUs, online, +1 GiB"
RELEASE = {
    "bookworm-6.1": r"^6\.1\.0-\d+-amd64$",
    "trixie-6.12": r"^6\.12\.\d+\+deb13-amd64$",
    "trixie-7.3": r"^7\.3\.\d+\+deb13-amd64$",
}
# What `crash_hotplug` reads with a kexec_load crash kernel (no --hotplug): "-" = no file.
CLASSIC_CRASH_HOTPLUG = {"bookworm-6.1": "-/-", "trixie-6.12": "0/0", "trixie-7.3": "0/0"}
KEXEC_DIR = "/sys/kernel/kexec"
KEXEC_FILES = ("loaded", "crash_loaded", "crash_size", "crash_elfcorehdr_size", "crash_cma_ranges")
# The old names and the new file each should now be an alias of.
OLD_NAMES = {
    "/sys/kernel/kexec_loaded": "loaded",
    "/sys/kernel/kexec_crash_loaded": "crash_loaded",
    "/sys/kernel/kexec_crash_size": "crash_size",
    "/sys/kernel/crash_elfcorehdr_size": "crash_elfcorehdr_size",
}
CRASHKERNEL_BYTES = 256 << 20


@dataclass
class Ctx:
    kernel: str
    g: Guest
    pool: GuestPool  # a step that ends the guest (the dump check) closes it here
    rows: list[Row]
    summary: list[str]

    def row(self, out: Outcome, step: str) -> Outcome:
        out.row.scenario = f"{self.kernel} {step}"
        self.rows.append(out.row)
        return out


def _failures(out: Outcome) -> str:
    return "\n".join(
        f"{e.get('REASON')}: {e.get('OUTPUT')}"
        for e in out.journal
        if e.get("CRASHHP_EVENT") == "reload_failed"
    )


def _status(g: Guest) -> tuple[int | None, dict[str, Any]]:
    rc, report = g.status()
    assert report is not None, "crashhp status --json printed no JSON"
    return rc, report


# ---- the steps ------------------------------------------------------------------------------

SYSTEMD = {"bookworm-6.1": "252", "trixie-6.12": "257", "trixie-7.3": "257"}
# Bookworm's python3-pydantic and -structlog are too old: crashhp must get the pinned wheels.
DEPS = {"bookworm-6.1": ("2.10.6", "25.3.0", "/opt/crashhp-deps/")}
PROBE = (
    "import sys, pydantic, structlog; "
    "print(sys.version.split()[0], pydantic.VERSION, structlog.__version__, pydantic.__file__)"
)


def boot_facts(c: Ctx) -> None:
    """What this boot is: systemd, Python and crashhp's dependencies, memory auto-online,
    the hot-pluggable CPUs the kernel counted (the ACPI override at work or not needed)."""
    g = c.g
    systemd = g.sh("systemctl --version | head -1").split()[1]
    assert systemd == SYSTEMD[c.kernel], systemd
    # With the PYTHONPATH of the guest's crashhp launcher.
    probe = g.vm.agent.run(["env", f"PYTHONPATH={GUEST_PYTHONPATH}", "python3", "-c", PROBE], 60)
    python, pydantic, structlog, where = probe.check().stdout.split()
    if c.kernel in DEPS:
        assert (pydantic, structlog) == DEPS[c.kernel][:2], probe.stdout
        assert where.startswith(DEPS[c.kernel][2]), where
    # 6.1: "Allowing 12 CPUs, 10 hotplug CPUs"; 6.12 and later: "... plus 10 hotplug CPUs".
    hotplug_cpus = g.sh("dmesg | grep -o -E 'Allowing .* hotplug CPUs' || true").strip()
    c.summary.append(
        f"{c.kernel}: {g.kver}, booted in {g.vm.boot_s:.1f} s, systemd {systemd}, "
        f"Python {python}, pydantic {pydantic}, structlog {structlog} ({where.rsplit('/', 2)[0]}); "
        f"auto_online_blocks {g.auto_online}; {hotplug_cpus or 'no hotplug CPU count in dmesg'}; "
        f"ACPI override {'yes' if g.vm.acpi_fix else 'no'}"
    )


def kexec_load_burst(c: Ctx) -> None:
    """Crash kernel loaded with kexec_load (no --hotplug): one burst, exactly one reload."""
    g = c.g
    g.fresh_crashhp("classic")
    assert "/".join(g.crash_hotplug()) == CLASSIC_CRASH_HOTPLUG[c.kernel]
    out = c.row(g.measure("B", BURST, "classic", g.add_cpus_and_dimm), "kexec_load burst")
    assert out.events["reload_failed"] == 0, f"crashhp's reload failed:\n{_failures(out)}"
    out.assert_one_reload_per_burst(out.row.reloads)
    assert out.reload_log[-1].split()[-1] == "0", f"reload command failed: {out.reload_log}"
    assert out.events["reload_done"] == out.row.reloads, dict(out.events)
    assert out.metrics.uevents >= 2 + 2 + 16, out.metrics  # 2 add + 2 online + 8 add + 8 online
    assert out.metrics.loaded_at_end is True, out.metrics
    assert out.metrics.restore_ms is not None, out.metrics
    rc, report = _status(g)
    assert (rc, report["verdict"]) == (0, "OK"), report
    c.summary.append(
        f"{c.kernel}: kexec_load burst: {out.metrics.uevents} uevents, {out.row.reloads} reload, "
        f"{out.metrics.unloaded_ms:.0f} ms unloaded, crashhp events {dict(out.events)}"
    )


def nothing_loaded(c: Ctx) -> None:
    """No crash kernel: the same burst needs no reload, and `crashhp status` says CRITICAL."""
    g = c.g
    g.fresh_crashhp("none")
    out = c.row(g.measure("D", BURST, "none", g.add_cpus_and_dimm), "nothing loaded")
    assert out.row.reloads == 0, out.reload_log
    assert out.events["reload_started"] == 0, dict(out.events)
    assert out.events["not_loaded"] >= 1, dict(out.events)
    assert out.metrics.uevents >= 2 + 2 + 16, out.metrics
    assert out.metrics.loaded_at_end is False, out.metrics
    rc, report = _status(g)
    assert (rc, report["verdict"]) == (2, "CRITICAL"), report


def _peer(c: Ctx, *, udevd_filter: bool) -> None:
    """Debian's kdump-tools (crashhp stopped): its reloads per burst, and whether they ran."""
    g = c.g
    name = "peer, stock udevd" if udevd_filter else "peer, udevd filter lifted"
    out = c.row(g.peer_burst("G", BURST, udevd_filter=udevd_filter), name)
    assert out.metrics.uevents >= 2 + 2 + 16, out.metrics
    assert out.row.reloads >= 1, "the peer's udev rules never ran kdump-config"
    restore = out.metrics.restore_ms
    c.summary.append(
        f"{c.kernel}: {name}: {out.row.reloads} reloads for {out.metrics.uevents} uevents, "
        f"{out.peer_failed} failed; {out.metrics.unloaded_ms:.0f} ms with no crash kernel; "
        f"last uevent -> loaded {'never' if restore is None else f'{restore:.0f} ms'}; "
        f"loaded at the end: {out.metrics.loaded_at_end}"
    )


def peer_stock_udevd(c: Ctx) -> None:
    _peer(c, udevd_filter=True)


def peer_filter_lifted(c: Ctx) -> None:
    _peer(c, udevd_filter=False)


def _read(g: Guest, path: str) -> str:
    return g.vm.agent.read_text(path).strip()


def kexec_sysfs(c: Ctx) -> None:
    """7.x: /sys/kernel/kexec/ and the old names, through each way of loading."""
    g = c.g
    listing = g.sh(f"cd {KEXEC_DIR} && stat -c '%n %a %F' *").splitlines()
    c.summary.append(f"{c.kernel}: {KEXEC_DIR}/: " + "; ".join(listing))
    present = {line.split()[0] for line in listing}
    assert set(KEXEC_FILES) <= present, listing
    links = {
        old: g.sh(f"if [ -L {old} ]; then readlink {old}; else echo not-a-link; fi").strip()
        for old in OLD_NAMES
    }
    shown = "; ".join(f"{old} -> {target}" for old, target in links.items())
    c.summary.append(f"{c.kernel}: old names: {shown}")
    for old, new in OLD_NAMES.items():
        assert links[old].endswith(f"kexec/{new}"), links
    assert int(_read(g, f"{KEXEC_DIR}/crash_size")) == CRASHKERNEL_BYTES
    seen = []
    for mode, want in (("none", "0/0"), ("classic", "0/0"), ("hotplug", "1/1"), ("file", "1/1")):
        g.load(mode)
        crash_loaded = _read(g, f"{KEXEC_DIR}/crash_loaded")
        assert crash_loaded == _read(g, "/sys/kernel/kexec_crash_loaded")
        assert crash_loaded == ("0" if mode == "none" else "1"), (mode, crash_loaded)
        hotplug = "/".join(g.crash_hotplug())
        assert hotplug == want, (mode, hotplug)
        size = int(_read(g, f"{KEXEC_DIR}/crash_elfcorehdr_size"))
        assert size > 0
        seen.append(f"{mode}: crash_loaded {crash_loaded}, crash_hotplug {hotplug}, size {size}")
    c.summary.append(f"{c.kernel}: " + "; ".join(seen))
    cma = _read(g, f"{KEXEC_DIR}/crash_cma_ranges")
    c.summary.append(f"{c.kernel}: crash_cma_ranges {cma!r}")
    # Today's crashhp reads the old names (symlinks here): it must see the file load.
    g.crashhp_start()
    rc, report = _status(g)
    assert (rc, report["verdict"]) == (0, "OK"), report
    c.summary.append(f"{c.kernel}: crashhp status with kexec -s -p: {report['verdict']}")


def bookworm_package(c: Ctx) -> None:
    """The bookworm .deb (packaging/build-deb --flavour bookworm, pydantic and structlog
    vendored) installs with apt-get in the guest, its service starts, and it reloads once
    for a hot-added CPU with kexec_load. Last on its boot: it replaces the working
    tree's crashhp, and the harness's wheels go first so the package must bring its own."""
    g = c.g
    built = Path(tempfile.mkdtemp(prefix="crashhp-deb-bookworm-"))
    deb = build_deb(built, "crashhp_*~deb12*.deb", "--flavour", "bookworm")
    g.sh(f"rm -rf /{flavours.DEPS_DIR}")
    apt = install_deb(g, deb)
    version = deb.name.split("_")[1]
    assert f"Setting up crashhp ({version})" in apt, apt
    # debhelper enabled and started it; the admin's command is a no-op then.
    assert g.vm.agent.run(["systemctl", "is-enabled", "crashhp"]).stdout.strip() == "enabled"
    g.vm.agent.run(["systemctl", "enable", "--now", "crashhp"], 90).check()
    assert g.vm.agent.run(["systemctl", "is-active", "crashhp"]).stdout.strip() == "active"
    files = g.vm.agent.run(["dpkg", "-L", "crashhp"], 30).check().stdout.split()
    assert "/usr/lib/crashhp/vendor/pydantic" in files, files
    configure(g, PACKAGE_CONFIG)
    g.fresh_crashhp("classic")
    # A real change: a CPU offline+online changes no header on x86 (decision `unchanged`).
    out = g.measure("P", "+1 CPU", "classic", lambda: g.add_cpus_and_dimm(cpus=1, dimm=False))
    one_reload(out, "kexec")
    c.row(out, "bookworm .deb, kexec_load")
    c.summary.append(
        f"{c.kernel}: {deb.name} ({deb.stat().st_size} bytes) installed with apt-get, "
        f"service active, +1 CPU -> {out.row.reloads} reload"
    )


DIMM_SLOTS = 4  # tests/system/vm.py MEMORY: slots=4


def dump_check(c: Ctx) -> None:
    """The dump after a reload (issue "The dump is the product"): a kexec_load crash kernel
    whose initrd is the dump check, a burst crashhp must reload for (+1 CPU online, and a
    1 GiB DIMM while the boot has a slot left), then a panic; the vmcore's header must cover
    every System RAM range and carry a note per online CPU. Ends the guest: last step.
    On bookworm it follows the .deb step, so the packaged crashhp reloads here."""
    g = c.g
    try:
        dump.install_dumpcheck_initrd(g.vm)
        # The harness's reload command (the .deb step configured the kexec method in a drop-in).
        g.sh(f"rm -f {PACKAGE_DROPIN}")
        g.vm.agent.write_file(CONFIG_PATH, CONFIG)
        g.fresh_crashhp("classic")
        dimm = len(g.vm.dimms) < DIMM_SLOTS
        burst = "+1 CPU, online" + (", +1 GiB" if dimm else "")
        out = g.measure("B", burst, "classic", lambda: g.add_cpus_and_dimm(cpus=1, dimm=dimm))
        c.row(out, "dump check")
        assert out.events["reload_failed"] == 0, f"crashhp's reload failed:\n{_failures(out)}"
        out.assert_one_reload_per_burst(out.row.reloads)
        report = dump.crash_and_check(g.vm)
    finally:
        c.pool.close()
    c.summary.append(
        f"{c.kernel}: dump check after {burst}: {out.row.reloads} reload, "
        f"{out.metrics.unloaded_ms:.0f} ms unloaded; {dump.summary_line('vmcore', report)}"
    )
    assert report.error is None, report.describe()
    assert report.complete, report.describe()


# ---- the matrix -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    run: Callable[[Ctx], None]
    full: bool = False  # only in `make system-full`

    @property
    def name(self) -> str:
        return self.run.__name__


MATRIX: dict[str, tuple[Step, ...]] = {
    "bookworm-6.1": (
        Step(boot_facts),
        Step(kexec_load_burst),
        Step(nothing_loaded),
        Step(peer_stock_udevd),
        Step(peer_filter_lifted, full=True),
        Step(bookworm_package),
        Step(dump_check),
    ),
    "trixie-6.12": (
        Step(boot_facts),
        Step(kexec_load_burst),
        Step(nothing_loaded),
        Step(dump_check),
    ),
    "trixie-7.3": (
        Step(boot_facts),
        Step(kexec_sysfs),
        Step(kexec_load_burst),
        Step(nothing_loaded),
        Step(dump_check),
    ),
}
PARAMS = [
    pytest.param(
        kernel,
        step,
        id=f"{kernel}-{step.name}",
        marks=[pytest.mark.system_full] if step.full else [],
    )
    for kernel, steps in MATRIX.items()
    for step in steps
]


@pytest.mark.parametrize(("kernel", "step"), PARAMS)
def test_matrix(
    pool: GuestPool, rows: list[Row], summary: list[str], kernel: str, step: Step
) -> None:
    # -no-reboot: the last step's crash ends QEMU (with nothing loaded the guest would reboot).
    g = pool.get(f"matrix-{kernel}", flavour=flavours.FLAVOURS[kernel], no_reboot=True)
    assert re.match(RELEASE[kernel], g.kver), f"{kernel} booted {g.kver}"
    step.run(Ctx(kernel, g, pool, rows, summary))


@pytest.mark.system_full
def test_7x_cpu_hotplug_still_needs_the_acpi_override(pool: GuestPool, summary: list[str]) -> None:
    """Does 7.3 still need the ACPI table override for CPU hotplug under TCG (as 6.12 does)?

    A boot without it: the kernel counts no hot-pluggable CPUs and a CPU device_add never
    shows up in the guest. Should a kernel start accepting them, this fails: the override
    can then go for that kernel.
    """
    kernel = "trixie-7.3"
    assets = pool.assets_for(flavours.FLAVOURS[kernel])
    pool.close()
    with Vm(assets, name=f"matrix-{kernel}-no-acpi", acpi_fix=False) as vm:
        counted = vm.agent.sh("dmesg | grep -o 'plus [0-9]* hotplug CPUs' || true").stdout.strip()
        socket = vm.free_sockets()[0]
        vm.cpu_add(socket)
        appeared = vm.agent.wait_path(f"/sys/devices/system/cpu/cpu{socket}", timeout=20)
        lapic = vm.agent.sh("dmesg | grep -c 'Unable to map lapic' || true").stdout.strip()
    summary.append(
        f"{kernel} without the ACPI override: {counted or 'no hotplug CPU count'}; "
        f"CPU device_add {'appeared' if appeared else 'never appeared'} in the guest "
        f"('Unable to map lapic' x{lapic})"
    )
    assert counted == "plus 0 hotplug CPUs", counted
    assert not appeared, "a CPU was hot-added without the ACPI override"
