"""Reading the kernel's kexec, fadump and crash-hotplug files. Every reader takes its root.

Two layouts of the kexec facts: ``/sys/kernel/kexec/{crash_loaded,crash_size,
crash_elfcorehdr_size}`` (6.19/7.0 on; there the old names are symlinks into it) is
preferred, ``/sys/kernel/kexec_crash_loaded``, ``kexec_crash_size`` and
``crash_elfcorehdr_size`` (obsolete, "removed after 2028") are the fall-back.
"""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from crashhp.arch import Arch, arch_of
from crashhp.arch import rules as arch_rules
from crashhp.model import Fadump, KernelState, Layout, Subsystem, Verdict, fingerprint

SYSFS = Path("/sys")
PROCFS = Path("/proc")
# A crash_hotplug 0 is re-read this often over coalesce.settle_ms; a single 1 among the
# reads means the kernel keeps the image current (a busy kexec lock reads 0, never 1).
# A kexec_load holds the lock for tens of ms, a kexec_file_load for about a second
# (0.9-1.3 s measured in the guest, docs/design.md); the kernel's own update far less.
SETTLE_READ_INTERVAL_S = 0.010

# (layout, crash_loaded, crash_size, crash_elfcorehdr_size) under /sys/kernel
_LAYOUTS = (
    (Layout.KEXEC_DIR, "kexec/crash_loaded", "kexec/crash_size", "kexec/crash_elfcorehdr_size"),
    (Layout.LEGACY, "kexec_crash_loaded", "kexec_crash_size", "crash_elfcorehdr_size"),
)


def crash_hotplug_path(subsystem: Subsystem, sysfs: Path = SYSFS) -> Path:
    return sysfs / "devices" / "system" / subsystem.value / "crash_hotplug"


def read_verdict(subsystem: Subsystem, sysfs: Path = SYSFS) -> Verdict:
    try:
        text = crash_hotplug_path(subsystem, sysfs).read_text().strip()
    except FileNotFoundError:
        return Verdict.ABSENT
    except OSError:
        return Verdict.UNREADABLE
    if text == "1":
        return Verdict.KERNEL_UPDATES
    if text == "0":
        return Verdict.NEEDS_RELOAD
    return Verdict.UNREADABLE


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip(), 0)
    except (OSError, ValueError):
        return None


def layout(sysfs: Path = SYSFS) -> Layout:
    for name, loaded, *_ in _LAYOUTS:
        if (sysfs / "kernel" / loaded).exists():
            return name
    return Layout.NONE


def read_crash_loaded(sysfs: Path = SYSFS) -> bool | None:
    """True/False from ``crash_loaded``; None when the kernel has no kexec."""
    for _, loaded, *_ in _LAYOUTS:
        value = _read_int(sysfs / "kernel" / loaded)
        if value is not None:
            return value != 0
    return None


def read_uevent_seqnum(sysfs: Path = SYSFS) -> int | None:
    """The SEQNUM of the last uevent the kernel sent (``/sys/kernel/uevent_seqnum``)."""
    return _read_int(sysfs / "kernel" / "uevent_seqnum")


def read_fadump(sysfs: Path = SYSFS) -> Fadump | None:
    """``/sys/kernel/fadump/{enabled,registered,hotplug_ready}``; None without fadump."""
    base = sysfs / "kernel" / "fadump"
    enabled = _read_int(base / "enabled")
    if enabled is None:
        return None
    return Fadump(
        enabled=enabled == 1,
        registered=_read_int(base / "registered") == 1,
        hotplug_ready=_read_int(base / "hotplug_ready") == 1,
    )


def read_state(sysfs: Path = SYSFS) -> KernelState:
    found = layout(sysfs)
    files = next((f for f in _LAYOUTS if f[0] is found), _LAYOUTS[1])
    _, _, size, hdr = files
    return KernelState(
        crash_loaded=read_crash_loaded(sysfs),
        verdicts=MappingProxyType({s: read_verdict(s, sysfs) for s in Subsystem}),
        elfcorehdr_size=_read_int(sysfs / "kernel" / hdr),
        crash_size=_read_int(sysfs / "kernel" / size),
        layout=found,
        fadump=read_fadump(sysfs),
    )


