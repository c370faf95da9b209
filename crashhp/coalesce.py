"""Coalescing uevents into bursts: a part of the engine. Pure: the caller passes the time.

A burst is due ``quiet_s`` after its last event, and at the latest ``max_delay_s`` after
its first, so that an endless storm still converges. Events only mark the state dirty:
nothing here depends on seeing every event.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from crashhp.model import Burst, Subsystem


@dataclass(frozen=True, slots=True)
class Timing:
    quiet_s: float
    max_delay_s: float
    settle_s: float

    def __post_init__(self) -> None:
        if self.quiet_s < 0 or self.max_delay_s < self.quiet_s or self.settle_s < 0:
            raise ValueError("need 0 <= quiet_s <= max_delay_s and settle_s >= 0")


@dataclass(frozen=True, slots=True)
class Gathering:
    """The burst being gathered: an immutable value, each event gives a new one."""

    first_at: float
    last_at: float
    events: int = 0
    subsystems: frozenset[Subsystem] = frozenset()
    max_seqnum: int | None = 0  # None: some event had no SEQNUM (a resync)
    removes_memory: bool = False
    synthetic: int = 0
    forced: bool = False  # due at once: a request, or a follow-up reload

    @classmethod
    def everything(cls, now: float, *, forced: bool = False) -> Gathering:
        """A burst of every subsystem with no SEQNUM: a start-up, a resync, a request."""
        return cls(now, now, 0, frozenset(Subsystem), None, forced=forced)

    def add(
        self,
        now: float,
        subsystem: Subsystem,
        seqnum: int | None,
        *,
        action: str = "",
        synthetic: bool = False,
        count: int = 1,
    ) -> Gathering:
        if seqnum is None or not seqnum or self.max_seqnum is None:
            top: int | None = None
        else:
            top = max(self.max_seqnum, seqnum)
        return replace(
            self,
            last_at=max(self.last_at, now),
            events=self.events + count,
            subsystems=self.subsystems | {subsystem},
            max_seqnum=top,
            removes_memory=self.removes_memory
            or (subsystem is Subsystem.MEMORY and action == "remove"),
            synthetic=self.synthetic + (count if synthetic else 0),
        )

    def merge(self, other: Gathering) -> Gathering:
        top = (
            None
            if self.max_seqnum is None or other.max_seqnum is None
            else max(self.max_seqnum, other.max_seqnum)
        )
        return Gathering(
            min(self.first_at, other.first_at),
            max(self.last_at, other.last_at),
            self.events + other.events,
            self.subsystems | other.subsystems,
            top,
            self.removes_memory or other.removes_memory,
            self.synthetic + other.synthetic,
            self.forced or other.forced,
        )

    def due_at(self, timing: Timing) -> float:
        if self.forced:
            return self.first_at
        return min(self.last_at + timing.quiet_s, self.first_at + timing.max_delay_s)

    def burst(self) -> Burst:
        return Burst(
            events=self.events,
            subsystems=self.subsystems or frozenset(Subsystem),
            first_at=self.first_at,
            last_at=self.last_at,
            max_seqnum=self.max_seqnum,
            removes_memory=self.removes_memory,
            synthetic=self.synthetic,
        )

    @classmethod
    def of(cls, burst: Burst) -> Gathering:
        return cls(
            burst.first_at,
            burst.last_at,
            burst.events,
            burst.subsystems,
            burst.max_seqnum,
            burst.removes_memory,
            burst.synthetic,
        )


def gather(
    pending: Gathering | None,
    now: float,
    subsystem: Subsystem,
    seqnum: int | None,
    *,
    action: str = "",
    synthetic: bool = False,
) -> Gathering:
    """``pending`` with one more event (a new gathering when there is none)."""
    base = pending if pending is not None else Gathering(now, now)
    return base.add(now, subsystem, seqnum, action=action, synthetic=synthetic)
