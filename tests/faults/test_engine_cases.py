"""The cases of issue 11 on the real daemon, real netlink and the fake kernel tree.

Each test is what a kdump maintainer would try; each failed on the daemon before the
engine (c8cd7f8). The reload recorder reads the topology when it starts, as kexec-tools
reads /proc/iomem before it loads, so ``host.recorder.image()`` is what the crash kernel
really describes; ``hotplug_after`` makes it a hotplug-capable load (crash_hotplug 1/1).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.test_restart import crash, state
from tests.support.nshost import FakeHost, wait_until

pytestmark = pytest.mark.faults


def assert_describes_now(host: FakeHost) -> None:
    assert host.sysfs.loaded() == "1"
    assert host.recorder.image() == host.topology(), "the crash kernel misses a change"


def test_1_a_hotplug_racing_a_hotplug_capable_reload(host: FakeHost) -> None:
    """A DIMM arrives while a `kexec -s`-like reload runs; afterwards crash_hotplug reads 1.
    Before: the raced burst was `kernel_handles` and the image never had the DIMM."""
    host.recorder.set_knobs(duration_ms=1500, hotplug_after=True)
    daemon = host.start_daemon()
    daemon.send_burst(20)
    host.recorder.wait_calls(1)
    daemon.send_burst(40)  # the DIMM's blocks, during the load
    wait_until(lambda: host.recorder.image() == host.topology(), 10, "the follow-up load")
    daemon.logs.wait_for("load_raced", timeout=10)
    burst = daemon.logs.wait_for("burst", decision="raced", timeout=10)
    assert burst["action"] == "reload"
    assert_describes_now(host)
    assert host.recorder.count() == 2


def test_2_the_record_is_read_before_the_load(host: FakeHost) -> None:
    """Killed after a raced load and before its follow-up: the restart must reload.
    Before: the fingerprint was read after the load (it had the raced change), so the
    restart found it equal and trusted the stale image."""
    host.recorder.set_knobs(duration_ms=1500)
    daemon = host.start_daemon({"coalesce": {"quiet_ms": 2000, "max_delay_ms": 3000}})
    daemon.send_burst(20)
    host.recorder.wait_calls(1, timeout=10)
    daemon.send_burst(20)  # during the load; its follow-up is 2 s of quiet away
    daemon.logs.wait_for("reload_done", timeout=10)
    crash(host, daemon)
    assert host.recorder.image() != host.topology()

    restarted = host.start_daemon()
    restarted.logs.wait_for("reload_done", timeout=10)
    assert_describes_now(host)


def test_3_a_second_restart_before_the_owed_reload(host: FakeHost) -> None:
    """The topology changes while crashhp is down; the restart is killed again inside its
    quiet period. Before: the first restart wrote no record, the second trusted the image."""
    daemon = host.start_daemon()
    crash(host, daemon)
    host.set_topology(memory_blocks=20)
    again = host.start_daemon({"coalesce": {"quiet_ms": 3000, "max_delay_ms": 5000}})
    again.logs.wait_for("topology_changed_while_down")
    crash(host, again)
    assert host.recorder.count() == 0

    last = host.start_daemon()
    last.logs.wait_for("reload_done", timeout=10)
    assert_describes_now(host)


def test_4_a_crash_kernel_loaded_after_start_is_recorded(host: FakeHost) -> None:
    """kdump loads after crashhp started; a burst is then cut short by a restart.
    Before: no record of what that crash kernel described; the burst was forgotten."""
    host.sysfs.set(loaded="0")
    daemon = host.start_daemon({"coalesce": {"quiet_ms": 3000, "max_delay_ms": 5000}})
    assert state(host)["protection"] == "not-loaded"
    host.load_by_hand()  # the distribution's tool loads it
    wait_until(lambda: state(host).get("loaded_topology"), 5, "a record of what it describes")
    daemon.send_burst(10)
    time.sleep(0.3)  # inside the quiet period: the burst is pending
    crash(host, daemon)

    restarted = host.start_daemon()
    restarted.logs.wait_for("reload_done", timeout=10)
    assert_describes_now(host)


def test_5_sighup_while_settling_and_stale_gives_one_reload(host: FakeHost) -> None:
    """STALE (the failed reload kept the old image), given up; a new burst settles, and
    `systemctl reload crashhp` comes during the settle. Before: two reloads for it."""
    host.recorder.set_knobs(fail=1, fail_before_unload=True)
    daemon = host.start_daemon(
        {"reload": {"retries": 0}, "coalesce": {"settle_ms": 1500}, "log": {"level": "debug"}}
    )
    daemon.send_burst(10)
    daemon.logs.wait_for("reload_given_up", timeout=10)
    wait_until(lambda: state(host)["protection"] == "stale", 5, "stale")

    sent = daemon.send_burst(10)
    daemon.logs.wait_for("settling", after=sent)
    daemon.signal(1)  # SIGHUP
    daemon.logs.wait_for("reload_done", timeout=10)
    # Idle and protected: nothing is pending, no retry armed; only an input could start
    # another reload. (The daemon before the engine started a third one here.)
    wait_until(
        lambda: (state(host).get("phase"), state(host)["protection"]) == ("idle", "protected"),
        5,
        "rest",
    )
    assert host.recorder.count() == 2, host.recorder.calls()
    assert_describes_now(host)


@pytest.mark.parametrize("action", ["add", "online"])
def test_6_udevadm_trigger_reloads_nothing(host: FakeHost, action: str) -> None:
    """`udevadm trigger` replays an event per cpu and memory device, with SYNTH_UUID.
    Before: a full reload (a window without a crash kernel) for no change."""
    daemon = host.start_daemon()
    daemon.send_burst(64, subsystems=("cpu", "memory"), action=action, change=False, synthetic=True)
    burst = daemon.logs.wait_for("burst", timeout=10)
    assert burst["decision"] == "unchanged", burst
    assert burst["synthetic"] == 64
    assert host.recorder.count() == 0


def test_6_an_offline_online_rollback_reloads_nothing(host: FakeHost) -> None:
    daemon = host.start_daemon()
    daemon.send_burst(2, action="offline", change=False)
    daemon.send_burst(2, action="online", change=False)
    burst = daemon.logs.wait_for("burst", timeout=10)
    assert burst["decision"] == "unchanged", burst
    assert host.recorder.count() == 0


def test_7_not_loaded_is_rechecked(host: FakeHost) -> None:
    """Before: 'not-loaded' stayed in STATUS= and state.json until the next hotplug."""
    host.sysfs.set(loaded="0")
    host.start_daemon()
    assert state(host)["protection"] == "not-loaded"
    host.sysfs.set(loaded="1")
    wait_until(lambda: state(host)["protection"] == "protected", 5, "protected")


def test_7_stale_is_rechecked(host: FakeHost) -> None:
    """STALE, given up; the admin runs `kdumpctl restart` (hotplug-capably). Before: STALE
    until the next hotplug."""
    host.recorder.set_knobs(fail=1, fail_before_unload=True)
    daemon = host.start_daemon({"reload": {"retries": 0}})
    daemon.send_burst(10)
    daemon.logs.wait_for("reload_given_up", timeout=10)
    wait_until(lambda: state(host)["protection"] == "stale", 5, "stale")
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")  # reloaded by the admin
    wait_until(lambda: state(host)["protection"] == "protected", 5, "protected")
    daemon.logs.wait_for("recovered")  # (logged right after state.json is written)


def test_8_a_second_daemon_refuses_to_start(host: FakeHost) -> None:
    """Before: a `crashhp daemon` by hand next to the service both reacted."""
    host.start_daemon()
    second = host.start_daemon(wait_ready=False)
    assert second.wait(10) == 1
    text = second.logs.text()
    assert "another crashhp daemon" in text, text
    assert "not starting a second one" in text


def test_10_a_memory_range_that_leaves_iomem_during_the_load(host: FakeHost) -> None:
    """memory `remove` uevents come before the range leaves /proc/iomem; a load that a
    storm's max_delay_ms started in between read the old range. Before: one load, and the
    header kept the range."""
    host.recorder.set_knobs(duration_ms=1500)
    daemon = host.start_daemon({"coalesce": {"quiet_ms": 1000, "max_delay_ms": 1200}})
    daemon.send_burst(8)
    time.sleep(0.5)  # the storm goes on: its memory removal comes next
    daemon.send_burst(4, action="remove", change=False)  # /proc/iomem still lists it
    host.recorder.wait_calls(1, timeout=10)  # max_delay_ms: the load reads the old range
    host.set_topology(memory_blocks=host.memory_blocks - 4)  # now the range goes
    wait_until(lambda: host.recorder.image() == host.topology(), 10, "the follow-up load")
    daemon.logs.wait_for("load_raced", timeout=10)
    assert host.recorder.count() == 2
    assert_describes_now(host)
