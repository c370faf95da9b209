"""The engine's state, and what every part of it uses: publishing, logging, resting.

Pure: no I/O, no clock. See crashhp.engine.
"""

from __future__ import annotations

from typing import Any

from crashhp.arch import Rules
from crashhp.coalesce import Timing
from crashhp.config import Config
from crashhp.ledger import Ledger
from crashhp.messages import UNKNOWN, Effect, Image, KernelRead, Log, Publish, Snapshot
from crashhp.model import Burst, KernelState, Protection, Subsystem
from crashhp.phase import GivenUp, Idle, Phase, Reloading

# Not protected and nothing to do: how often to look whether someone else loaded one.
POLL_S = 1.0
# The reload lock is held by `crashhp reload` or `upgrade`: look again this much later.
BUSY_RETRY_S = 1.0
_CALM = (Protection.PROTECTED, Protection.FADUMP, Protection.NO_KEXEC)


def timing(config: Config) -> Timing:
    c = config.coalesce
    return Timing(c.quiet_ms / 1000, c.max_delay_ms / 1000, c.settle_ms / 1000)


class Machine:
    """The engine's attributes: one phase, one protection value, and the record of what
    the loaded image describes."""

    def __init__(
        self,
        config: Config,
        rules: Rules,
        *,
        protection: Protection = Protection.NOT_LOADED,
        image: Image | None = None,
        owed: bool = False,
        upgrade_given_up: bool = False,
        phase: Phase | None = None,
    ) -> None:
        self.config = config
        self.rules = rules
        self.timing = timing(config)
        self.phase: Phase = phase or Idle()
        self.protection = protection
        self.image = image  # what the loaded crash kernel describes
        self.owed = owed
        self.upgrade_given_up = upgrade_given_up
        self.upgrade_wanted = False  # `crashhp upgrade`, or kexec.upgrade at start
        self.failures = 0  # failed attempts in a row
        self.stopping = False
        self.ledger = Ledger()
        self._out: list[Effect] = []

    def snapshot(self, now: float) -> Snapshot:
        return self.ledger.snapshot(self, now)

    def publish(self, now: float) -> None:
        self._out.append(Publish(self.snapshot(now)))

    def _observe(self, read: KernelRead) -> None:
        state = read.state
        self.ledger.observe(state, read.now)
        if state.crash_loaded is None and not state.fadump:
            self.protection = Protection.NO_KEXEC
        elif not state.protected:
            if not self.owed and self.protection is not Protection.STALE:
                self.protection = Protection.NOT_LOADED
        elif self.owed and not isinstance(self.phase, Reloading):
            # Our reload left nothing loaded, and someone else loaded one since: it was
            # loaded after the change that needed ours. Whether also after the events now
            # pending is unknown: it describes an unknown topology, loaded once more.
            self._taken_over(read, "a crash kernel was loaded by someone else")
            self.image = UNKNOWN
        elif self.protection in (Protection.NOT_LOADED, Protection.NO_KEXEC):
            # Loaded by someone else since we last looked. The record stays: if it equals
            # the topology now, that load read this same topology.
            self.protection = protection_of(state)

    def _taken_over(self, read: KernelRead, how: str) -> None:
        self.image = Image(read.fingerprint, read.seqnum, complete=True)
        self.owed, self.failures = False, 0
        self.protection = protection_of(read.state)
        self._recovered(read.now, how)

    def _poll(self, read: KernelRead, before: Protection) -> None:
        """Not protected and at rest: notice when someone else loads a crash kernel.

        Nothing else would look before the next hotplug event, and until then STATUS= and
        `crashhp status` would keep saying UNPROTECTED, STALE or not loaded.
        """
        now, state = read.now, read.state
        again = now + POLL_S
        reloaded = before is Protection.STALE and (
            self.ledger.saw_unloaded or state.kernel_keeps_current
        )
        if state.protected and before is Protection.NOT_LOADED:
            # Loaded by the distribution's tool: it describes the topology of now.
            self.image = Image(read.fingerprint, read.seqnum, complete=True)
            self.protection = protection_of(state)
            self._log("info", "loaded_by_other", text="a crash kernel was loaded")
            self.publish(now)
        elif state.protected and reloaded:
            self._taken_over(read, "the crash kernel was reloaded by someone else")
        if self.protection in _CALM:
            self.phase = Idle()
            return
        self.ledger.saw_unloaded = before is Protection.STALE and not state.protected
        self.phase = GivenUp(again) if isinstance(self.phase, GivenUp) else Idle(again)
        if before is not self.protection:
            self.publish(now)

    def _rest(self, now: float) -> Idle:
        calm = self.protection in _CALM or self.stopping
        return Idle() if calm else Idle(poll_at=now + POLL_S)

    def _recovered(self, now: float, how: str) -> None:
        # STATUS= and state.json first: whoever reacts to the journal line (an admin
        # running `crashhp status`, a test) must already see the machine protected.
        self.publish(now)
        self._log("info", "recovered", text=f"a crash kernel is loaded again: {how}")

    def _loaded(self) -> bool:
        state = self.ledger.state
        return state is not None and state.protected

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self._out.append(Log(level, event, fields))

    def _summary(
        self,
        burst: Burst,
        decision: str,
        action: str,
        now: float,
        *,
        reload_s: float | None = None,
        state: KernelState | None = None,
    ) -> None:
        summary = self.ledger.summarize(
            burst, decision, action, now, reload_s=reload_s, state=state
        )
        self._log("info", "burst", **summary)


def protection_of(state: KernelState) -> Protection:
    """The protection of a machine whose crash kernel (or fadump) is in place."""
    return Protection.FADUMP if state.fadump and state.fadump.protects else Protection.PROTECTED


def _names(burst: Burst) -> list[str]:
    return sorted(s.value for s in burst.subsystems)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def state_fields(state: KernelState) -> dict[str, Any]:
    return {
        "crash_loaded": state.crash_loaded,
        "cpu_crash_hotplug": state.verdict(Subsystem.CPU).value,
        "memory_crash_hotplug": state.verdict(Subsystem.MEMORY).value,
        "elfcorehdr_size": state.elfcorehdr_size,
    }
