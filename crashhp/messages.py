"""What goes into the engine (inputs) and what comes out of it (effects). Frozen values.

Every input carries the time (``now``, monotonic seconds) it happened at: the engine has
no clock. Every effect is carried out by exactly one module of the service shell:

=============  =============================================
``ReadKernel``  crashhp.kernel (answered with a ``KernelRead``)
``MakePlan``    crashhp.reload (answered with a ``Planned``)
``Spawn``       crashhp.process, under crashhp.lock (answered with an ``Exited``)
``Kill``        crashhp.process
``Unlock``      crashhp.lock
``Publish``     crashhp.notify (STATUS=) and crashhp.persist (state.json)
``Log``         crashhp.logs
``WakeAt``      the shell's selector timeout
=============  =============================================
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from crashhp.config import Config
from crashhp.model import KernelState, Uevent
from crashhp.process import Result
from crashhp.reload import Plan


class Purpose(enum.StrEnum):
    """Why the engine asked for a kernel read; the answer carries it back."""

    DECIDE = "decide"  # a burst (or a retry, or a request) is due
    SETTLE = "settle"  # one of the re-reads of a crash_hotplug 0
    LOAD_START = "load-start"  # just before a load: what its image will describe
    LOAD_END = "load-end"  # after the last step: did it load, did anything move
    POLL = "poll"  # unprotected, stale or not loaded: did someone else load one


# ---- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Uevents:
    now: float
    events: tuple[Uevent, ...]
    ignored: int = 0


@dataclass(frozen=True, slots=True)
class Lost:
    """Events were lost (receive-buffer overflow); ``seqnum`` is uevent_seqnum now."""

    now: float
    seqnum: int | None
    why: str


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class KernelRead:
    """The answer to ``ReadKernel``. ``seqnum`` (uevent_seqnum) is read before
    ``fingerprint``: every event up to it had changed the topology that was then read."""

    now: float
    purpose: Purpose
    state: KernelState
    fingerprint: str
    seqnum: int | None


@dataclass(frozen=True, slots=True)
class Planned:
    now: float
    plan: Plan | None
    error: str | None = None  # why there is no plan (reload.NoReloadMethod)
    upgrade_unavailable: str | None = None  # an upgrade was asked for and cannot be made


@dataclass(frozen=True, slots=True)
class Exited:
    """A command ended (or could not start, or the lock was busy: ``Result.busy``)."""

    now: float
    result: Result


@dataclass(frozen=True, slots=True)
class Reconfigured:
    now: float
    config: Config


@dataclass(frozen=True, slots=True)
class Request:
    """`crashhp reload` (decide once, now) or `crashhp upgrade` (make it hotplug-capable)."""

    now: float
    upgrade: bool = False


@dataclass(frozen=True, slots=True)
class Stop:
    now: float
    why: str = ""


Input = Uevents | Lost | Tick | KernelRead | Planned | Exited | Reconfigured | Request | Stop


# ---- effects --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadKernel:
    purpose: Purpose


@dataclass(frozen=True, slots=True)
class MakePlan:
    upgrade: bool


@dataclass(frozen=True, slots=True)
class Spawn:
    argv: tuple[str, ...]
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Kill:
    pass


@dataclass(frozen=True, slots=True)
class Unlock:
    pass


@dataclass(frozen=True, slots=True)
class Log:
    level: str  # debug, info, warning, error
    event: str
    fields: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Publish:
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class WakeAt:
    at: float | None  # None: nothing to wait for but fds and signals


Effect = ReadKernel | MakePlan | Spawn | Kill | Unlock | Log | Publish | WakeAt


# ---- what the engine publishes --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Image:
    """What the loaded crash kernel describes: the topology read just before its load.

    ``complete`` is False when the topology moved while it was being loaded: it then
    misses a change, whatever crash_hotplug says, and needs one more load.
    """

    fingerprint: str
    seqnum: int | None = None
    complete: bool = True


# A crash kernel someone else loaded at a moment crashhp cannot place among the changes:
# it describes an unknown topology (never equal to one read), and is loaded once more.
UNKNOWN = Image("", None, complete=False)


@dataclass(frozen=True, slots=True)
class Counters:
    events: int = 0
    synthetic: int = 0  # of ``events``: replays by `udevadm trigger` (SYNTH_UUID)
    ignored: int = 0
    overflows: int = 0
    reloads: int = 0  # successful loads
    failed_reloads: int = 0
    bursts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def burst(self, decision: str) -> Counters:
        counts = dict(self.bursts)
        counts[decision] = counts.get(decision, 0) + 1
        return replace(self, bursts=MappingProxyType(counts))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The engine's published state: STATUS=, state.json and the metrics textfile.

    protection: the one protection value (crashhp.model.Protection).
    phase: idle, coalescing, settling, reloading, backing-off or given-up.
    status: the one-line STATUS= text (crashhp.report).
    counters: events, synthetic, ignored, overflows, reloads, failed_reloads, and bursts
      by decision (the Reason values, "failed" for a burst whose reload failed).
    unprotected_s: cumulative seconds in which the engine knew no crash kernel was loaded
      (up to ``at``).
    last_reload_s: duration of the last load (all its steps), None before any.
    last_burst_to_protected_s: from the last event of the last burst that needed something
      to the moment the crash kernel described it again (0.0 when the kernel kept it).
    crash_hotplug: crash_hotplug per subsystem, as last read (Verdict values).
    layout: which kexec sysfs layout the kernel has (Layout values).
    image: what the loaded crash kernel describes; owed: a crash kernel is owed;
    upgrade_given_up: the hotplug-capable upgrade failed, not tried again until SIGHUP.
    """

    at: float
    protection: str
    phase: str
    status: str
    reloading: bool
    owed: bool
    upgrade_given_up: bool
    image: Image | None
    counters: Counters
    unprotected_s: float
    last_reload_s: float | None
    last_burst_to_protected_s: float | None
    last_burst: Mapping[str, Any] | None
    crash_hotplug: Mapping[str, str]
    crash_loaded: bool | None
    layout: str
    policy: str
    fadump: Mapping[str, bool] | None = None
