"""Coalescing uevents into bursts. Pure: the caller passes the time in."""

from __future__ import annotations

from crashhp.model import Burst, Subsystem


class Coalescer:
    """Turns a stream of events into bursts.

    A burst is due ``quiet_s`` after its last event, and at the latest ``max_delay_s``
    after its first, so that an endless storm still converges. Events only mark the
    state dirty: nothing here depends on seeing every event.
    """

    def __init__(self, quiet_s: float, max_delay_s: float) -> None:
        self.retune(quiet_s, max_delay_s)
        self._events = 0
        self._subsystems: set[Subsystem] = set()
        self._first = 0.0
        self._last = 0.0

    def retune(self, quiet_s: float, max_delay_s: float) -> None:
        """New timings; a pending burst keeps its events and is due by the new ones."""
        if quiet_s < 0 or max_delay_s < quiet_s:
            raise ValueError("need 0 <= quiet_s <= max_delay_s")
        self.quiet_s = quiet_s
        self.max_delay_s = max_delay_s

    @property
    def pending(self) -> bool:
        return self._events > 0

    def add(self, now: float, subsystem: Subsystem, count: int = 1) -> None:
        """Record ``count`` events of ``subsystem`` seen at ``now``."""
        if count <= 0:
            return
        if not self._events:
            self._first = now
        self._events += count
        self._last = max(self._last, now)
        self._subsystems.add(subsystem)

    def deadline(self) -> float | None:
        """When the pending burst is due, or None when nothing is pending."""
        if not self._events:
            return None
        return min(self._last + self.quiet_s, self._first + self.max_delay_s)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def take(self) -> Burst:
        """Hand over the pending burst and start a new one."""
        burst = Burst(
            events=self._events,
            subsystems=frozenset(self._subsystems),
            first_at=self._first,
            last_at=self._last,
        )
        self._events = 0
        self._subsystems = set()
        self._first = self._last = 0.0
        return burst
