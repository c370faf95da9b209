"""Reading the kernel's kexec, fadump and crash-hotplug files. Every reader takes its root.

Two layouts of the kexec facts: ``/sys/kernel/kexec/{crash_loaded,crash_size,
crash_elfcorehdr_size}`` (6.19/7.0 on; there the old names are symlinks into it) is
preferred, ``/sys/kernel/kexec_crash_loaded``, ``kexec_crash_size`` and
``crash_elfcorehdr_size`` (obsolete, "removed after 2028") are the fall-back.
"""

from __future__ import annotations

import hashlib
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


def topology(sysfs: Path = SYSFS, procfs: Path = PROCFS, arch: Arch | None = None) -> str:
    """A fingerprint of what a crash kernel loaded now would describe.

    The elfcorehdr has one PT_LOAD per "System RAM" range of /proc/iomem and one note per
    present CPU, so those are hashed; online CPUs only where the architecture's crash
    kernel lists them (ppc64's device tree; see crashhp.arch). The CPU part and the RAM
    part are hashed apart (crashhp.model.changed_parts). /proc/iomem shows zero
    addresses to non-root readers; the fingerprint is then weaker (it still changes with
    the number of ranges) but consistent between two reads by the same user.
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
    try:
        with (procfs / "iomem").open("rb") as iomem:
            for line in iomem:
                if b"System RAM" in line:
                    ram.update(line.strip())
                    ram.update(b"\0")
    except OSError:
        ram.update(b"?")
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
