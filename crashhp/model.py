"""Frozen value types shared by the pure core and the I/O edges."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType


class Subsystem(enum.StrEnum):
    """The hotplug subsystems whose changes make the crash header stale."""

    CPU = "cpu"
    MEMORY = "memory"


class Verdict(enum.StrEnum):
    """What ``/sys/devices/system/<subsystem>/crash_hotplug`` says."""

    KERNEL_UPDATES = "kernel-updates"  # reads 1
    NEEDS_RELOAD = "needs-reload"  # reads 0 (may be a busy kexec lock: confirm)
    ABSENT = "absent"  # no such file: kernel without crash hotplug support
    UNREADABLE = "unreadable"  # exists but cannot be read (0400 before 6.11 when not root)

    @property
    def kernel_updates(self) -> bool:
        return self is Verdict.KERNEL_UPDATES


class Policy(enum.StrEnum):
    """Admin override of the kernel's verdict."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


EVENT_ACTIONS: frozenset[str] = frozenset({"add", "remove", "online", "offline"})


class Layout(enum.StrEnum):
    """Where the kernel publishes its kexec facts."""

    KEXEC_DIR = "kexec-dir"  # /sys/kernel/kexec/{crash_loaded,crash_size,...} (6.19/7.0 on)
    LEGACY = "legacy"  # /sys/kernel/kexec_crash_loaded and siblings (obsolete since 6.19)
    NONE = "none"  # neither: no kexec support


@dataclass(frozen=True, slots=True)
class Fadump:
    """``/sys/kernel/fadump/*``: firmware-assisted dump (ppc64), which protects the machine
    without a kexec crash kernel (``kexec_crash_loaded`` reads 0 then)."""

    enabled: bool
    registered: bool
    hotplug_ready: bool  # the kernel updates fadump's view itself (6.10 and later)

    @property
    def protects(self) -> bool:
        return self.enabled and self.registered


@dataclass(frozen=True, slots=True)
class KernelState:
    """One read of the kernel files that a decision needs.

    ``crash_loaded`` is None when the kernel has no kexec support at all
    (``/sys/kernel/kexec_crash_loaded`` absent).
    """

    crash_loaded: bool | None
    verdicts: Mapping[Subsystem, Verdict] = field(
        default_factory=lambda: MappingProxyType({s: Verdict.ABSENT for s in Subsystem})
    )
    elfcorehdr_size: int | None = None
    crash_size: int | None = None
    layout: Layout = Layout.LEGACY
    fadump: Fadump | None = None

    @property
    def protected(self) -> bool:
        """A crash now would be dumped: a crash kernel is loaded, or fadump is registered."""
        return bool(self.crash_loaded) or (self.fadump is not None and self.fadump.protects)

    @property
    def kernel_keeps_current(self) -> bool:
        """Every subsystem's crash_hotplug reads 1."""
        return all(self.verdict(s) is Verdict.KERNEL_UPDATES for s in Subsystem)

    def verdict(self, subsystem: Subsystem) -> Verdict:
        return self.verdicts.get(subsystem, Verdict.ABSENT)

    def seen_updating(self, subsystems: Iterable[Subsystem]) -> KernelState:
        """This state with ``subsystems`` read as 1 at some point of the settle time.

        A 1 is the truth (it needs a loaded hotplug-capable image); a 0 read around it
        was the kernel's busy kexec lock.
        """
        updating = frozenset(subsystems)
        if not updating:
            return self
        verdicts = {
            s: Verdict.KERNEL_UPDATES if s in updating else self.verdict(s) for s in Subsystem
        }
        return replace(self, verdicts=MappingProxyType(verdicts))


@dataclass(frozen=True, slots=True)
class Burst:
    """What a coalesced burst of uevents amounted to."""

    events: int
    subsystems: frozenset[Subsystem]
    first_at: float
    last_at: float
    # The highest SEQNUM in it; None when some of it has none (a resync after lost events).
    max_seqnum: int | None = None
    removes_memory: bool = False  # a memory `remove`: never covered by an earlier load
    synthetic: int = 0  # events with SYNTH_UUID (`udevadm trigger`)


@dataclass(frozen=True, slots=True)
class Uevent:
    """One relevant uevent, as the uevent source hands it over."""

    action: str
    subsystem: Subsystem
    sys_name: str
    seqnum: int
    synthetic: bool = False  # SYNTH_UUID set: `udevadm trigger`, not a change


class Protection(enum.StrEnum):
    """Would a crash now give a complete dump? The engine's one protection value."""

    PROTECTED = "protected"  # loaded, and it describes the current topology
    FADUMP = "fadump"  # firmware-assisted dump registered (ppc64): no kexec crash kernel
    NOT_LOADED = "not-loaded"  # nothing loaded, and not by our doing
    UNPROTECTED = "unprotected"  # our reload left no crash kernel loaded
    STALE = "stale"  # loaded, but a needed reload failed: the header is out of date
    NO_KEXEC = "no-kexec"


_PART = 8  # hex digits of each part of a topology fingerprint


def fingerprint(cpu_digest: str, memory_digest: str) -> str:
    """A topology fingerprint: the CPU part, then the RAM part (hex digests, truncated)."""
    return cpu_digest[:_PART] + memory_digest[:_PART]


def changed_parts(recorded: str, current: str) -> frozenset[Subsystem]:
    """The subsystems whose part of the fingerprint differs (all, if one is malformed)."""
    if len(recorded) != 2 * _PART or len(current) != 2 * _PART:
        return frozenset(Subsystem) if recorded != current else frozenset()
    changed = set()
    if recorded[:_PART] != current[:_PART]:
        changed.add(Subsystem.CPU)
    if recorded[_PART:] != current[_PART:]:
        changed.add(Subsystem.MEMORY)
    return frozenset(changed)
