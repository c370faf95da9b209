"""The engine on a simulated machine with a fake clock: the cases of issue 11, one by one.

``World`` keeps the truth (what the loaded crash kernel really describes); each test says
in its name what a kdump maintainer would try, and asserts on the truth, not on logs only.
"""

from __future__ import annotations

import pytest

from crashhp import persist
from crashhp.messages import Request, Tick
from crashhp.model import Protection
from crashhp.phase import Idle, Settling
from tests.unit.sim import CPU, MEM, Driver, World, config


def test_a_burst_gives_one_reload_after_the_quiet_period() -> None:
    w = World()
    d = Driver(w)
    w.blocks += 1
    d.events(*(w.event(MEM, "online") for _ in range(100)))
    d.advance(0.49)
    assert not w.loads
    d.settle()
    assert len(w.loads) == 1
    assert w.current
    assert d.protection() is Protection.PROTECTED
    assert d.decisions() == ["kernel_says_reload"]


def test_1_a_hotplug_racing_a_hotplug_capable_reload_is_loaded_once_more() -> None:
    """The load read the topology before the change; afterwards crash_hotplug reads 1 and
    the raced events would be taken as kernel_handles: the image would miss the DIMM."""
    w = World(duration=2.0, makes_hotplug=True)
    d = Driver(w)
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.advance(1.0)  # the load runs
    assert w.load is not None
    w.change(blocks=8)  # a DIMM arrives during the load
    d.events(*(w.event(MEM, "online") for _ in range(8)))
    d.settle()
    assert w.current, "the crash kernel misses the DIMM that raced its load"
    assert len(w.loads) == 2
    assert d.decisions() == ["kernel_says_reload", "raced"]


def test_1_a_race_seen_only_in_the_fingerprint_is_loaded_once_more() -> None:
    w = World(duration=2.0, makes_hotplug=True)
    d = Driver(w)
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.advance(1.0)
    w.blocks += 1  # its events are still in the socket when the load ends
    d.settle()
    assert w.current
    assert len(w.loads) == 2


def test_2_the_record_is_the_topology_read_before_the_load() -> None:
    """Killed after a raced load, before its follow-up: the restart must reload."""
    w = World(duration=2.0, makes_hotplug=True)
    d = Driver(w)
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.advance(1.0)
    w.blocks += 4
    d.advance(1.6)
    d.events(w.event(MEM, "online"))  # near the end of the load
    d.advance(0.2)  # the load ended; the follow-up is not due yet
    assert len(w.loads) == 1
    assert w.loaded
    assert not w.current
    d.restart()
    d.settle()
    assert w.current
    assert len(w.loads) == 2


def test_3_a_second_restart_before_the_owed_reload_still_reloads() -> None:
    w = World()
    d = Driver(w)
    d.advance(1.0)
    w.blocks += 4  # changed while crashhp was down
    d.restart()
    d.advance(0.1)  # killed again inside the quiet period
    d.restart()
    d.settle()
    assert w.current
    assert len(w.loads) == 1


@pytest.mark.parametrize("kernel_updates", [False, True])
def test_3_a_record_from_before_the_memory_block_fingerprint(kernel_updates: bool) -> None:
    """state.json (version 2) written before the RAM part hashed the memory blocks (it
    hashed /proc/iomem): after the upgrade the CPU part still compares and the RAM part
    never matches, so the first start counts a memory change while it was down. One
    reload where the kernel cannot keep the image current, none where it can; never a
    stale image taken for current."""
    w = World(hotplug=kernel_updates, makes_hotplug=kernel_updates)
    d = Driver(w)
    d.advance(1.0)
    assert d.published is not None
    image = d.published["image"]
    old = {**d.published, "image": {**image, "fingerprint": image["fingerprint"][:8] + "0f1e2d3c"}}
    d.restart(saved=persist.Saved.model_validate(old))
    (moved,) = d.events_named("topology_changed_while_down")
    assert moved.fields["recorded"] != moved.fields["current"]
    d.settle()
    assert w.current
    assert len(w.loads) == (0 if kernel_updates else 1)
    assert d.decisions() == ["kernel_handles" if kernel_updates else "kernel_says_reload"]


def test_4_a_crash_kernel_loaded_after_start_is_recorded() -> None:
    """Nothing loaded at start; the distribution loads one later; a burst is then cut
    short by a restart: the restart must know what that crash kernel describes."""
    w = World(loaded=False)
    d = Driver(w)
    assert d.protection() is Protection.NOT_LOADED
    d.advance(5.0)
    w.loaded, w.image = True, w.topology()  # kdump-tools loads it
    d.advance(2.0)
    assert d.protection() is Protection.PROTECTED
    assert d.events_named("loaded_by_other")
    w.blocks += 2
    d.events(w.event(MEM, "online"))
    d.advance(0.1)
    d.restart()
    d.settle()
    assert w.current
    assert len(w.loads) == 1


