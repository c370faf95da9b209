"""crashhp on ppc64le: a pseries guest (TCG) with trixie's powerpc64le 6.12 kernel, spapr CPU
cores and pc-dimm memory hot-added through QMP, crashhp as its real systemd unit.

    make system-ppc64        # not in CI: run it before closing a change to the ppc64 path

The facts (crash_hotplug per load mode, `kexec -s`, the uevents of a core and of a DIMM) share
one guest. Each scenario is a boot of its own that ends in a crash: the burst, crashhp's
reloads, then `echo c > /proc/sysrq-trigger` and the crash kernel's /proc/vmcore judged by
tests/system/dump.py, as on x86 (test_dump.py).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import pytest

from tests.system import dump, ppc64
from tests.system.assets import Assets
from tests.system.conftest import GuestPool
from tests.system.measure import Row
from tests.system.ppc64 import (
    BOOT_CPUS,
    DRCONF_MEM_ASSIGNED,
    PpcGuest,
    PpcVm,
    be_u64,
    compress,
    dynamic_memory_v2,
    uevent_sequence,
)
from tests.system.test_scenarios import _no_reload, _one_reload

pytestmark = pytest.mark.ppc64

BURST = "+1 core (1 thread), +1 GiB"
# What KERNEL.md says crash_hotplug reads per load mode (cpu and memory files agree since 6.10).
# No "file": Debian builds its ppc64el kernel without CONFIG_KEXEC_FILE (see the test below).
EXPECTED_CRASH_HOTPLUG = {
    "none": ("0", "0"),
    "classic": ("0", "0"),
    "hotplug": ("1", "1"),
}
# pseries hot-adds memory in 256 MiB LMBs: a 1 GiB DIMM is four memory blocks.
LMB_MIB = 256
# From the panic to the crash kernel's power-off (x86: 4.7-10 s).
CRASH_TIMEOUT_S = 600.0
_TABLE: list[tuple[str, str, str, str, dump.DumpReport]] = []


@pytest.fixture(scope="module")
def ppc_assets() -> Assets:
    return ppc64.ensure()


@pytest.fixture(scope="module")
def ppc_pool(ppc_assets: Assets) -> Iterator[GuestPool]:
    p = GuestPool(ppc_assets, vm_class=PpcVm, guest_class=PpcGuest)
    yield p
    p.close()


@pytest.fixture
def guest(ppc_pool: GuestPool) -> PpcGuest:
    g = ppc_pool.get("ppc64")
    assert isinstance(g, PpcGuest)
    return g


@pytest.fixture
def crash_guest(ppc_pool: GuestPool, ppc_assets: Assets) -> Iterator[PpcGuest]:
    """A guest of its own (the crash ends it), its crash initrd the dump check."""
    ppc_pool.close()  # one guest at a time: qemu.lock
    with PpcVm(ppc_assets, name="ppc64-dump", no_reboot=True, mttcg=True) as vm:
        dump.install_dumpcheck_initrd(vm)
        yield PpcGuest(vm)


@pytest.fixture(scope="module", autouse=True)
def _print_table(summary: list[str]) -> Iterator[None]:
    yield
    if _TABLE:
        summary.append("ppc64: the dump after each scenario (crash after the burst)")
        summary += dump.table(_TABLE).splitlines()


def _settled_sequence(g: PpcGuest, t0: int) -> list[str]:
    g.settle(quiet_s=3.0, timeout=600)
    return uevent_sequence(g.vm.events(), t0, g.vm.agent.ping())


def test_crash_hotplug_per_load_mode(guest: PpcGuest, summary: list[str]) -> None:
    g = guest
    g.crashhp_stop()
    seen = {}
    for mode in EXPECTED_CRASH_HOTPLUG:
        g.load(mode)
        seen[mode] = g.crash_hotplug()
        summary.append(f"ppc64 crash_hotplug cpu/memory after {mode}: {'/'.join(seen[mode])}")
    g.unload()
    assert seen == EXPECTED_CRASH_HOTPLUG


def test_file_load_is_not_built_in(guest: PpcGuest, summary: list[str]) -> None:
    """Debian's powerpc64le 6.12 has no kexec_file_load: `kexec -s` fails, the kernel can
    keep a crash image current only if it was loaded with kexec_load --hotplug."""
    g = guest
    config = g.vm.agent.read_text(f"/boot/config-{g.kver}")
    assert "# CONFIG_KEXEC_FILE is not set" in config.splitlines()
    g.unload()
    argv = ["/usr/sbin/kexec", "-p", "-s", f"--initrd={g.crash_initrd}"]
    result = g.vm.agent.run([*argv, f"--append={g.crash_append}", f"/boot/vmlinux-{g.kver}"])
    summary.append(f"ppc64 kexec -s -p: rc {result.rc}, {result.stderr.strip()!r}")
    assert result.rc != 0
    assert "kexec_file_load not available" in result.stderr
    assert not g.crash_loaded()


def test_cpu_core_hot_add_arrives_as_online(guest: PpcGuest, summary: list[str]) -> None:
    """x86 sends `add` (and `online` once onlined); pseries onlines the core itself."""
    g = guest
    g.crashhp_stop()
    g.load("none")
    t0 = g.vm.agent.ping()
    [cpu] = g.add_cpus_and_dimm(cpus=1, dimm=False)
    sequence = _settled_sequence(g, t0)
    summary.append(f"ppc64 uevents for one spapr core (cpu{cpu}): {compress(sequence)}")
    assert sequence == [f"online cpu cpu{cpu}"], sequence
    assert g.vm.agent.read_text(f"/sys/devices/system/cpu/cpu{cpu}/online").strip() == "1"


def test_dimm_hot_add_onlines_its_blocks(guest: PpcGuest, summary: list[str]) -> None:
    g = guest
    g.crashhp_stop()
    g.load("none")
    block_mib = int(g.sh("cat /sys/devices/system/memory/block_size_bytes"), 16) >> 20
    t0 = g.vm.agent.ping()
    g.vm.dimm_add(g.new_dimm())
    sequence = _settled_sequence(g, t0)
    summary.append(
        f"ppc64 uevents for one 1 GiB pc-dimm ({block_mib} MiB blocks): {compress(sequence)}"
    )
    assert block_mib == LMB_MIB
    pairs = [s.split()[0] for s in sequence]
    assert pairs == ["add", "online"] * (1024 // block_mib), sequence


def _ranges_after(title: str, text: str) -> list[dump.Range]:
    """The `START-END` hex lines that follow `title` in kexec's debug output (`-d`)."""
    lines = text.split(title, 1)[1].splitlines()[1:]
    ranges = []
    for line in lines:
        m = re.fullmatch(r"([0-9a-f]{16})-([0-9a-f]{16})", line.strip())
        if m is None:
            break
        ranges.append((int(m.group(1), 16), int(m.group(2), 16)))
    return ranges


