"""The engine: when to reload the crash kernel. Pure: inputs in, effects out; no I/O, no
clock (every input carries ``now``).

One phase (crashhp.phase) and one protection value. The rule (crashhp.decision): an image
describes the topology read just before its load started. So the fingerprint and
uevent_seqnum are read when a load starts (``Purpose.LOAD_START``) and again at its end
(``LOAD_END``); when they moved during the load, or an event came in that the kernel sent
after the load started, one more load follows whatever crash_hotplug says afterwards.
"""

from __future__ import annotations

from dataclasses import replace

from crashhp.coalesce import Gathering, gather
from crashhp.decision import Action, Facts, Reason, decide
from crashhp.kernel import SETTLE_READ_INTERVAL_S
from crashhp.loading import Loading
from crashhp.machine import BUSY_RETRY_S, POLL_S, _names, protection_of, timing
from crashhp.messages import (
    Effect,
    Exited,
    Image,
    Input,
    KernelRead,
    Kill,
    Lost,
    MakePlan,
    Planned,
    Purpose,
    ReadKernel,
    Reconfigured,
    Request,
    Stop,
    Tick,
    Uevents,
    WakeAt,
)
from crashhp.model import Burst, Protection, Subsystem, changed_parts
from crashhp.phase import BackingOff, Coalescing, GivenUp, Idle, Reloading, Settling

_SKIP_EVENTS = {Reason.KERNEL_HANDLES: "kernel_handles", Reason.NOT_LOADED: "not_loaded"}

__all__ = ["BUSY_RETRY_S", "POLL_S", "Engine", "protection_of", "timing"]


