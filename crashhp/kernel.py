"""Reading the kernel's kexec and crash-hotplug files. Every reader takes its root."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import MappingProxyType

from crashhp.model import KernelState, Subsystem, Verdict

SYSFS = Path("/sys")
PROCFS = Path("/proc")
# A crash_hotplug 0 is re-read this often over coalesce.settle_ms; a single 1 among the
# reads means the kernel keeps the image current (a busy kexec lock reads 0, never 1).
# A kexec load holds the lock for about 50 ms; the kernel's own header update far less.
SETTLE_READ_INTERVAL_S = 0.010


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


def read_crash_loaded(sysfs: Path = SYSFS) -> bool | None:
    """True/False from ``kexec_crash_loaded``; None when the kernel has no kexec."""
    value = _read_int(sysfs / "kernel" / "kexec_crash_loaded")
    return None if value is None else value != 0


def read_uevent_seqnum(sysfs: Path = SYSFS) -> int | None:
    """The SEQNUM of the last uevent the kernel sent (``/sys/kernel/uevent_seqnum``)."""
    return _read_int(sysfs / "kernel" / "uevent_seqnum")


def read_state(sysfs: Path = SYSFS) -> KernelState:
    return KernelState(
        crash_loaded=read_crash_loaded(sysfs),
        verdicts=MappingProxyType({s: read_verdict(s, sysfs) for s in Subsystem}),
        elfcorehdr_size=_read_int(sysfs / "kernel" / "crash_elfcorehdr_size"),
        crash_size=_read_int(sysfs / "kernel" / "kexec_crash_size"),
    )


def topology(sysfs: Path = SYSFS, procfs: Path = PROCFS) -> str:
    """A fingerprint of what the crash kernel's elfcorehdr describes.

    The header has one PT_LOAD per "System RAM" range of /proc/iomem and one note per
    present CPU, so those two are hashed. /proc/iomem shows zero addresses to non-root
    readers; the fingerprint is then weaker (it still changes with the number of ranges)
    but consistent between two reads by the same user.
    """
    digest = hashlib.sha256()
    for name in ("present", "online"):
        try:
            digest.update((sysfs / "devices/system/cpu" / name).read_bytes())
        except OSError:
            digest.update(b"?")
        digest.update(b"\0")
    try:
        with (procfs / "iomem").open("rb") as iomem:
            for line in iomem:
                if b"System RAM" in line:
                    digest.update(line.strip())
                    digest.update(b"\0")
    except OSError:
        digest.update(b"?")
    return digest.hexdigest()[:16]
