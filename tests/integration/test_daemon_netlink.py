"""The real daemon process against real netlink, in a private namespace per test.

Each test starts ``python -m crashhp daemon --config FILE`` in a :class:`FakeHost`, sends it
udev-format uevents, changes the fake kernel files, and watches three things only from the
outside: its JSON log lines (stderr), its sd_notify messages, and the calls of the reload
recorder (``[reload] method = "command"``). Coalescing values are small (quiet 150 ms,
settle 100 ms) so that the suite stays fast; the contract is ``docs/design.md``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from typing import Any

import pytest

from tests.support.nshost import Daemon, FakeHost, process_gone, wait_until
from tests.support.uevent import hotplug_event, udev_message

pytestmark = pytest.mark.netlink

QUIET_S = 0.150  # FakeHost.BASE_CONFIG coalesce.quiet_ms
SETTLE_S = 0.100  # FakeHost.BASE_CONFIG coalesce.settle_ms: a 0 is re-read after it
# Long enough after a burst for any further reload to have started (quiet + settle + start-up).
AFTERMATH_S = 1.0


def aftermath() -> None:
    time.sleep(AFTERMATH_S)


def reload_bursts(daemon: Daemon) -> list[dict[str, Any]]:
    return daemon.logs.events("burst", action="reload")


def test_burst_of_1000_events_gives_one_reload(host: FakeHost) -> None:
    daemon = host.start_daemon()
    last_sent = daemon.send_burst(1000, subsystems=("cpu", "memory"))
    (call,) = host.recorder.wait_calls(1)
    daemon.logs.wait_for("reload_done")
    burst = daemon.logs.wait_for("burst", action="reload")
    aftermath()

    assert host.recorder.count() == 1
    assert burst["events"] == 1000
    assert sorted(burst["subsystems"]) == ["cpu", "memory"]
    assert call.start - last_sent >= (QUIET_S + SETTLE_S) * 0.95, "no quiet period, or no settle"
    assert host.sysfs.loaded() == "1"
    host.recorder.assert_never_concurrent()


def test_quiet_period_restarts_with_each_event(host: FakeHost) -> None:
    """Small bursts 100 ms apart (under quiet_ms) for about a second: still one reload."""
    daemon = host.start_daemon()
    for _ in range(10):
        last_sent = daemon.send_burst(5, subsystems=("cpu",))
        time.sleep(0.1)
    (call,) = host.recorder.wait_calls(1)
    daemon.logs.wait_for("reload_done")
    aftermath()

    assert host.recorder.count() == 1, host.recorder.calls()
    assert call.start - last_sent >= (QUIET_S + SETTLE_S) * 0.95
    assert daemon.logs.wait_for("burst", action="reload")["events"] == 50


def test_kernel_handles_it_no_reload(host: FakeHost) -> None:
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    daemon = host.start_daemon()
    daemon.send_burst(300, subsystems=("cpu", "memory"))
    daemon.logs.wait_for("kernel_handles")
    aftermath()

    assert host.recorder.count() == 0
    assert reload_bursts(daemon) == []


def test_verdict_is_read_for_the_subsystem_that_changed(host: FakeHost) -> None:
    """cpu handled by the kernel, memory not: cpu events skip, memory events reload."""
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="0")
    daemon = host.start_daemon()
    daemon.send_burst(50, subsystems=("cpu",))
    daemon.logs.wait_for("kernel_handles")
    aftermath()
    assert host.recorder.count() == 0

    daemon.send_burst(50, subsystems=("memory",))
    host.recorder.wait_calls(1)
    daemon.logs.wait_for("reload_done")
    aftermath()
    assert host.recorder.count() == 1


def test_nothing_loaded_no_reload(host: FakeHost) -> None:
    host.sysfs.set(loaded="0")
    daemon = host.start_daemon()
    daemon.send_burst(100)
    daemon.logs.wait_for("not_loaded")
    aftermath()

    assert host.recorder.count() == 0
    assert reload_bursts(daemon) == []


def test_absent_crash_hotplug_means_reload(host: FakeHost) -> None:
    """Old kernels have no crash_hotplug file: treat as 'the kernel cannot update'."""
    host.sysfs.set(cpu_hotplug=None, memory_hotplug=None)
    daemon = host.start_daemon()
    daemon.send_burst(10, subsystems=("cpu",))
    host.recorder.wait_calls(1)
    daemon.logs.wait_for("reload_done")


def test_transient_zero_that_flips_back_is_not_trusted(host: FakeHost) -> None:
    """The kernel answers 0 while its kexec lock is busy: a 0 must be re-read after settle."""
    daemon = host.start_daemon({"coalesce": {"settle_ms": 1000}})
    sent = daemon.send_burst(20)
    # The first read comes at ~quiet (150 ms) and sees 0; the kernel settles at 500 ms; the
    # re-read at ~quiet + settle (1150 ms) must see 1.
    time.sleep(max(0.0, sent + 0.5 - time.monotonic()))
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    handled = daemon.logs.wait_for("kernel_handles", timeout=5)
    aftermath()

    assert host.recorder.count() == 0
    assert reload_bursts(daemon) == []
    assert handled["_t"] - sent >= 1.0, "decided before the settle re-read"


def test_failing_reload_retries_with_backoff_then_recovers(host: FakeHost) -> None:
    host.recorder.set_knobs(fail=2)
    daemon = host.start_daemon(
        {"reload": {"retries": 5, "backoff_initial_s": 0.3, "backoff_max_s": 5.0}}
    )
    daemon.send_burst(100)
    calls = host.recorder.wait_calls(3, timeout=10)
    daemon.logs.wait_for("recovered")
    aftermath()

    calls = host.recorder.calls()
    assert [c.rc for c in calls] == [1, 1, 0]
    assert len(daemon.logs.events("reload_failed")) == 2
    assert len(daemon.logs.events("unprotected")) == 1
    assert len(daemon.logs.events("reload_done")) == 1
    unprotected = daemon.logs.events("unprotected")[0]
    recovered = daemon.logs.events("recovered")[0]
    assert unprotected["_t"] < recovered["_t"]
    assert calls[0].end is not None
    assert calls[1].end is not None
    # Exponential backoff: ~0.3 s, then ~0.6 s.
    assert calls[1].start - calls[0].end >= 0.3 * 0.9
    assert calls[2].start - calls[1].end >= 0.6 * 0.9
    assert calls[2].start - calls[1].end < 0.6 + 1.0
    statuses = [n.value for n in host.notify.items("STATUS")]
    assert any("unprotected" in s.lower() for s in statuses), statuses
    assert "unprotected" not in statuses[-1].lower()
    assert host.sysfs.loaded() == "1"
    host.recorder.assert_never_concurrent()


def test_reload_that_leaves_nothing_loaded_is_a_failure(host: FakeHost) -> None:
    """Exit 0 is not enough: kexec_crash_loaded must read 1 afterwards."""
    host.recorder.set_knobs(leave_unloaded=True)
    daemon = host.start_daemon({"reload": {"retries": 1, "backoff_initial_s": 0.8}})
    daemon.send_burst(10)
    failed = daemon.logs.wait_for("reload_failed")
    host.recorder.set_knobs()
    daemon.logs.wait_for("unprotected")
    daemon.logs.wait_for("recovered", timeout=5)

    assert failed["_t"] < daemon.logs.events("recovered")[0]["_t"]
    assert [c.rc for c in host.recorder.calls()] == [0, 0]
    assert host.sysfs.loaded() == "1"


def test_hanging_reload_is_killed_at_its_timeout(host: FakeHost) -> None:
    host.recorder.set_knobs(hang=True)
    daemon = host.start_daemon({"reload": {"timeout_s": 1.0, "retries": 0}})
    sent = daemon.send_burst(10)
    call = wait_until(
        lambda: next((c for c in host.recorder.calls() if c.hang_child), None),
        5,
        "the hanging call and its child",
    )
    failed = daemon.logs.wait_for("reload_failed", timeout=5)
    assert call.hang_child is not None
    # Spawned at >= quiet + settle after the event, killed 1 s later (the recorder's own start
    # record comes after its interpreter started, so it is no lower bound).
    assert failed["_t"] - sent >= (QUIET_S + SETTLE_S + 1.0) * 0.95, "killed before its timeout"
    assert failed["_t"] - call.start <= 3.0, "not killed at its 1 s timeout"
    wait_until(lambda: process_gone(call.pid), 3, "the reload command to die")
    wait_until(lambda: process_gone(call.hang_child or 0), 3, "its child (same process group)")
    daemon.logs.wait_for("unprotected")

    # The daemon goes on: the next event reloads with a command that works.
    host.recorder.set_knobs()
    daemon.send_burst(10)
    daemon.logs.wait_for("reload_done", timeout=5)
    daemon.logs.wait_for("recovered")
    assert daemon.alive()


def test_flood_overflows_the_buffer_daemon_survives_one_reload(host: FakeHost) -> None:
    """25,000 events at full speed into a 64 KiB receive buffer: overflow, resync, 1 reload.

    The flood is cpu events only and the kernel handles cpu, so without the overflow there
    would be nothing to do. But events were lost, and memory changed too (its events are
    among the lost ones): level-triggered, the daemon resyncs every subsystem, finds the RAM
    part of the topology moved, and reloads for memory.
    """
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="0")
    daemon = host.start_daemon(
        {"coalesce": {"max_delay_ms": 10_000}, "events": {"receive_buffer_bytes": 65536}}
    )
    host.grow(("memory",))
    report = daemon.sender.send_many(host.burst(25_000, subsystems=("cpu",), action="add"))
    daemon.logs.wait_for("monitor_overflow", timeout=5)
    daemon.logs.wait_for("reload_done", timeout=15)
    aftermath()

    assert daemon.alive()
    assert host.recorder.count() == 1, host.recorder.calls()
    assert "memory" in daemon.logs.wait_for("burst", action="reload")["subsystems"]
    print(f"\nflood: {report.sent} events sent at {report.rate:,.0f}/s")

    # The rebuilt monitor still hears events.
    first_done = daemon.logs.events("reload_done")[0]["_t"]
    daemon.send_burst(20)
    host.recorder.wait_calls(2, timeout=5)
    daemon.logs.wait_for("reload_done", after=first_done + 1e-6)
    host.recorder.assert_never_concurrent()


def test_events_during_a_reload_cause_exactly_one_follow_up(host: FakeHost) -> None:
    host.recorder.set_knobs(duration_ms=1000)
    daemon = host.start_daemon(watchdog_usec=500_000)
    daemon.send_burst(100)
    (first,) = host.recorder.wait_calls(1)
    for _ in range(5):  # several bursts while the first reload runs
        daemon.send_burst(50, subsystems=("cpu",))
        time.sleep(0.1)
    calls = host.recorder.wait_calls(2, timeout=10)
    wait_until(lambda: len(daemon.logs.events("reload_done")) >= 2, 10, "two reloads done")
    aftermath()

    calls = host.recorder.calls()
    assert len(calls) == 2, calls
    assert calls[0].end is not None
    assert calls[1].start >= calls[0].end
    host.recorder.assert_never_concurrent()
    # One thread, one loop: the watchdog is fed while a reload runs.
    pings = [n.t for n in host.notify.items("WATCHDOG") if first.start <= n.t <= calls[1].start]
    assert len(pings) >= 2, "no watchdog pings during the reload"
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps, default=0.0) < 0.5, f"watchdog starved during a reload: {gaps}"


def test_storm_converges_and_never_runs_two_reloads(host: FakeHost) -> None:
    """Events every 50 ms for 2 s: max delay forces reloads during the storm, none overlap,
    and the last events are followed by a reload that starts after them."""
    host.recorder.set_knobs(duration_ms=300)
    daemon = host.start_daemon({"coalesce": {"max_delay_ms": 700}})
    storm_start = time.monotonic()
    while time.monotonic() - storm_start < 2.0:
        last_sent = daemon.send_burst(20, subsystems=("memory", "cpu"))
        time.sleep(0.05)
    wait_until(
        lambda: any(c.start > last_sent and c.end for c in host.recorder.calls()),
        10,
        "a reload after the last event",
    )
    aftermath()

    calls = host.recorder.calls()
    host.recorder.assert_never_concurrent()
    assert calls[0].start < last_sent, "max_delay_ms did not force a reload during the storm"
    assert sum(1 for c in calls if c.start > last_sent) == 1
    assert 2 <= len(calls) <= 6, calls


def test_sighup_good_config_takes_effect(host: FakeHost) -> None:
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    daemon = host.start_daemon()
    daemon.send_burst(10)
    daemon.logs.wait_for("kernel_handles")
    aftermath()
    assert host.recorder.count() == 0

    host.write_config({"policy": "always", "reload": {"command": host.recorder.argv}})
    hup = time.monotonic()
    daemon.signal(signal.SIGHUP)
    reloading = host.notify.wait_for("RELOADING", "1", after=hup)
    ready = host.notify.wait_for("READY", "1", after=reloading.t)
    loaded = daemon.logs.wait_for("config_loaded", after=hup)
    assert loaded["_t"] >= hup
    assert ready.t >= reloading.t

    daemon.send_burst(10)
    host.recorder.wait_calls(1)
    daemon.logs.wait_for("reload_done")
    assert daemon.logs.events("config_rejected") == []


def test_sighup_bad_config_is_rejected_old_one_stays(host: FakeHost) -> None:
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    daemon = host.start_daemon()
    good = host.config_path.read_text()
    # A valid change plus a typo: nothing of it may be applied.
    host.write_config(text=good.replace('policy = "auto"', 'policy = "always"') + "bogus = 1\n")
    hup = time.monotonic()
    daemon.signal(signal.SIGHUP)
    rejected = daemon.logs.wait_for("config_rejected", after=hup)
    reloading = host.notify.wait_for("RELOADING", "1", after=hup)
    host.notify.wait_for("READY", "1", after=reloading.t)  # systemd must leave "reloading"
    assert "bogus" in str(rejected)

    daemon.send_burst(10)
    daemon.logs.wait_for("kernel_handles")
    aftermath()
    assert host.recorder.count() == 0, "the rejected policy = always was applied"
    assert daemon.alive()
    assert [e for e in daemon.logs.events("config_loaded") if e["_t"] >= hup] == []


def test_sigterm_exits_zero_quickly(host: FakeHost) -> None:
    daemon = host.start_daemon()
    term = time.monotonic()
    daemon.signal(signal.SIGTERM)
    rc = daemon.wait(timeout=5)
    elapsed = time.monotonic() - term

    assert rc == 0
    assert elapsed < 2.0
    host.notify.wait_for("STOPPING", "1", after=term, timeout=1)
    daemon.logs.wait_for("daemon_stopping", timeout=1)


def test_ready_only_after_the_first_state_read(host: FakeHost) -> None:
    """kexec_crash_loaded is a FIFO: the first read blocks until the test answers it."""
    fifo = host.sysfs.kernel / "kexec_crash_loaded"
    fifo.unlink()
    os.mkfifo(fifo)
    daemon = host.start_daemon(wait_ready=False)

    answered = threading.Event()

    def answer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # blocks until the daemon opens it for reading
        try:
            host.sysfs.write(fifo, "1")  # later reads see a regular file
            os.write(fd, b"1\n")
            answered.set()
        finally:
            os.close(fd)

    time.sleep(1.5)  # the daemon is up and blocked in its first read by now
    assert host.notify.items("READY") == [], "READY=1 before the first state read"
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    thread.join(5)
    assert answered.is_set(), "the daemon never read kexec_crash_loaded"
    ready = daemon.wait_ready()
    status = [n for n in host.notify.items("STATUS") if n.t <= ready.t + 0.01]
    assert status, "no STATUS= with READY=1"
    assert "loaded" in status[-1].value.lower(), status


def test_status_and_watchdog(host: FakeHost) -> None:
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    daemon = host.start_daemon(watchdog_usec=400_000)
    time.sleep(1.0)
    pings = host.notify.items("WATCHDOG")
    assert len(pings) >= 2, "no WATCHDOG=1 with WATCHDOG_USEC set"
    status = host.notify.items("STATUS")[-1].value
    assert "kernel" in status.lower(), status
    assert daemon.alive()


def test_malformed_message_does_not_kill_the_daemon(host: FakeHost) -> None:
    """libudev fails with EINVAL on a message without SEQNUM; pyudev raises ValueError.

    Only root in the host's network namespace can send one, but one such message must not
    take the crash-kernel keeper down.
    """
    daemon = host.start_daemon()
    bad = udev_message(hotplug_event("cpu", "add", 1, host.next_seqnum())).replace(
        b"SEQNUM=", b"XEQNUM="
    )
    daemon.sender.send(bad)
    time.sleep(0.3)
    assert daemon.alive(), daemon.logs.text()
    daemon.send_burst(5)
    host.recorder.wait_calls(1)
    daemon.logs.wait_for("reload_done")


def test_kernel_source(host: FakeHost) -> None:
    """``[events] source = "kernel"``: kernel-format uevents, injected through the kernel."""
    daemon = host.start_daemon({"events": {"source": "kernel"}})
    host.grow(("memory",))
    for n in range(20):
        daemon.sender.inject_kernel(hotplug_event("memory", "online", n, 1, tags=()))
    host.recorder.wait_calls(1)
    burst = daemon.logs.wait_for("burst", action="reload")
    assert burst["events"] == 20
    # udev-group messages are not what this daemon listens to.
    daemon.send_burst(20)
    aftermath()
    assert host.recorder.count() == 1


def test_state_file_is_written_in_the_namespace(host: FakeHost) -> None:
    """/run/crashhp/state.json (our private /run): rewritten after a reload."""
    daemon = host.start_daemon()
    daemon.send_burst(10)
    daemon.logs.wait_for("reload_done")
    path = host.run / "crashhp" / "state.json"

    def reloads_recorded() -> bool:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(state, dict) and '"reloads": 1' in json.dumps(state)

    wait_until(reloads_recorded, 3, f"{path} to record the reload")


def test_new_kexec_sysfs_layout_alone(host: FakeHost) -> None:
    """A kernel with only /sys/kernel/kexec/ (the old names removed after 2028): crashhp
    works fully, and says which layout it found (issue 12, item 2)."""
    host.sysfs.new_layout_only()
    daemon = host.start_daemon()
    ready = daemon.logs.wait_for("daemon_ready")
    assert ready["kexec_layout"] == "kexec-dir"
    assert ready["crash_loaded"] is True
    daemon.send_burst(10)
    daemon.logs.wait_for("reload_done", timeout=10)
    assert (host.sysfs.kernel / "kexec" / "crash_loaded").read_text().strip() == "1"
    assert not (host.sysfs.kernel / "kexec_crash_loaded").exists()
    data = json.loads((host.run / "crashhp" / "state.json").read_text())
    assert (data["layout"], data["protection"]) == ("kexec-dir", "protected")
    assert host.recorder.image() == host.topology()
