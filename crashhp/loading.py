"""The engine's loads: plan, lock, each step, the check afterwards, the fall-back of an
upgrade, backoff and giving up. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import replace

from crashhp import reload
from crashhp.coalesce import Gathering
from crashhp.machine import BUSY_RETRY_S, POLL_S, Machine, _ms, protection_of, state_fields
from crashhp.messages import Exited, Image, KernelRead, Planned, Purpose, ReadKernel, Spawn, Unlock
from crashhp.model import Protection
from crashhp.phase import BackingOff, Coalescing, GivenUp, Reloading


class Loading(Machine):
    def _on_planned(self, planned: Planned) -> None:
        phase = self.phase
        if not isinstance(phase, Reloading) or phase.plan is not None:
            return
        if planned.upgrade_unavailable:
            self.upgrade_given_up = True
            self._log("warning", "upgrade_unavailable", reason=planned.upgrade_unavailable)
        if planned.plan is None:
            why = planned.error or "no reload method"
            self.ledger.count_failure()
            self.protection = Protection.STALE if self._loaded() else Protection.UNPROTECTED
            self._log("error", "reload_failed", text=f"cannot reload: {why}", reason=why)
            self._summary(phase.burst, "failed", "failed", planned.now)
            self.phase = Coalescing(phase.queued) if phase.queued else GivenUp(planned.now + POLL_S)
            self.publish(planned.now)
            return
        self.phase = replace(phase, plan=planned.plan)
        self._out.append(ReadKernel(Purpose.LOAD_START))

    def _on_exited(self, exited: Exited) -> None:
        phase = self.phase
        if not isinstance(phase, Reloading) or phase.plan is None or not phase.running:
            return
        now, result = exited.now, exited.result
        if result.busy:
            # `crashhp reload` or `upgrade` is running by hand: not a failure, wait for it.
            self._log("info", "reload_waiting", reason=result.error, retry_in_s=BUSY_RETRY_S)
            self.phase = BackingOff(phase.burst, now + BUSY_RETRY_S, busy=True, queued=phase.queued)
            self.publish(now)
            return
        if result.ok and phase.step + 1 < len(phase.plan.steps):
            self.phase = replace(
                phase,
                step=phase.step + 1,
                killed=False,
                deadline=now + self.config.reload.timeout_s,
            )
            self._out.append(Spawn(phase.plan.steps[phase.step + 1], self.config.reload.timeout_s))
            return
        self.phase = replace(phase, result=result, deadline=None)
        self._out.append(ReadKernel(Purpose.LOAD_END))

    def _begin(self, phase: Reloading, plan: reload.Plan, read: KernelRead) -> None:
        now = read.now
        timeout = self.config.reload.timeout_s
        self.phase = replace(
            phase,
            start=read,
            started_at=now,
            step=0,
            deadline=now + timeout,
            killed=False,
            result=None,
        )
        burst = phase.burst
        self._log(
            "info",
            "reload_started",
            purpose=plan.purpose,
            method=plan.method.value,
            command=plan.describe(),
            reason=phase.reason.value,
            events=burst.events,
            attempt=self.failures + 1,
            since_last_event_ms=_ms(now - burst.last_at) if burst.events else 0.0,
        )
        self.publish(now)
        self._out.append(Spawn(plan.steps[0], timeout))

    def _finish(self, phase: Reloading, read: KernelRead) -> None:
        plan, result, start = phase.plan, phase.result, phase.start
        if plan is None or result is None or start is None:
            return
        now, state = read.now, read.state
        self._out.append(Unlock())
        duration = now - (phase.started_at or now)
        if not (result.ok and state.protected):
            self._failed(phase, read, duration)
            return
        queued = phase.queued
        moved_by_events = (
            queued is not None
            and queued.events > queued.synthetic
            and (
                queued.max_seqnum is None
                or start.seqnum is None
                or queued.max_seqnum > start.seqnum
            )
        )
        raced = read.fingerprint != start.fingerprint or moved_by_events
        self.image = Image(start.fingerprint, start.seqnum, complete=not raced)
        was = self.protection
        self.failures, self.owed = 0, False
        self.protection = protection_of(state)
        keeps = state.kernel_keeps_current
        if plan.purpose == "upgrade" and not keeps:
            self.upgrade_given_up = True
            self._log(
                "warning",
                "upgrade_ineffective",
                text="hotplug-capable load done but crash_hotplug still reads 0",
            )
        self.upgrade_wanted = False
        self.ledger.reloaded(duration)
        if not raced:
            self.ledger.protected_after(phase.burst, now, None)
        done = "upgraded" if plan.purpose == "upgrade" else "reloaded"
        self._log(
            "info",
            "reload_done",
            purpose=plan.purpose,
            kernel_keeps_current=keeps,
            text=f"crash kernel {done} ({plan.method.value}, {duration * 1000:.0f} ms)",
            method=plan.method.value,
            duration_ms=_ms(duration),
            raced=raced,
            reloads=self.ledger.counters.reloads,
            **state_fields(state),
        )
        if was in (Protection.UNPROTECTED, Protection.STALE):
            self._recovered(now, f"reload by {plan.method.value} succeeded")
        self._summary(
            phase.burst, phase.reason.value, "reload", now, reload_s=duration, state=state
        )
        if raced:
            self._log(
                "warning",
                "load_raced",
                text="the topology changed while the crash kernel "
                "was being loaded: it misses that change; loading it once more",
            )
            self.phase = Coalescing(queued or Gathering.everything(now, forced=True))
        else:
            self.phase = Coalescing(queued) if queued else self._rest(now)
        self.publish(now)

    def _failed(self, phase: Reloading, read: KernelRead, duration: float) -> None:
        result, plan = phase.result, phase.plan
        if result is None or plan is None:
            return
        now, state = read.now, read.state
        loaded = state.protected
        why = result.describe() if not result.ok else "the crash kernel is not loaded afterwards"
        self.ledger.count_failure()
        output = result.output[-500:] or None
        if plan.fallback is not None:
            # Never leave the machine without a crash kernel for an upgrade: load it the
            # way it was loaded before, at once.
            self.upgrade_given_up = True
            self._log(
                "warning",
                "upgrade_failed",
                reason=why,
                output=output,
                crash_loaded=loaded,
                text=f"hotplug-capable load failed ({why}); loading it the previous way",
            )
            self.phase = Reloading(
                phase.burst, phase.reason, False, plan=plan.fallback, queued=phase.queued
            )
            self._out.append(ReadKernel(Purpose.LOAD_START))
            return
        self.failures += 1
        retries = self.config.reload.retries
        retry_in = (
            reload.backoff_s(self.config.reload, self.failures)
            if self.failures <= retries
            else None
        )
        self._log(
            "error",
            "reload_failed",
            text=f"crash kernel reload failed: {why}",
            reason=why,
            output=output,
            attempt=self.failures,
            retry_in_s=retry_in,
            crash_loaded=loaded,
        )
        if loaded:
            self.protection = Protection.STALE
        else:
            first = self.protection is not Protection.UNPROTECTED
            self.owed, self.protection = True, Protection.UNPROTECTED
            if first:
                self._log(
                    "error",
                    "unprotected",
                    reason=why,
                    text="no crash kernel is loaded: a crash now would not be dumped",
                )
        self._summary(phase.burst, "failed", "failed", now, reload_s=duration, state=state)
        if retry_in is not None:
            self.phase = BackingOff(phase.burst, now + retry_in, queued=phase.queued)
            self.publish(now)
            return
        attempts, self.failures = self.failures, 0
        self.phase = Coalescing(phase.queued) if phase.queued else GivenUp(now + POLL_S)
        self.publish(now)  # state.json first: whoever reacts to the line must see it
        self._log(
            "error",
            "reload_given_up",
            attempts=attempts,
            text=f"giving up after {attempts} attempts until the next event "
            "or `systemctl reload crashhp`",
        )