def host_arch() -> Arch:
    return arch_of(platform.machine())


def _spans(ids: list[int]) -> str:
    """Sorted ids in the kernel's list format, ``0-15,32-47``."""
    spans: list[tuple[int, int]] = []
    for n in ids:
        if spans and n == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], n)
        else:
            spans.append((n, n))
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def memory_blocks(sysfs: Path = SYSFS) -> str | None:
    """``block_size_bytes`` and the ids of the ``memoryN`` blocks; None without the directory.

    A block's directory exists, online or offline, from the moment add_memory_resource()
    has registered its "System RAM" range until try_remove_memory() releases it (both
    under the device hotplug lock), and for every boot block: it is the RAM the header
    lists, at block granularity. Listing it needs no privilege.
    """
    memory = sysfs / "devices" / "system" / "memory"
    try:
        names = os.listdir(memory)
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    ids = sorted(int(n[6:]) for n in names if n.startswith("memory") and n[6:].isdigit())
    try:
        size = (memory / "block_size_bytes").read_text().strip()
    except OSError:
        size = "?"
    return f"{size} {_spans(ids)}"


def system_ram_lines(procfs: Path = PROCFS) -> list[bytes] | None:
    """The "System RAM" lines of /proc/iomem; None if it cannot be read."""
    try:
        with (procfs / "iomem").open("rb") as iomem:
            return [line.strip() for line in iomem if b"System RAM" in line]
    except OSError:
        return None


def topology(sysfs: Path = SYSFS, procfs: Path = PROCFS, arch: Arch | None = None) -> str:
    """A fingerprint of what a crash kernel loaded now would describe.

    The elfcorehdr has one PT_LOAD per "System RAM" range of /proc/iomem and one note per
    present CPU, so those are hashed; online CPUs only where the architecture's crash
    kernel lists them (ppc64's device tree; see crashhp.arch). The CPU part and the RAM
    part are hashed apart (crashhp.model.changed_parts).

    The RAM part reads the same for every reader, whatever its privileges (the daemon
    has no CAP_SYS_ADMIN; `crashhp status` may run as root): the memory block ids and
    their size (``memory_blocks``), plus the *number* of "System RAM" lines of
    /proc/iomem, which a reader without CAP_SYS_ADMIN sees with zero addresses. The
    number covers the moments the two disagree: try_remove_memory() removes the block
    devices (their ``remove`` uevents) before it releases the range, and
    add_memory_resource() registers the range before it creates the blocks, so a
    kexec-tools load in between reads a range the blocks no longer (or not yet) show.
    Without /sys/devices/system/memory (no memory hotplug) the lines themselves are
    hashed, as they read to this reader.
    """
    online = arch_rules(arch or host_arch()).online_cpus_count
    cpus = hashlib.sha256()
    for name in ("present", "online") if online else ("present",):
        try:
            cpus.update((sysfs / "devices/system/cpu" / name).read_bytes())
        except OSError:
            cpus.update(b"?")
        cpus.update(b"\0")
    ram = hashlib.sha256()
    blocks = memory_blocks(sysfs)
    lines = system_ram_lines(procfs)
    if blocks is not None:
        ram.update(f"blocks {blocks}\0ranges {'?' if lines is None else len(lines)}".encode())
    elif lines is None:
        ram.update(b"?")
    else:
        for line in lines:
            ram.update(line)
            ram.update(b"\0")
    return fingerprint(cpus.hexdigest(), ram.hexdigest())


@dataclass(frozen=True, slots=True)
class Reader:
    """Everything one decision reads, from one root: for the service shell."""

    sysfs: Path = SYSFS
    procfs: Path = PROCFS
    arch: Arch | None = None

    def state(self) -> KernelState:
        return read_state(self.sysfs)

    def verdict(self, subsystem: Subsystem) -> Verdict:
        return read_verdict(subsystem, self.sysfs)

    def fingerprint(self) -> str:
        return topology(self.sysfs, self.procfs, self.arch)

    def seqnum(self) -> int | None:
        return read_uevent_seqnum(self.sysfs)
