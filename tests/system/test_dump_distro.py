"""Issue 10 part A, the distribution's own dump path: the guest boots from an ext4 disk image
(assets.ensure_disk: the rootfs plus initramfs-tools and the kernel's modules), kdump-tools
builds its kdump initrd in the guest (`kdump-config load`, mkinitramfs with MODULES=dep), and
at the crash its `kdump-tools-dump.service` saves the dump with makedumpfile into /var/crash
on that disk. The host reads the saved file back from the image (debugfs) and judges it from
its own header: the first bitmap's PFNs against System RAM, its CPU notes against the CPUs
online at the crash.

Each case boots once and crashes after the burst (+2 CPUs online, +1 GiB DIMM):
- kdump-tools' own load (the control);
- crashhp with Debian's method, `kdump-config` (a kexec_load image, KDUMP_KEXEC_ARGS="-c");
- crashhp's own `kexec` method, and `crashhp upgrade`: these must boot the distribution's dump
  path too (the crash kernel's command line must carry `systemd.unit=kdump-tools-dump.service`).

`make system` (and so CI) runs the crashhp kdump-config case (marker `system` alone: `make
system` selects "system and not system_full"); all four run in `make system-full`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import dump, flavours
from tests.system.assets import Disk, ensure_disk
from tests.system.conftest import GuestPool
from tests.system.scenarios import CONFIG_PATH, QUIET_MS, Guest, Outcome
from tests.system.vm import CMDLINE, Vm

BURST = "+2 CPUs, online, +1 GiB"
# Debian's kdump initrd and a systemd userland from the disk in the crash kernel: 256M is
# short for it (the crash kernel runs out of memory mounting the root); 384M is enough.
CRASHKERNEL = "384M"
DISK_CMDLINE = CMDLINE.replace("crashkernel=256M", f"crashkernel={CRASHKERNEL}") + (
    " root=/dev/vda rw"
)
# The crash kernel boots systemd from the disk and runs makedumpfile under TCG.
SAVE_TIMEOUT_S = 900.0
COREDIR = "/var/crash"
CONFIG_HEAD = f"[coalesce]\nquiet_ms = {QUIET_MS}\nmax_delay_ms = 10000\n\n"
_TIMES: list[str] = []
_TABLE: list[tuple[str, str, str, str, dump.DumpReport]] = []


class DiskGuest:
    def __init__(self, vm: Vm, disk: Disk) -> None:
        self.vm = vm
        self.disk = disk
        self.guest = Guest(vm)
        self.started = time.monotonic() - vm.boot_s
        self.load_s = 0.0

    @property
    def image(self) -> Path:
        return self.vm.dir / "disk.img"

    def kdump_tools_load(self, kexec_args: str | None) -> None:
        """`kdump-config load` as on a real machine: the first boot of a disk image has it
        build its initrd (mkinitramfs in the guest, about 90 s under TCG); later boots get that
        initrd back from the cache with its sysctl stamp, so kdump-config keeps it."""
        g = self.guest
        g.crashhp_stop()
        initrd = f"/var/lib/kdump/initrd.img-{g.kver}"
        cached = self.disk.image.parent / "kdump-initrd.img"
        if cached.exists():
            g.vm.agent.write_file(initrd, cached.read_bytes())
            g.sh(
                "mkdir -p /etc/kdump && touch /etc/kdump/sysctl.conf && "
                f"cp /etc/kdump/sysctl.conf /var/lib/kdump/latest_sysctls-{g.kver}"
            )
        if kexec_args is not None:
            g.sh(f"echo 'KDUMP_KEXEC_ARGS=\"{kexec_args}\"' >>/etc/default/kdump-tools")
        t = time.monotonic()
        g.kdump_config_load()
        self.load_s = time.monotonic() - t
        g.sh(f"test -s {initrd} && test -s {COREDIR}/kexec_cmd")
        if not cached.exists():
            tmp = cached.with_suffix(".tmp")
            tmp.write_bytes(g.vm.agent.read_file(initrd))
            tmp.rename(cached)

    def crashhp_config(self, reload: str) -> None:
        self.guest.vm.agent.write_file(CONFIG_PATH, CONFIG_HEAD + reload)
        self.guest.sh("rm -f /run/crashhp/state.json")

    def crash(self, name: str, out: Outcome) -> dump.DumpReport:
        c = dump.crash(self.vm, SAVE_TIMEOUT_S, watch_agent=True)
        report = dump.check_saved(c, self.image)
        _TABLE.append(
            (name, out.row.load, str(out.row.reloads), f"{out.metrics.unloaded_ms:.0f}", report)
        )
        line = (
            f"  {name}: {time.monotonic() - self.started:.0f} s in all (boot "
            f"{self.vm.boot_s:.0f} s, kdump-config load {self.load_s:.0f} s, longest pause "
            f"between uevents {max(out.metrics.uevent_gaps_ms, default=0):.0f} ms, crash to "
            f"power-off {c.crash_to_off_s:.0f} s); saved dump {report.describe()}"
            + (f" [{report.extra['path']}, {report.extra['size_mib']} MiB]" if report.extra else "")
        )
        _TIMES.append(line)
        print(line)
        return report


@pytest.fixture
def disk_guest(pool: GuestPool) -> Iterator[DiskGuest]:
    pool.close()  # one guest at a time: qemu.lock
    # assets_for: found again should another checkout's run have pruned a shared build.
    assets = pool.assets_for(flavours.DEFAULT)
    disk = ensure_disk(assets)
    vm = Vm(assets, name="distro", no_reboot=True, disk=disk, cmdline=DISK_CMDLINE)
    try:
        with vm:
            yield DiskGuest(vm, disk)
    finally:
        (vm.dir / "disk.img").unlink(missing_ok=True)


@pytest.fixture(scope="module", autouse=True)
def _print_table(summary: list[str]) -> Iterator[None]:
    yield
    if _TABLE:
        summary.append("issue 10: the dump kdump-tools saved (makedumpfile, read from the disk)")
        summary += dump.table(_TABLE).splitlines()
        summary += _TIMES


def _crashhp_kdump_tools_c(d: DiskGuest, reload: str) -> Outcome:
    """kdump-tools loads a kexec_load image; crashhp (with `reload`) keeps it current."""
    g = d.guest
    d.kdump_tools_load("-c")
    assert g.crash_hotplug() == ("0", "0")
    d.crashhp_config(reload)
    g.crashhp_start()
    g.settle(quiet_s=1.0)
    out = g.measure("distro", BURST, "peer", g.add_cpus_and_dimm)
    out.row.reloads = out.events["reload_started"]
    return out


@pytest.mark.system_full
def test_distro_kdump_tools_control(disk_guest: DiskGuest) -> None:
    """kdump-tools alone, as Debian ships it (`kexec -p`: a file load the kernel keeps
    current), its udev rules parked: the dump it saves is the control."""
    g = disk_guest.guest
    disk_guest.kdump_tools_load(None)
    assert g.crash_hotplug() == ("1", "1")
    out = g.measure("control", BURST, "peer", g.add_cpus_and_dimm, reloads_from="kdump-config")
    report = disk_guest.crash("D0 (kdump-tools' own load)", out)
    assert report.error is None, report.describe()
    assert report.complete, report.describe()


@pytest.mark.system  # in `make system` and CI: one method on the distribution's path
def test_distro_crashhp_kdump_config(disk_guest: DiskGuest) -> None:
    """crashhp's default method on Debian: one `kdump-config reload` for the burst."""
    out = _crashhp_kdump_tools_c(
        disk_guest, '[reload]\nmethod = "kdump-config"\ntimeout_s = 300\nretries = 2\n'
    )
    out.assert_one_reload_per_burst(out.events["reload_done"])
    report = disk_guest.crash("D1 (crashhp, kdump-config)", out)
    assert report.error is None, report.describe()
    assert report.complete, report.describe()


