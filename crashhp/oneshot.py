"""`crashhp reload` and `crashhp upgrade`: the daemon's engine, driven once, in the
foreground. The decision, the settle, the run of each step, the check that a crash kernel
is loaded afterwards and the upgrade's fall-back are the engine's, as in the daemon."""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crashhp import kernel, persist
from crashhp.arch import rules as arch_rules
from crashhp.config import Config
from crashhp.engine import Engine, protection_of
from crashhp.messages import Image, Log, MakePlan, Planned, Publish, Purpose, Request, Tick
from crashhp.model import Policy
from crashhp.phase import GivenUp, Idle
from crashhp.process import Runner
from crashhp.reload import Plan
from crashhp.runtime import runtime_dir
from crashhp.shell import Shell


@dataclass
class Outcome:
    decision: str = ""  # the Reason value of the burst, "failed", or "" if none was made
    action: str = ""  # none, reload, failed
    text: str = ""
    plans: list[Plan] = field(default_factory=list)  # what ran (or would run, dry-run)
    events: list[Log] = field(default_factory=list)
    crash_loaded: bool | None = None
    keeps_current: bool = False
    cannot_upgrade: str | None = None


class OneShot(Shell):
    def __init__(
        self,
        config: Config,
        *,
        upgrade: bool = False,
        dry_run: bool = False,
        reader: kernel.Reader | None = None,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        runner: Runner | None = None,
    ) -> None:
        super().__init__(
            state_dir or runtime_dir(), reader=reader or kernel.Reader(), clock=clock, runner=runner
        )
        if upgrade:
            config = config.model_copy(update={"policy": Policy.AUTO})
        # Once: a failure is reported, not retried (the daemon retries).
        once = config.reload.model_copy(update={"retries": 0})
        self.engine = Engine(
            config.model_copy(update={"reload": once}),
            arch_rules(self.reader.arch or kernel.host_arch()),
        )
        self.upgrade = upgrade
        self.dry_run = dry_run
        self.outcome = Outcome()

    def run(self) -> Outcome:
        first = self.read_kernel(Purpose.DECIDE)
        saved = persist.read(self.state_dir)  # the daemon's record, read only
        if saved is not None and saved.image is not None:
            r = saved.image
            self.engine.image = Image(r.fingerprint, r.seqnum, r.complete)
        if first.state.protected:
            self.engine.protection = protection_of(first.state)
        self.engine.ledger.observe(first.state, first.now)
        self.feed(Request(self.clock(), upgrade=self.upgrade))
        while not self._done():
            self._wait()
            if (exited := self.reap()) is not None:
                self.feed(exited)
            self.feed(Tick(self.clock()))
        self.outcome.crash_loaded = self.reader.state().crash_loaded
        self.outcome.keeps_current = self.reader.state().kernel_keeps_current
        return self.outcome

    def _done(self) -> bool:
        phase = self.engine.phase
        stopped = self.dry_run and bool(self.outcome.plans)
        return (
            stopped
            or self.outcome.cannot_upgrade is not None
            or (
                isinstance(phase, Idle | GivenUp)
                and self.running is None
                and bool(self.outcome.action)
            )
        )

    def _wait(self) -> None:
        left = None if self.wake is None else max(0.0, self.wake - self.clock())
        if self.running is None:
            time.sleep(min(left if left is not None else 0.05, 1.0))
            return
        poller = select.poll()
        poller.register(self.running.fileno(), select.POLLIN)
        poller.poll(None if left is None else left * 1000)

    def perform(self, effect: object) -> object:  # type: ignore[override]
        if isinstance(effect, MakePlan):
            planned = self.make_plan(effect.upgrade)
            return self._planned(effect, planned)
        return super().perform(effect)  # type: ignore[arg-type]

    def _planned(self, effect: MakePlan, planned: Planned) -> Planned | None:
        if self.upgrade and not effect.upgrade:
            reason = getattr(self.engine.phase, "reason", None)
            self.outcome.cannot_upgrade = reason.text if reason else "it does not apply here"
            return None
        if self.upgrade and planned.upgrade_unavailable:
            self.outcome.cannot_upgrade = planned.upgrade_unavailable
            return None
        if planned.plan is not None:
            self.outcome.plans.append(planned.plan)
            if self.dry_run:
                return None
        return planned

    def log(self, entry: Log) -> None:
        self.outcome.events.append(entry)
        if entry.event == "upgrade_failed" and self.outcome.plans:
            # The engine runs the fallback at once, without a MakePlan: it ran too.
            fallback = self.outcome.plans[-1].fallback
            if fallback is not None:
                self.outcome.plans.append(fallback)
        if entry.event == "burst":
            self.outcome.decision = str(entry.fields.get("decision", ""))
            self.outcome.action = str(entry.fields.get("action", ""))
        text = entry.fields.get("text")
        if text and entry.event != "burst":
            self.outcome.text = str(text)

    def publish(self, effect: Publish) -> None:
        """`crashhp reload` leaves state.json to the daemon."""