def test_kexec_load_leaves_out_hot_added_memory(guest: PpcGuest, summary: list[str]) -> None:
    """kexec-tools builds a kexec_load image's elfcorehdr from the device tree on ppc64: after
    a DIMM hot-add (online in /proc/iomem, ASSIGNED in ibm,dynamic-memory-v2) its crash memory
    ranges still leave the DIMM out. So a reload cannot put hot-added memory into the dump
    here; only an image the kernel updates (`--hotplug`, loaded before the memory came) can.

    Why: kexec-tools' exclude_crash_region() drops every range at or above
    /chosen/linux,memory-limit, and the kernel exports that as the end of boot memory (no
    mem= here), below any hot-added DIMM. The test pins both halves."""
    g = guest
    g.crashhp_stop()
    g.load("none")
    n = g.new_dimm()
    g.vm.dimm_add(n)
    g.settle(quiet_s=3.0, timeout=600)
    [data] = [
        d["data"] for d in g.vm.qmp.execute("query-memory-devices") if d["data"]["id"] == f"dimm{n}"
    ]
    dimm = (int(data["addr"]), int(data["addr"]) + int(data["size"]))
    ram, _ = dump.parse_iomem(g.vm.agent.read_text("/proc/iomem"))
    assert dump.subtract([dimm], ram) == [], (ram, dimm)
    assert "mem=" not in g.sh("cat /proc/cmdline")
    limit = be_u64(g.dt_prop("chosen/linux,memory-limit"))
    lmb = be_u64(g.dt_prop("ibm,dynamic-reconfiguration-memory/ibm,lmb-size"))
    sets = dynamic_memory_v2(
        g.dt_prop("ibm,dynamic-reconfiguration-memory/ibm,dynamic-memory-v2"), lmb
    )
    assigned = [(a, b) for a, b, flags in sets if flags & DRCONF_MEM_ASSIGNED]
    assert dump.subtract([dimm], assigned) == [], (sets, dimm)
    boot_base, boot_size = struct.unpack(">QQ", g.dt_prop("memory@0/reg"))
    # The limit is the end of boot memory, and the DIMM lies above it: kexec-tools clips it.
    assert limit == boot_base + boot_size <= dimm[0], (hex(limit), hex(boot_size), dimm)
    argv = ["/usr/sbin/kexec", "-c", "-p", "-d", f"--initrd={g.crash_initrd}"]
    result = g.vm.agent.run([*argv, f"--append={g.crash_append}", f"/boot/vmlinux-{g.kver}"])
    g.unload()
    assert result.rc == 0, result.stderr[-2000:]
    ranges = _ranges_after("CRASH MEMORY RANGES", result.stdout + result.stderr)
    summary.append(
        f"ppc64 kexec -c -p after a DIMM at {dimm[0]:#x}-{dimm[1] - 1:#x} (ASSIGNED in "
        f"ibm,dynamic-memory-v2; linux,memory-limit {limit:#x}): crash memory ranges "
        + ", ".join(f"{a:#x}-{b - 1:#x}" for a, b in ranges)
    )
    assert ranges, result.stderr[-2000:]
    assert dump.subtract([dimm], ranges) == [dimm], ranges