def test_5_sighup_while_settling_and_stale_gives_one_reload() -> None:
    w = World(fail_next=1, fail_keeps=True)
    d = Driver(w, config(retries=0))
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.settle()
    assert d.protection() is Protection.STALE
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.advance(0.55)
    assert isinstance(d.engine.phase, Settling)
    d.sighup()
    d.settle()
    assert len(w.loads) == 2, w.loads
    assert w.current


@pytest.mark.parametrize("action", ["add", "online", "change"])
def test_6_udevadm_trigger_changes_nothing_and_reloads_nothing(action: str) -> None:
    w = World()
    d = Driver(w)
    d.events(*(w.event(s, action, synthetic=True) for s in (CPU, MEM) for _ in range(64)))
    d.settle()
    assert not w.loads
    assert d.decisions() == ["unchanged"]


def test_6_an_offline_online_rollback_reloads_nothing() -> None:
    w = World()
    d = Driver(w)
    w.blocks -= 1
    d.events(w.event(MEM, "offline"))
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.settle()
    assert not w.loads


def test_6_cpu_offline_online_on_x86_reloads_nothing() -> None:
    """kexec-tools writes a note per present CPU: online/offline changes no header."""
    w = World()
    d = Driver(w)
    w.online -= 2
    d.events(w.event(CPU, "offline"), w.event(CPU, "offline"))
    d.settle()
    assert not w.loads


def test_7_stale_is_rechecked_when_someone_else_reloads() -> None:
    w = World(fail_next=1)
    d = Driver(w, config(retries=0))
    w.blocks += 1
    w.load = None
    d.events(w.event(MEM, "online"))
    d.advance(0.6)
    d.advance(2.0)
    assert d.protection() is Protection.UNPROTECTED
    w.loaded, w.image, w.hotplug = True, w.topology(), True  # `kdumpctl restart` by the admin
    d.advance(1.5)
    assert d.protection() is Protection.PROTECTED
    assert d.events_named("recovered")


def test_7_stale_after_a_failure_that_kept_the_old_image() -> None:
    w = World()
    d = Driver(w, config(retries=0))
    d.engine.protection = Protection.STALE  # a failed reload kept the old image loaded
    d.engine.phase = Idle(poll_at=w.now + 1)
    d.feed(Tick(w.now))
    w.loaded, w.image = False, None  # the admin's tool unloads...
    d.advance(1.1)
    w.loaded, w.image = True, w.topology()  # ...and loads
    d.advance(1.1)
    assert d.protection() is Protection.PROTECTED


def test_8_a_busy_reload_lock_is_waited_for_not_a_failure() -> None:
    w = World()
    d = Driver(w, config(retries=0))
    d.busy_next = 5  # `crashhp reload` by hand holds the lock for five seconds
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.advance(3.0)
    assert not w.loads
    assert not d.events_named("reload_failed")
    assert d.events_named("reload_waiting")
    d.settle()
    assert w.current
    assert d.engine.ledger.counters.failed_reloads == 0


def test_10_memory_removal_whose_range_leaves_iomem_during_the_load() -> None:
    """remove uevents come before the range leaves /proc/iomem: a load that a storm's
    max_delay_ms started in between read the old range; the move of the fingerprint
    during the load gives one more."""
    w = World(duration=1.0)
    cfg = config().model_copy(
        update={
            "coalesce": config().coalesce.model_copy(
                update={"quiet_ms": 1000, "max_delay_ms": 1200}
            )
        }
    )
    d = Driver(w, cfg)
    w.blocks += 4
    d.events(w.event(MEM, "online"))
    d.advance(0.6)
    d.events(w.event(MEM, "remove"))  # /proc/iomem still lists the block
    d.advance(0.85)  # max_delay_ms, then the settle: the load reads the old range
    assert w.load is not None
    w.blocks -= 1  # now it leaves /proc/iomem
    d.settle()
    assert w.current
    assert len(w.loads) == 2


def test_10_a_removal_is_never_covered_by_the_seqnum() -> None:
    w = World()
    d = Driver(w)
    event = w.event(MEM, "remove")  # sent before the last load started...
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.settle()
    assert len(w.loads) == 1
    w.blocks -= 1  # ...and the range goes only now
    d.events(event)
    d.settle()
    assert "covered" not in d.decisions()
    assert w.current


