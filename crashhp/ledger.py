"""The engine's books: counters, times and the last burst, and the snapshot it publishes.
Pure: the engine passes the time in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from crashhp import report
from crashhp.messages import Counters, Snapshot
from crashhp.model import Burst, KernelState, Protection, Subsystem, Uevent

if TYPE_CHECKING:
    from crashhp.machine import Machine as Engine


class Ledger:
    def __init__(self) -> None:
        self.counters = Counters()
        self.state: KernelState | None = None  # the last read
        self.last_burst: dict[str, Any] | None = None
        self.last_reload_s: float | None = None
        self.last_burst_to_protected_s: float | None = None
        self.saw_unloaded = False  # STALE, and a poll found nothing loaded since
        self._unprotected_s = 0.0
        self._unprotected_since: float | None = None
        self._overflow_said = False  # monitor_overflow logged at warning for this burst

    def count_events(self, events: Sequence[Uevent], ignored: int) -> None:
        synthetic = sum(1 for e in events if e.synthetic)
        c = self.counters
        self.counters = replace(
            c,
            events=c.events + len(events),
            synthetic=c.synthetic + synthetic,
            ignored=c.ignored + ignored,
        )

    def count_overflow(self) -> bool:
        """One more overflow; True if it is the first of this burst."""
        self.counters = replace(self.counters, overflows=self.counters.overflows + 1)
        first = not self._overflow_said
        self._overflow_said = True
        return first

    def new_burst(self) -> None:
        self._overflow_said = False

    def count_failure(self) -> None:
        self.counters = replace(self.counters, failed_reloads=self.counters.failed_reloads + 1)

    def reloaded(self, duration_s: float) -> None:
        self.counters = replace(self.counters, reloads=self.counters.reloads + 1)
        self.last_reload_s = duration_s

    def protected_after(self, burst: Burst, now: float, seconds: float | None) -> None:
        if burst.events:
            self.last_burst_to_protected_s = (
                seconds if seconds is not None else max(0.0, now - burst.last_at)
            )

    def observe(self, state: KernelState, now: float) -> None:
        self.state = state
        if state.protected or state.crash_loaded is None:
            if self._unprotected_since is not None:
                self._unprotected_s += max(0.0, now - self._unprotected_since)
                self._unprotected_since = None
        elif self._unprotected_since is None:
            self._unprotected_since = now

    def unprotected_s(self, now: float) -> float:
        since = self._unprotected_since
        return self._unprotected_s + (max(0.0, now - since) if since is not None else 0.0)

    def summarize(
        self,
        burst: Burst,
        decision: str,
        action: str,
        now: float,
        *,
        reload_s: float | None,
        state: KernelState | None,
    ) -> dict[str, Any]:
        """The one summary line of a burst (the ``burst`` log event), counted by decision."""
        state = state or self.state
        self.counters = self.counters.burst(decision)
        summary: dict[str, Any] = {
            "events": burst.events,
            "synthetic": burst.synthetic,
            "subsystems": sorted(s.value for s in burst.subsystems),
            "verdicts": {s.value: state.verdict(s).value for s in Subsystem} if state else {},
            "crash_loaded": state.crash_loaded if state else None,
            "decision": decision,
            "action": action,
            "coalesce_ms": round((now - burst.first_at) * 1000, 1) if burst.events else 0.0,
            "since_last_event_ms": round((now - burst.last_at) * 1000, 1) if burst.events else 0.0,
            "reload_ms": None if reload_s is None else round(reload_s * 1000, 1),
            "last_seqnum": burst.max_seqnum,
        }
        self.last_burst = summary
        return summary

    def snapshot(self, engine: Engine, now: float) -> Snapshot:
        state = self.state or KernelState(crash_loaded=None)
        phase = engine.phase
        running = getattr(phase, "plan", None)
        return Snapshot(
            at=now,
            protection=engine.protection.value,
            phase=phase.name,
            status=status_line(engine, state, now),
            reloading=running is not None,
            owed=engine.owed,
            upgrade_given_up=engine.upgrade_given_up,
            image=engine.image,
            counters=self.counters,
            unprotected_s=round(self.unprotected_s(now), 3),
            last_reload_s=self.last_reload_s,
            last_burst_to_protected_s=self.last_burst_to_protected_s,
            last_burst=MappingProxyType(dict(self.last_burst)) if self.last_burst else None,
            crash_hotplug=MappingProxyType({s.value: state.verdict(s).value for s in Subsystem}),
            crash_loaded=state.crash_loaded,
            layout=state.layout.value,
            policy=engine.config.policy.value,
            fadump=None
            if state.fadump is None
            else MappingProxyType(
                {
                    "enabled": state.fadump.enabled,
                    "registered": state.fadump.registered,
                    "hotplug_ready": state.fadump.hotplug_ready,
                }
            ),
        )


def status_line(engine: Engine, state: KernelState, now: float) -> str:
    phase = engine.phase
    plan = getattr(phase, "plan", None)
    if plan is not None and getattr(phase, "start", None) is not None:
        return report.status_line(
            report.Assessment(report.Exit.OK, ""),
            policy=engine.config.policy,
            reloads=0,
            reloading=plan.method.value,
        )
    if engine.protection is Protection.NO_KEXEC:
        prefix = "policy never (observing only); " if engine.config.policy.value == "never" else ""
        return prefix + "kernel has no kexec support; nothing to protect"
    assessment = report.assess(
        state,
        engine.protection,
        policy=engine.config.policy,
        method_error=None,
        running=True,
        rules=engine.rules,
    )
    until = getattr(phase, "until", None)
    retry = until - now if until is not None and phase.name == "backing-off" else None
    return report.status_line(
        assessment,
        policy=engine.config.policy,
        reloads=engine.ledger.counters.reloads,
        retry_in_s=retry,
    )
