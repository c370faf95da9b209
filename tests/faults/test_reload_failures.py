"""Reload failures: bounded retries with backoff, UNPROTECTED said loudly, recovery at once.

Each case drives the reload recorder (``[reload] method = "command"``) into one failure:
a non-zero exit, a hang past the timeout, a program that does not exist, a "success" that
leaves nothing loaded, EBUSY from a concurrent kexec, and crashhp's own reload lock held by
another process. Whatever happens, two reload commands never run at once.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.nshost import Daemon, FakeHost, process_gone, wait_until

pytestmark = pytest.mark.faults

RETRIES = {"retries": 3, "backoff_initial_s": 0.2, "backoff_max_s": 0.4}
# Long enough after the last retry for one more (unwanted) attempt to have started.
AFTERMATH_S = 1.2


@contextmanager
def flock_held(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds an exclusive flock on ``path`` until the block ends."""
    code = (
        "import fcntl, sys\n"
        "f = open(sys.argv[1], 'a')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait(5)


def statuses(host: FakeHost) -> list[str]:
    return [n.value for n in host.notify.items("STATUS")]


def state(host: FakeHost) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((host.run / "crashhp" / "state.json").read_text())
    return data


def assert_error(daemon: Daemon, event: str) -> dict[str, Any]:
    """The event was logged at level error (PRIORITY err, 3, in the journal)."""
    records = daemon.logs.events(event)
    assert records, f"no {event!r} logged:\n{daemon.logs.text()}"
    assert all(r["level"] == "error" for r in records), records
    return records[0]


def assert_backoff(gaps: list[float], expected: list[float]) -> None:
    """Each wait between attempts is at least the backoff, and not much more."""
    assert len(gaps) == len(expected), gaps
    for gap, want in zip(gaps, expected, strict=True):
        assert want * 0.9 <= gap <= want + 0.8, f"backoff {gaps} vs {expected}"


def test_nonzero_exit_bounded_retries_then_recovery(host: FakeHost) -> None:
    host.recorder.set_knobs(fail=100)
    daemon = host.start_daemon({"reload": RETRIES})
    daemon.send_burst(50)
    daemon.logs.wait_for("reload_given_up", timeout=10)
    time.sleep(AFTERMATH_S)

    calls = host.recorder.calls()
    assert [c.rc for c in calls] == [1, 1, 1, 1], "not 1 attempt + 3 retries"
    gaps = [b.start - a.end for a, b in itertools.pairwise(calls) if a.end]
    assert_backoff(gaps, [0.2, 0.4, 0.4])  # doubling, capped at backoff_max_s
    failed = daemon.logs.events("reload_failed")
    assert len(failed) == 4
    assert all(f["level"] == "error" for f in failed)
    assert "exited with status 1" in failed[0]["reason"]
    assert "simulated failure" in failed[0]["output"]
    assert len(daemon.logs.events("unprotected")) == 1, "UNPROTECTED must be said once"
    assert_error(daemon, "unprotected")
    assert any(s.startswith("UNPROTECTED") for s in statuses(host)), statuses(host)
    assert state(host)["protection"] == "unprotected"
    assert host.sysfs.loaded() == "0"

    # The next event tries again; the first load that works ends UNPROTECTED at once.
    host.recorder.set_knobs()
    daemon.send_burst(5)
    done = daemon.logs.wait_for("reload_done")
    recovered = daemon.logs.wait_for("recovered")
    assert recovered["_t"] - done["_t"] < 0.5
    assert not statuses(host)[-1].startswith("UNPROTECTED"), statuses(host)
    assert state(host)["protection"] == "protected"
    host.recorder.assert_never_concurrent()


def test_hang_past_timeout_every_attempt_is_killed_before_the_next(host: FakeHost) -> None:
    host.recorder.set_knobs(hang=True)
    daemon = host.start_daemon({"reload": {**RETRIES, "retries": 2, "timeout_s": 0.6}})
    daemon.send_burst(10)
    daemon.logs.wait_for("reload_given_up", timeout=15)
    time.sleep(AFTERMATH_S)

    calls = host.recorder.calls()
    assert len(calls) == 3, calls
    assert not any(c.overlap for c in calls), f"a reload started while one ran: {calls}"
    assert all(c.end is None and c.hang_child for c in calls), calls  # killed, not finished
    pids = [p for c in calls for p in (c.pid, c.hang_child or 0)]
    wait_until(lambda: all(process_gone(p) for p in pids), 3, "every command and child to die")
    failed = daemon.logs.events("reload_failed")
    assert [("timed out" in f["reason"]) for f in failed] == [True, True, True]
    # Each attempt is killed (reload_failed) before the next one starts.
    for f, nxt in zip(failed, calls[1:], strict=False):
        assert f["_t"] <= nxt.start + 0.05
    assert len(daemon.logs.events("unprotected")) == 1
    assert daemon.alive()


def test_missing_program_is_a_failure_the_old_image_stays(host: FakeHost) -> None:
    """Nothing ran, so the old crash kernel is still loaded: STALE, not UNPROTECTED."""
    daemon = host.start_daemon(
        {"reload": {**RETRIES, "retries": 2, "command": ["/nonexistent/reload-kdump"]}}
    )
    daemon.send_burst(10)
    daemon.logs.wait_for("reload_given_up", timeout=10)

    failed = daemon.logs.events("reload_failed")
    assert len(failed) == 3
    assert all("/nonexistent/reload-kdump" in f["reason"] for f in failed), failed
    assert all("No such file" in f["reason"] for f in failed), failed
    assert daemon.logs.events("unprotected") == []
    assert host.sysfs.loaded() == "1"
    assert any("STALE" in s for s in statuses(host)), statuses(host)
    assert state(host)["protection"] == "stale"
    assert daemon.alive()


def test_success_that_leaves_nothing_loaded_gives_up_then_recovers(host: FakeHost) -> None:
    host.recorder.set_knobs(leave_unloaded=True)
    daemon = host.start_daemon({"reload": {**RETRIES, "retries": 2}})
    daemon.send_burst(10)
    daemon.logs.wait_for("reload_given_up", timeout=10)
    time.sleep(AFTERMATH_S)

    assert [c.rc for c in host.recorder.calls()] == [0, 0, 0]
    failed = daemon.logs.events("reload_failed")
    assert all("not loaded afterwards" in f["reason"] for f in failed), failed
    assert_error(daemon, "unprotected")
    assert statuses(host)[-1].startswith("UNPROTECTED"), statuses(host)

    host.recorder.set_knobs()
    daemon.send_burst(5)
    daemon.logs.wait_for("recovered")
    assert host.sysfs.loaded() == "1"
    host.recorder.assert_never_concurrent()


def test_ebusy_from_a_concurrent_kexec_retries_until_it_is_free(host: FakeHost) -> None:
    """kexec fails with EBUSY while another kexec holds the kernel's lock (modelled by an
    flock another process holds): UNPROTECTED, retries with backoff, and the first retry
    after the lock is free loads it; events meanwhile never start a second command."""
    kexec_lock = host.base / "kexec.lock"
    host.recorder.set_knobs(ebusy_lock=kexec_lock)
    daemon = host.start_daemon({"reload": {"retries": 8, "backoff_initial_s": 0.2}})
    with flock_held(kexec_lock):
        daemon.send_burst(100)
        wait_until(lambda: len(host.recorder.calls()) >= 3, 10, "three EBUSY attempts")
        daemon.logs.wait_for("unprotected")
        daemon.send_burst(100, subsystems=("cpu",))  # more hotplug during the retries
        wait_until(lambda: len(host.recorder.calls()) >= 4, 10, "a fourth EBUSY attempt")
        busy_statuses = statuses(host)
    released = time.monotonic()
    done = daemon.logs.wait_for("reload_done", timeout=5)
    recovered = daemon.logs.wait_for("recovered")
    time.sleep(AFTERMATH_S)

    calls = host.recorder.calls()
    ok = [c for c in calls if c.rc == 0]
    assert all(c.ebusy for c in calls if c.rc != 0), calls
    assert len(ok) == 1, calls
    assert ok[0].start > released
    # backoff_max_s is 1.0 here: the load comes at most one backoff after the release.
    assert done["_t"] - released < 1.0 + 0.8
    assert recovered["_t"] >= done["_t"]
    assert "Device or resource busy" in daemon.logs.events("reload_failed")[0]["output"]
    assert any(s.startswith("UNPROTECTED") for s in busy_statuses), busy_statuses
    assert not statuses(host)[-1].startswith("UNPROTECTED")
    host.recorder.assert_never_concurrent()


def test_reload_lock_held_by_another_process(host: FakeHost) -> None:
    """`crashhp reload` by hand holds $RUNTIME_DIRECTORY/reload.lock: the daemon does not
    run its command beside it, waits (not a failure: no error, no retry spent), and
    reloads once the lock is free."""
    daemon = host.start_daemon({"reload": {"retries": 0, "backoff_initial_s": 0.2}})
    with flock_held(host.run / "crashhp" / "reload.lock"):
        daemon.send_burst(50)
        waiting = daemon.logs.wait_for("reload_waiting", timeout=5)
        wait_until(lambda: len(daemon.logs.events("reload_waiting")) >= 3, 5, "three looks")
        assert host.recorder.count() == 0, "a reload ran while another held the lock"
        assert "reload.lock" in waiting["reason"], waiting
    released = time.monotonic()
    done = daemon.logs.wait_for("reload_done", timeout=5)

    assert done["_t"] - released < 1.0 + 0.8
    assert host.recorder.count() == 1
    assert daemon.logs.events("reload_failed") == []  # retries = 0, and yet it loaded
    assert daemon.logs.events("unprotected") == []  # the old image stayed loaded
    assert host.sysfs.loaded() == "1"


def test_crash_kernel_loaded_by_someone_else_after_giving_up(host: FakeHost) -> None:
    """After crashhp gave up, the admin loads a crash kernel by hand: UNPROTECTED must end
    without waiting for the next hotplug event."""
    host.recorder.set_knobs(fail=100)
    daemon = host.start_daemon({"reload": {**RETRIES, "retries": 1}})
    daemon.send_burst(10)
    daemon.logs.wait_for("reload_given_up", timeout=10)
    assert statuses(host)[-1].startswith("UNPROTECTED")

    host.sysfs.set(loaded="1")  # e.g. `kdumpctl restart`
    loaded_at = time.monotonic()
    recovered = daemon.logs.wait_for("recovered", timeout=10)

    assert recovered["_t"] - loaded_at < 3.0
    assert not statuses(host)[-1].startswith("UNPROTECTED"), statuses(host)
    assert state(host)["protection"] == "protected"
    assert host.recorder.count() == 2  # nothing more was run


def test_sighup_tries_a_given_up_reload_again(host: FakeHost) -> None:
    """reload_given_up says `systemctl reload crashhp` tries again: it must."""
    daemon = host.start_daemon(
        {"reload": {**RETRIES, "retries": 1, "command": ["/nonexistent/reload-kdump"]}}
    )
    daemon.send_burst(10)
    given_up = daemon.logs.wait_for("reload_given_up", timeout=10)
    assert "systemctl reload crashhp" in given_up["text"]
    assert state(host)["protection"] == "stale"

    host.write_config({"reload": RETRIES})  # the admin fixes the command
    hup = time.monotonic()
    daemon.signal(signal.SIGHUP)
    daemon.logs.wait_for("config_loaded", after=hup)
    done = daemon.logs.wait_for("reload_done", timeout=5)
    daemon.logs.wait_for("recovered", after=hup)

    assert done["_t"] - hup < 1.5
    assert host.recorder.count() == 1
    assert state(host)["protection"] == "protected"


class JournalListener:
    """A fake journald: the native protocol socket at /run/systemd/journal/socket of the
    namespace (its /run is the fake host's), one dict of fields per datagram."""

    def __init__(self, run: Path) -> None:
        path = run / "systemd" / "journal" / "socket"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            fields = dict(
                line.split("=", 1)
                for line in data.decode(errors="replace").splitlines()
                if "=" in line
            )
            self.messages.append(fields)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def events(self, name: str) -> list[dict[str, str]]:
        return [m for m in list(self.messages) if m.get("CRASHHP_EVENT") == name]


def test_unprotected_reaches_the_journal_at_priority_err(host: FakeHost) -> None:
    """log.format = "journal": native journald fields, PRIORITY 3 and the MESSAGE_IDs."""
    journal = JournalListener(host.run)
    try:
        host.recorder.set_knobs(fail=100)
        daemon = host.start_daemon({"log": {"format": "journal"}, "reload": RETRIES})
        daemon.send_burst(10)
        wait_until(lambda: journal.events("reload_given_up"), 10, "reload_given_up in the journal")
        host.recorder.set_knobs()
        daemon.send_burst(10)
        wait_until(lambda: journal.events("recovered"), 10, "recovered in the journal")
    finally:
        journal.close()
    (unprotected,) = journal.events("unprotected")
    assert unprotected["PRIORITY"] == "3"
    assert unprotected["MESSAGE_ID"] == "f66ed305cf264ed29dacf7f75891b052"
    assert unprotected["SYSLOG_IDENTIFIER"] == "crashhp"
    assert "no crash kernel is loaded" in unprotected["MESSAGE"]
    assert {m["PRIORITY"] for m in journal.events("reload_failed")} == {"3"}
    (recovered,) = journal.events("recovered")
    assert recovered["PRIORITY"] == "6"
    assert recovered["MESSAGE_ID"] == "33b18b52718c4db9ae22026fae74ada7"
