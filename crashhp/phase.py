"""The engine's one phase: a tagged union of frozen values.

Idle -> Coalescing (events) -> Settling (a crash_hotplug 0 is re-read) -> Reloading ->
Idle, or BackingOff (a failed reload, retried) -> ... -> GivenUp (retries exhausted; the
next event or SIGHUP tries again). Events that arrive while settling, reloading or backing
off are gathered in the phase's ``queued`` and become the next Coalescing.
"""

from __future__ import annotations

from dataclasses import dataclass

from crashhp.coalesce import Gathering
from crashhp.decision import Reason
from crashhp.messages import KernelRead
from crashhp.model import Burst, Subsystem
from crashhp.process import Result
from crashhp.reload import Plan


@dataclass(frozen=True, slots=True)
class Idle:
    poll_at: float | None = None  # not protected: look again whether someone loaded one
    name: str = "idle"


@dataclass(frozen=True, slots=True)
class Coalescing:
    gathering: Gathering
    name: str = "coalescing"


@dataclass(frozen=True, slots=True)
class Settling:
    burst: Burst
    stale: tuple[Subsystem, ...]  # the subsystems whose file read 0
    until: float
    next_read: float
    reads_left: int  # re-reads still owed, however late the loop gets to them
    seen_updating: frozenset[Subsystem] = frozenset()  # read 1 at least once
    queued: Gathering | None = None
    name: str = "settling"


@dataclass(frozen=True, slots=True)
class Reloading:
    burst: Burst
    reason: Reason
    upgrade: bool  # the hotplug-capable plan was asked for
    plan: Plan | None = None  # None until MakePlan is answered
    start: KernelRead | None = None  # the read just before the load: what it describes
    started_at: float | None = None
    step: int = 0
    deadline: float | None = None  # the running step's timeout
    killed: bool = False
    result: Result | None = None  # the last step's, waiting for the LOAD_END read
    queued: Gathering | None = None
    name: str = "reloading"

    @property
    def running(self) -> bool:
        return self.deadline is not None


@dataclass(frozen=True, slots=True)
class BackingOff:
    burst: Burst
    until: float
    busy: bool = False  # the reload lock was held by `crashhp reload`: not a failure
    queued: Gathering | None = None
    name: str = "backing-off"


@dataclass(frozen=True, slots=True)
class GivenUp:
    poll_at: float | None = None
    name: str = "given-up"


Phase = Idle | Coalescing | Settling | Reloading | BackingOff | GivenUp