@pytest.mark.system_full
def test_distro_crashhp_kexec_method(disk_guest: DiskGuest) -> None:
    """crashhp's own `kexec` method must load the distribution's dump path (its initrd and
    `systemd.unit=kdump-tools-dump.service`), so that the crash saves a dump."""
    out = _crashhp_kdump_tools_c(
        disk_guest,
        '[reload]\nmethod = "kexec"\ntimeout_s = 300\nretries = 2\n\n'
        '[kexec]\nsyscall = "classic"\nhotplug = false\n',
    )
    out.assert_one_reload_per_burst(out.events["reload_done"])
    report = disk_guest.crash("D2 (crashhp, kexec)", out)
    assert report.error is None, report.describe()
    assert report.complete, report.describe()


@pytest.mark.system_full
def test_distro_after_crashhp_upgrade(disk_guest: DiskGuest) -> None:
    """`crashhp upgrade` over kdump-tools' kexec_load image: the hotplug-capable load must
    still boot kdump-tools' dump unit."""
    g = disk_guest.guest
    disk_guest.kdump_tools_load("-c")
    disk_guest.crashhp_config('[reload]\nmethod = "kdump-config"\ntimeout_s = 300\n')
    g.upgrade_then_start()
    out = g.measure("upgraded", BURST, "upgraded", g.add_cpus_and_dimm)
    out.row.reloads = out.events["reload_started"]
    report = disk_guest.crash("D3 (crashhp upgrade)", out)
    assert report.error is None, report.describe()
    assert report.complete, report.describe()
