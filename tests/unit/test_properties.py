"""Stateful property tests: random interleavings of hotplug, lost events, replays, tool
results, lock contention, restarts, SIGHUPs and time, on the simulated machine (fake clock).

After quiescence the loaded crash kernel describes the current topology, or the state says
so (UNPROTECTED, STALE, not loaded); never two commands at once; never a load while the
loaded image already describes the topology (so: one reload per burst, plus one follow-up
when the topology moved during it).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crashhp.model import Protection
from tests.unit.sim import CPU, MEM, Driver, World

EXAMPLES = 1000
STEPS = 50


class Machine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.driver = Driver(self.world)
        self.pending_removal = 0  # blocks whose remove events came, still in /proc/iomem
        self.quiesced = 0

    def _catch_up(self) -> None:
        """A range whose remove events came leaves /proc/iomem microseconds later: only
        time passing (a decision due in between) can see the two apart."""
        if self.pending_removal:
            self.world.change(blocks=-self.pending_removal)
            self.pending_removal = 0

    # ---- the machine changes ----------------------------------------------------------

    @rule(n=st.integers(1, 8))
    def add_memory(self, n: int) -> None:
        self._catch_up()
        w = self.world
        w.change(blocks=n)
        self.driver.events(*(w.event(MEM, e) for _ in range(n) for e in ("add", "online")))

    @rule(n=st.integers(1, 4), late=st.booleans())
    def remove_memory(self, n: int, late: bool) -> None:
        """``late``: the range leaves /proc/iomem only after the remove events."""
        self._catch_up()
        w = self.world
        n = min(n, w.blocks - 1 - self.pending_removal)
        if n <= 0:
            return
        events = [w.event(MEM, e) for _ in range(n) for e in ("offline", "remove")]
        if late:
            self.pending_removal += n
        else:
            w.change(blocks=-n)
        self.driver.events(*events)

    @rule()
    def cpu_add(self) -> None:
        self._catch_up()
        w = self.world
        w.change(cpus=1)
        w.online += 1
        self.driver.events(w.event(CPU, "add"), w.event(CPU, "online"))

    @rule(offline=st.booleans())
    def cpu_online_offline(self, offline: bool) -> None:
        """x86: no header change (a note per present CPU)."""
        self._catch_up()
        w = self.world
        if offline and w.online > 1:
            w.online -= 1
            self.driver.events(w.event(CPU, "offline"))
        elif w.online < w.cpus:
            w.online += 1
            self.driver.events(w.event(CPU, "online"))

    @rule(n=st.integers(1, 16))
    def udevadm_trigger(self, n: int) -> None:
        self._catch_up()
        w = self.world
        self.driver.events(
            *(w.event(s, "add", synthetic=True) for s in (CPU, MEM) for _ in range(n))
        )

    @rule()
    def rollback(self) -> None:
        self._catch_up()
        w = self.world
        self.driver.events(w.event(MEM, "offline"), w.event(MEM, "online"))

    @rule(change=st.booleans())
    def lost_events(self, change: bool) -> None:
        """A receive-buffer overflow; the change's own events were among the lost."""
        self._catch_up()
        if change:
            self.world.change(blocks=1)
        self.world.seqnum += 5
        self.driver.lost()

    # ---- the tool, the admin, systemd -------------------------------------------------

    @rule(outcome=st.sampled_from(["fail", "fail_keeps", "unloaded", "slow", "fast", "hotplug"]))
    def tool(self, outcome: str) -> None:
        self._catch_up()
        w = self.world
        if outcome == "fail":
            w.fail_next, w.fail_keeps = 1, False
        elif outcome == "fail_keeps":
            w.fail_next, w.fail_keeps = 1, True
        elif outcome == "unloaded":
            w.unload_next = 1
        elif outcome == "slow":
            w.duration = 3.0
        elif outcome == "fast":
            w.duration = 0.2
        else:
            w.makes_hotplug = not w.makes_hotplug

    @rule(n=st.integers(1, 3))
    def lock_busy(self, n: int) -> None:
        self._catch_up()
        self.driver.busy_next = n

    @precondition(lambda self: not self.world.loaded and self.world.load is None)
    @rule()
    def admin_loads(self) -> None:
        self._catch_up()
        w = self.world
        w.loaded, w.image, w.hotplug = True, w.topology(), False

    @rule()
    def restart(self) -> None:
        self._catch_up()
        self.driver.restart()

    @rule()
    def sighup(self) -> None:
        self._catch_up()
        self.driver.sighup()

    @rule(dt=st.sampled_from([0.01, 0.1, 0.3, 0.6, 1.5, 4.0, 12.0]))
    def time_passes(self, dt: float) -> None:
        if self.pending_removal:
            step = min(dt, 0.001)
            self.driver.advance(step)
            dt -= step
            self._catch_up()
        self.driver.advance(dt)

    @rule()
    def quiesce(self) -> None:
        self._catch_up()
        self.time_passes(0.0)
        self.driver.settle()
        self.quiesced += 1
        w, protection = self.world, self.driver.protection()
        assert w.load is None
        if protection is Protection.PROTECTED:
            assert w.current, "PROTECTED, but the crash kernel describes another topology"
        elif protection is Protection.NOT_LOADED:
            assert not w.loaded
        else:
            assert protection in (Protection.UNPROTECTED, Protection.STALE), protection
        if w.loaded and not w.current:
            assert protection in (Protection.STALE, Protection.UNPROTECTED), protection
        if not w.loaded:
            assert protection in (Protection.NOT_LOADED, Protection.UNPROTECTED), protection

    # ---- always -----------------------------------------------------------------------

    @invariant()
    def never_two_commands_at_once(self) -> None:
        assert self.world.overlaps == 0

    @invariant()
    def never_a_needless_load(self) -> None:
        assert self.driver.needless == 0, self.world.loads


Machine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineProperties = Machine.TestCase
