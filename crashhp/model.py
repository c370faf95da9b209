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