class Engine(Loading):
    """Feed it inputs with :meth:`handle`; carry out the effects it returns, in order."""

    # ---- the interface ----------------------------------------------------------------

    def handle(self, event: Input) -> list[Effect]:
        self._out = []
        match event:
            case Uevents():
                self._on_uevents(event)
            case Lost():
                self._on_lost(event)
            case Tick():
                self._on_tick(event.now)
            case KernelRead():
                self._on_read(event)
            case Planned():
                self._on_planned(event)
            case Exited():
                self._on_exited(event)
            case Reconfigured():
                self._on_reconfigured(event)
            case Request():
                self._on_request(event)
            case Stop():
                self.stopping = True
                waiting = isinstance(self.phase, Reloading)
                self._log("info", "daemon_stopping", signal=event.why, waiting_for_reload=waiting)
        self._out.append(WakeAt(self.wake_at()))
        return self._out

    @property
    def finished(self) -> bool:
        """Stopping was asked for and no reload is under way any more."""
        return self.stopping and not isinstance(self.phase, Reloading)

    def wake_at(self) -> float | None:
        phase = self.phase
        if isinstance(phase, Reloading):
            return phase.deadline if phase.running and not phase.killed else None
        if self.stopping:
            return None
        match phase:
            case Coalescing(gathering=g):
                return g.due_at(self.timing)
            case Settling(next_read=at):
                return at
            case BackingOff(until=until, queued=queued):
                return until if queued is None else min(until, queued.due_at(self.timing))
            case Idle(poll_at=at) | GivenUp(poll_at=at):
                return at
        return None

    # ---- inputs -----------------------------------------------------------------------

    def _on_uevents(self, event: Uevents) -> None:
        self.ledger.count_events(event.events, event.ignored)
        for ev in event.events:
            self._gather(event.now, ev.subsystem, ev.seqnum, ev.action, ev.synthetic)
        if event.events:
            last = event.events[-1]
            self._log(
                "debug",
                "uevents",
                count=len(event.events),
                last_action=last.action,
                last_device=last.sys_name,
                last_seqnum=last.seqnum,
            )

    def _on_lost(self, event: Lost) -> None:
        first = self.ledger.count_overflow()
        for sub in Subsystem:  # whatever was lost, the kernel had sent it by now
            self._gather(event.now, sub, event.seqnum or None, "", False)
        # A storm into a small buffer overflows it again right after each rebuild: say it
        # once per burst (state.json's counters.overflows has them all).
        self._log(
            "warning" if first else "debug",
            "monitor_overflow",
            reason=event.why,
            overflows=self.ledger.counters.overflows,
        )

    def _gather(self, now: float, sub: Subsystem, seq: int | None, act: str, syn: bool) -> None:
        match self.phase:
            case Idle() | GivenUp():
                self.phase = Coalescing(gather(None, now, sub, seq, action=act, synthetic=syn))
            case Coalescing(gathering=g):
                self.phase = Coalescing(gather(g, now, sub, seq, action=act, synthetic=syn))
            case Settling() | Reloading() | BackingOff() as p:
                queued = gather(p.queued, now, sub, seq, action=act, synthetic=syn)
                self.phase = replace(p, queued=queued)

    def _on_tick(self, now: float) -> None:
        phase = self.phase
        if isinstance(phase, Reloading):
            if phase.running and not phase.killed and phase.deadline <= now:  # type: ignore[operator]
                self.phase = replace(phase, killed=True)
                self._out.append(Kill())
            return
        at = self.wake_at()
        if at is None or now < at:
            return
        match phase:
            case Settling():
                self._out.append(ReadKernel(Purpose.SETTLE))
            case Coalescing() | BackingOff():
                self._out.append(ReadKernel(Purpose.DECIDE))
            case Idle() | GivenUp():
                self._out.append(ReadKernel(Purpose.POLL))

    def _on_read(self, read: KernelRead) -> None:
        before = self.protection
        self._observe(read)
        phase = self.phase
        match (read.purpose, phase):
            case (Purpose.DECIDE, Coalescing(gathering=g)):
                self.phase = Idle()
                self._decide(g.burst(), read, confirmed=False, queued=None)
            case (Purpose.DECIDE, BackingOff(burst=burst, until=until, queued=queued)):
                merged = Gathering.of(burst).merge(queued).burst() if queued else burst
                self.phase = Idle()
                self._decide(merged, read, confirmed=read.now >= until, queued=None)
            case (Purpose.SETTLE, Settling()):
                self._settle(phase, read)
            case (Purpose.LOAD_START, Reloading(plan=plan, start=None)) if plan is not None:
                self._begin(phase, plan, read)
            case (Purpose.LOAD_END, Reloading(result=result)) if result is not None:
                self._finish(phase, read)
            case (Purpose.POLL, Idle() | GivenUp()):
                self._poll(read, before)

    def _on_reconfigured(self, event: Reconfigured) -> None:
        self.config = event.config
        self.timing = timing(event.config)
        self.upgrade_given_up = False
        if isinstance(self.phase, Idle | GivenUp) and self.protection in (
            Protection.UNPROTECTED,
            Protection.STALE,
        ):
            # A reload that was given up on is tried again now (reload_given_up says so).
            # Only from rest: a burst already on its way decides anyway (one reload).
            everything = Gathering.everything(event.now).burst()
            self.phase = BackingOff(everything, event.now)
        self.publish(event.now)

    def _on_request(self, event: Request) -> None:
        self.upgrade_wanted = event.upgrade
        if isinstance(self.phase, Idle | GivenUp):
            self.phase = Coalescing(Gathering.everything(event.now, forced=True))

    # ---- deciding ---------------------------------------------------------------------

    def _facts(self, burst: Burst, read: KernelRead) -> tuple[Facts, frozenset[Subsystem]]:
        """What is known beyond the kernel's files, and the subsystems that changed.

        The subsystems whose part of the fingerprint moved since the image was loaded are
        the truth (events are hints: some may be lost, some replays). A memory ``remove``
        is never covered by an earlier load: its uevents come before its range leaves
        /proc/iomem, so a load started in between read the range.
        """
        image = self.image
        if image is None or self.upgrade_wanted:
            raced = image is not None and not image.complete
            return Facts(owed=self.owed, raced=raced), burst.subsystems
        moved = changed_parts(image.fingerprint, read.fingerprint)
        covered = (
            not burst.removes_memory
            and burst.max_seqnum is not None
            and image.seqnum is not None
            and 0 < burst.max_seqnum <= image.seqnum
        )
        facts = Facts(
            owed=self.owed, raced=not image.complete, unchanged=not moved, covered=covered
        )
        return facts, (burst.subsystems | moved) if not image.complete else moved

    def _decide(
        self, burst: Burst, read: KernelRead, *, confirmed: bool, queued: Gathering | None
    ) -> None:
        now, state = read.now, read.state
        self.ledger.new_burst()
        facts, changed = self._facts(burst, read)
        decision = decide(
            changed or burst.subsystems,
            state,
            self.config.policy,
            confirmed=confirmed,
            facts=facts,
            rules=self.rules,
        )
        if decision.action is Action.CONFIRM:
            until = now + self.timing.settle_s
            reads = int(self.timing.settle_s / SETTLE_READ_INTERVAL_S)
            nxt = min(until, now + SETTLE_READ_INTERVAL_S)
            self.phase = Settling(burst, decision.stale, until, nxt, reads, queued=queued)
            self._log("debug", "settling", stale=list(decision.stale), text=decision.text)
            self.publish(now)
            return
        if decision.action is Action.RELOAD:
            upgrade = (
                decision.reason is Reason.KERNEL_SAYS_RELOAD
                and (self.config.kexec.upgrade or self.upgrade_wanted)
                and not self.upgrade_given_up
            )
            self.phase = Reloading(burst, decision.reason, upgrade, queued=queued)
            self._out.append(MakePlan(upgrade))
            return
        reason = decision.reason
        if reason is Reason.KERNEL_HANDLES or (reason is Reason.UNCHANGED and self.image):
            # The kernel kept the loaded image current, or it already describes this.
            self.image = Image(read.fingerprint, read.seqnum, complete=True)
        if state.protected and reason in (
            Reason.KERNEL_HANDLES,
            Reason.UNCHANGED,
            Reason.COVERED,
            Reason.FADUMP_HANDLES,
        ):
            was = self.protection
            self.failures, self.owed = 0, False
            self.protection = protection_of(state)
            if was in (Protection.UNPROTECTED, Protection.STALE):
                self._recovered(now, "nothing is owed any more")
        if reason is Reason.KERNEL_HANDLES:
            self.ledger.protected_after(burst, now, 0.0)
        self.upgrade_wanted = False
        self._log(
            "info",
            _SKIP_EVENTS.get(reason, "reload_skipped"),
            reason=reason.value,
            text=decision.text,
            events=burst.events,
            subsystems=_names(burst),
        )
        self._summary(burst, reason.value, "none", now, state=state)
        self.phase = Coalescing(queued) if queued else self._rest(now)
        self.publish(now)

    def _settle(self, phase: Settling, read: KernelRead) -> None:
        """One of the re-reads of a 0; the last one decides, counting any 1 seen.

        The window is counted in reads at least SETTLE_READ_INTERVAL_S apart as well as
        in time: on a starved CPU a late wake-up must not shrink it to a single read.
        """
        now = read.now
        if now < phase.until or phase.reads_left > 0:
            seen = phase.seen_updating | {
                s for s in phase.stale if read.state.verdict(s).kernel_updates
            }
            left = phase.reads_left - 1
            nxt = now + SETTLE_READ_INTERVAL_S
            self.phase = replace(
                phase,
                seen_updating=frozenset(seen),
                reads_left=left,
                next_read=max(phase.until, nxt) if left <= 0 else nxt,
            )
            return
        self.phase = Idle()
        seen_read = replace(read, state=read.state.seen_updating(phase.seen_updating))
        self._decide(phase.burst, seen_read, confirmed=True, queued=phase.queued)