def test_kernel_handles_and_records_the_topology() -> None:
    w = World(hotplug=True)
    d = Driver(w)
    w.change(blocks=8)
    d.events(*(w.event(MEM, "online") for _ in range(8)))
    d.settle()
    assert not w.loads
    assert d.decisions() == ["kernel_handles"]
    image = d.engine.image
    assert image is not None
    assert image.fingerprint == w.fp()


def test_failure_backoff_and_recovery() -> None:
    w = World(fail_next=2)
    d = Driver(w)
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.settle()
    assert len(w.loads) == 3
    assert w.current
    assert d.protection() is Protection.PROTECTED
    assert [e.fields["attempt"] for e in d.events_named("reload_failed")] == [1, 2]
    assert d.events_named("recovered")


def test_a_hung_tool_is_killed_at_its_timeout() -> None:
    w = World(duration=1000.0)
    d = Driver(w, config(timeout_s=5, retries=0))
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.advance(10.0)
    assert w.load is None
    assert "timed out" in str(d.events_named("reload_failed")[0].fields["reason"])


def test_request_reload_decides_at_once() -> None:
    w = World()
    d = Driver(w, fresh=False)
    d.restart(saved=None)
    w.blocks += 1
    d.feed(Request(w.now))
    d.advance(0.3)
    assert len(w.loads) == 1


def test_stop_waits_for_the_running_load() -> None:
    from crashhp.messages import Stop

    w = World(duration=2.0)
    d = Driver(w)
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.advance(1.0)
    d.feed(Stop(w.now, "SIGTERM"))
    assert not d.engine.finished
    d.advance(2.0)
    assert d.engine.finished
    assert w.current


def test_snapshot_for_metrics() -> None:
    w = World(duration=0.5)
    d = Driver(w)
    w.blocks += 1
    d.events(w.event(MEM, "online"), w.event(MEM, "online", synthetic=True))
    d.settle()
    snap = d.engine.snapshot(w.now)
    assert snap.protection == "protected"
    assert snap.counters.events == 2
    assert snap.counters.synthetic == 1
    assert snap.counters.reloads == 1
    assert snap.counters.bursts == {"kernel_says_reload": 1}
    assert snap.last_reload_s == pytest.approx(0.5, abs=0.05)
    assert snap.last_burst_to_protected_s is not None
    assert snap.unprotected_s == pytest.approx(0.0)
    assert snap.crash_hotplug == {"cpu": "needs-reload", "memory": "needs-reload"}
    assert snap.layout == "legacy"


def test_loaded_by_someone_else_while_owed_then_a_restart() -> None:
    """Found by the property tests: our reload failed and left nothing; the admin loads one;
    crashhp restarts. That crash kernel was loaded after the change: no reload for it."""
    w = World(fail_next=1)
    d = Driver(w)
    w.cpus += 1
    d.events(w.event(CPU, "add"))
    d.advance(1.5)
    assert d.protection() is Protection.UNPROTECTED
    w.loaded, w.image = True, w.topology()
    d.restart()
    d.settle()
    assert w.current
    assert d.protection() is Protection.PROTECTED


def test_loaded_by_someone_else_while_owed_then_more_hotplug() -> None:
    """Found by the property tests: the admin's load, then another CPU while crashhp waits
    to retry: the admin's image lacks that CPU."""
    w = World(fail_next=1)
    d = Driver(w)
    w.cpus += 1
    d.events(w.event(CPU, "add"))
    d.advance(1.5)
    w.loaded, w.image = True, w.topology()
    w.cpus += 1
    d.events(w.event(CPU, "add"))
    d.settle()
    assert w.current


def test_fadump_memory_change_reregisters_cpu_change_does_not() -> None:
    w = World(fadump=True)
    d = Driver(w)
    assert d.protection() is Protection.FADUMP  # not CRITICAL: fadump protects it
    w.cpus += 1
    d.events(w.event(CPU, "add"))
    d.settle()
    assert not w.loads
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.settle()
    assert len(w.loads) == 1  # the distribution's tool re-registers fadump
    assert d.decisions()[-1] == "fadump_reregister"
    assert d.protection() is Protection.FADUMP


def test_fadump_hotplug_ready_needs_nothing() -> None:
    w = World(fadump=True, fadump_ready=True)
    d = Driver(w)
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.settle()
    assert not w.loads
    assert d.decisions() == ["fadump_handles"]


def test_s390x_observes_only() -> None:
    from crashhp.arch import Arch, rules

    w = World()
    d = Driver(w)
    d.engine.rules = rules(Arch.S390X)
    w.blocks += 1
    d.events(w.event(MEM, "online"))
    d.settle()
    assert not w.loads
    assert d.decisions() == ["arch_no_reload"]
    assert "kdump kernel" in d.engine.snapshot(w.now).status