# scenario, load, crashhp running, the burst's cores: B0 is the control that shows the dump
# check can fail here (a kexec_load image nobody reloads misses the DIMM). Its burst is the
# DIMM alone: a crash on a CPU the crash kernel's device tree lacks would hang it (KERNEL.md).
SCENARIOS = [
    ("B", "classic", True, 1),
    ("C", "hotplug", True, 1),
    ("D", "none", True, 1),
    ("B0", "classic", False, 0),
]


@pytest.mark.parametrize(("scenario", "mode", "crashhp", "cores"), SCENARIOS)
def test_scenario_then_dump(
    crash_guest: PpcGuest,
    rows: list[Row],
    summary: list[str],
    scenario: str,
    mode: str,
    crashhp: bool,
    cores: int,
) -> None:
    g = crash_guest
    if crashhp:
        g.fresh_crashhp(mode)
    else:
        g.crashhp_stop()
        g.load(mode)
    assert g.crash_hotplug() == EXPECTED_CRASH_HOTPLUG[mode]
    what = BURST if cores else "+1 GiB"
    out = g.measure(f"ppc64 {scenario}", what, mode, lambda: g.add_cpus_and_dimm(cpus=cores))
    rows.append(out.row)
    if not crashhp:
        assert out.row.reloads == 0, out.reload_log
    elif mode == "classic":
        _one_reload(g, out)
        assert out.events["burst"] == 1, dict(out.events)
        # The reload cannot bring the DIMM into the image: crashhp says so (crashhp.arch).
        rc, status = g.status()
        assert status is not None, "crashhp status --json printed no JSON"
        assert (rc, status["verdict"]) == (1, "WARNING"), status
        assert "leaves hot-added memory out" in status["headline"], status
        summary.append(f"ppc64 {scenario}: crashhp status: WARNING, {status['headline']}")
    elif mode == "none":
        assert out.row.reloads == 0, out.reload_log
        assert out.events["not_loaded"] >= 1, dict(out.events)
        assert out.metrics.loaded_at_end is False
    else:
        _no_reload(out)
        assert out.events["kernel_handles"] >= 1, dict(out.events)
    # A core arrives as one `online` (no `add`); the DIMM as four add + online pairs.
    assert out.metrics.uevents == cores + 2 * 1024 // LMB_MIB, out.metrics

    report = dump.crash_and_check(g.vm, timeout_s=CRASH_TIMEOUT_S)
    _TABLE.append(
        (
            f"ppc64 {scenario}" + ("" if crashhp else " (no crashhp)"),
            out.row.load,
            str(out.row.reloads),
            f"{out.metrics.unloaded_ms:.0f}",
            report,
        )
    )
    summary.append(
        f"ppc64 {scenario}: boot {g.vm.boot_s:.0f} s, crash to power-off "
        f"{report.extra.get('crash_to_off_s', '?')} s; dump {report.describe()}"
    )
    if mode == "none":
        assert report.error == "no crash kernel was loaded at the crash", report.describe()
    elif not crashhp:
        assert report.error is None, report.describe()
        assert not report.complete, report.describe()
        assert round(report.missing_mib) == 1024, report.describe()
    elif mode == "classic":
        # crashhp's reload is there and the hot-added core is in the dump, but kexec-tools
        # left the DIMM out of the reloaded image (test_kexec_load_leaves_out_hot_added_memory).
        assert report.error is None, report.describe()
        assert (report.notes, report.online_cpus) == (BOOT_CPUS + cores,) * 2, report.describe()
        assert round(report.missing_mib) == 1024, report.describe()
    else:
        assert report.complete, report.describe()
        assert report.online_cpus == BOOT_CPUS + cores, report.describe()
