"""The daemon's loop in-process: a fake uevent source on a real socket, a fake sysfs
tree, a real reload command (a Python script), the real clock with short timings."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from crashhp.config import Config, ConfigError, LoadedConfig
from crashhp.daemon import Daemon, Protection
from crashhp.model import Subsystem
from crashhp.uevents import MonitorOverflow, Uevent

CPU, MEM = Subsystem.CPU, Subsystem.MEMORY

# The reload command: records each call, fails while a counter file says so, then
# sets kexec_crash_loaded to 1 (or to 0 when told to leave the machine unprotected).
RELOADER = """
import json, sys, time, pathlib
root = pathlib.Path(sys.argv[1])
calls = root / "calls"
n = len(calls.read_text().splitlines()) if calls.exists() else 0
with calls.open("a") as f:
    f.write(f"{time.monotonic()}\\n")
loaded = root / "sys/kernel/kexec_crash_loaded"
loaded.write_text("0\\n")  # the unload
time.sleep(float((root / "sleep").read_text()) if (root / "sleep").exists() else 0)
fail = int((root / "fail").read_text()) if (root / "fail").exists() else 0
if n < fail:
    sys.exit(3)
loaded.write_text("1\\n")
"""


class FakeSource:
    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self.queue: list[Uevent] = []
        self.overflow = False
        self.closed = False

    def push(self, subsystem: Subsystem, count: int = 1, action: str = "add") -> None:
        for i in range(count):
            name = f"{subsystem.value}{i}"
            self.queue.append(Uevent(action, subsystem, name, i + 1, None))
        self._w.send(b"!")

    def push_overflow(self) -> None:
        self.overflow = True
        self._w.send(b"!")

    def fileno(self) -> int:
        return self._r.fileno()

    def drain(self, limit: int) -> tuple[list[Uevent], int]:
        with contextlib.suppress(BlockingIOError):
            self._r.recv(4096)
        if self.overflow:
            self.overflow = False
            raise MonitorOverflow
        out, self.queue = self.queue[:limit], self.queue[limit:]
        return out, 0

    def close(self) -> None:
        self.closed = True


class Notes:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, state: str) -> None:
        self.sent.append(state)


class Host:
    """A fake machine: sysfs tree, reload script, config, and the daemon on top."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sys = root / "sys"
        for sub in Subsystem:
            (self.sys / "devices/system" / sub.value).mkdir(parents=True)
        (self.sys / "kernel").mkdir(parents=True)
        (root / "proc").mkdir()
        (root / "proc/iomem").write_text("00001000-0009ffff : System RAM\n")
        (root / "reload.py").write_text(RELOADER)
        self.set(cpu="0", mem="0", loaded="1")
        self.sources: list[FakeSource] = []
        self.notes = Notes()
        self.config = self.make_config()
        self.bad_config = False

    def make_config(self, **reload: Any) -> Config:
        return Config.model_validate(
            {
                "coalesce": {"quiet_ms": 50, "max_delay_ms": 400, "settle_ms": 30},
                "reload": {
                    "method": "command",
                    "command": [sys.executable, str(self.root / "reload.py"), str(self.root)],
                    "timeout_s": 5,
                    "retries": 3,
                    "backoff_initial_s": 0.05,
                    "backoff_max_s": 0.2,
                    **reload,
                },
            }
        )

    def set(
        self, cpu: str | None = None, mem: str | None = None, loaded: str | None = None
    ) -> None:
        for name, value in (("cpu", cpu), ("memory", mem)):
            if value is not None:
                (self.sys / "devices/system" / name / "crash_hotplug").write_text(value + "\n")
        if loaded is not None:
            (self.sys / "kernel/kexec_crash_loaded").write_text(loaded + "\n")

    def load(self) -> LoadedConfig:
        if self.bad_config:
            raise ConfigError("/etc/crashhp/crashhp.toml", "policy", "Input should be 'auto'")
        return LoadedConfig(self.config, files=())

    def source(self, config: Config) -> FakeSource:
        self.sources.append(FakeSource())
        return self.sources[-1]

    def daemon(self) -> Daemon:
        d = Daemon(
            self.load,
            self.notes,
            source_factory=self.source,
            sysfs=self.sys,
            procfs=self.root / "proc",
            state_dir=self.root / "run",
        )
        d.start(signals=False)
        return d

    @property
    def calls(self) -> int:
        path = self.root / "calls"
        return len(path.read_text().splitlines()) if path.exists() else 0


def spin(daemon: Daemon, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        daemon.turn(max_wait=end - time.monotonic())


def spin_until(daemon: Daemon, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Turn the loop until ``predicate`` holds (robust against a loaded machine)."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        daemon.turn(max_wait=0.01)


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    yield Host(tmp_path)
    structlog.reset_defaults()


def test_ready_after_first_read_and_status(host: Host) -> None:
    host.set(cpu="1", mem="1")
    d = host.daemon()
    assert host.notes.sent[0].startswith("READY=1\nSTATUS=crash kernel loaded; kernel updates")
    assert d.protection is Protection.PROTECTED
    state = json.loads((host.root / "run/state.json").read_text())
    assert state["protection"] == "protected"
    assert state["loaded_topology"]


def test_burst_reloads_once_after_confirming_the_zero(host: Host) -> None:
    d = host.daemon()
    with capture_logs() as logs:
        host.sources[0].push(MEM, 1000)
        spin_until(d, lambda: d.counters.reloads == 1)
        spin(d, 0.3)
    assert host.calls == 1
    assert d.counters.reloads == 1
    [burst] = events(logs, "burst")
    assert burst["events"] == 1000
    assert burst["action"] == "reload"
    assert burst["decision"] == "kernel_says_reload"
    assert events(logs, "reload_done")
    assert d.protection is Protection.PROTECTED


def test_kernel_handles_it(host: Host) -> None:
    host.set(cpu="1", mem="1")
    d = host.daemon()
    with capture_logs() as logs:
        host.sources[0].push(CPU, 3)
        spin(d, 0.3)
    assert host.calls == 0
    assert events(logs, "kernel_handles")[0]["events"] == 3


def test_nothing_loaded(host: Host) -> None:
    host.set(loaded="0")
    d = host.daemon()
    with capture_logs() as logs:
        host.sources[0].push(CPU)
        spin(d, 0.3)
    assert host.calls == 0
    assert events(logs, "not_loaded")
    assert d.protection is Protection.NOT_LOADED


def test_a_transient_zero_is_not_trusted(host: Host) -> None:
    d = host.daemon()
    host.sources[0].push(MEM, 5)
    deadline = time.monotonic() + 1
    while d._settling is None and time.monotonic() < deadline:
        d.turn(max_wait=0.01)
    assert d._settling is not None  # the first read saw 0 and waits for the settle time
    host.set(cpu="1", mem="1")  # the kexec lock was only busy
    spin(d, 0.3)
    assert host.calls == 0


def test_failing_then_recovering(host: Host) -> None:
    (host.root / "fail").write_text("2")
    d = host.daemon()
    with capture_logs() as logs:
        host.sources[0].push(CPU)
        spin_until(d, lambda: d.protection is Protection.UNPROTECTED)
        assert any("UNPROTECTED" in n for n in host.notes.sent)
        spin_until(d, lambda: d.protection is Protection.PROTECTED)
        spin(d, 0.3)
    assert host.calls == 3
    assert len(events(logs, "reload_failed")) == 2
    assert len(events(logs, "unprotected")) == 1
    assert len(events(logs, "recovered")) == 1
    assert Protection(d.protection) is Protection.PROTECTED
    assert d.counters.reloads == 1


def test_retries_are_bounded(host: Host) -> None:
    (host.root / "fail").write_text("99")
    d = host.daemon()
    with capture_logs() as logs:
        host.sources[0].push(CPU)
        spin_until(d, lambda: any(e["event"] == "reload_given_up" for e in logs))
        spin(d, 0.3)
    assert host.calls == 4  # the attempt and retries = 3
    assert events(logs, "reload_given_up")
    assert d.protection is Protection.UNPROTECTED
    # The next event tries again: the crash kernel is owed even though none is loaded.
    host.sources[0].push(CPU)
    (host.root / "fail").write_text("0")
    spin_until(d, lambda: d.counters.reloads == 1)
    assert host.calls == 5
    assert Protection(d.protection) is Protection.PROTECTED


def test_events_during_a_reload_cause_one_follow_up(host: Host) -> None:
    (host.root / "sleep").write_text("0.4")
    d = host.daemon()
    host.sources[0].push(MEM, 10)
    spin_until(d, lambda: d._attempt is not None)  # reloading now
    for _ in range(20):
        host.sources[0].push(MEM, 50)
        d.turn(max_wait=0.01)
    spin_until(d, lambda: d.counters.reloads == 2)
    spin(d, 0.3)
    assert host.calls == 2
    starts = [float(x) for x in (host.root / "calls").read_text().split()]
    assert starts[1] - starts[0] >= 0.4  # never two at once


def test_timeout_fails_the_attempt(host: Host) -> None:
    host.config = host.make_config(timeout_s=0.2, retries=0)
    (host.root / "sleep").write_text("30")
    d = host.daemon()
    with capture_logs() as logs:
        host.sources[0].push(CPU)
        started = time.monotonic()
        spin_until(d, lambda: d.counters.failures == 1)
    [failed] = events(logs, "reload_failed")
    assert "timed out" in failed["reason"]
    assert time.monotonic() - started < 2


def test_overflow_rebuilds_the_monitor_and_resyncs(host: Host) -> None:
    d = host.daemon()
    with capture_logs() as logs:
        host.sources[0].push_overflow()
        spin_until(d, lambda: d.counters.reloads == 1)
        spin(d, 0.2)
    assert host.sources[0].closed
    assert len(host.sources) == 2
    assert events(logs, "monitor_overflow")
    assert host.calls == 1  # everything counts as changed: one reload


def test_reconfigure_good_and_bad(host: Host) -> None:
    d = host.daemon()
    host.config = host.make_config(retries=7)
    with capture_logs() as logs:
        d.reconfigure()
        assert d.config.reload.retries == 7
        host.bad_config = True
        d.reconfigure()
    assert d.config.reload.retries == 7
    assert events(logs, "config_rejected")[0]["key"] == "policy"
    assert host.notes.sent[-4:] == [
        host.notes.sent[-4],
        f"READY=1\nSTATUS={d.status_line()}",
        host.notes.sent[-2],
        f"READY=1\nSTATUS={d.status_line()}",
    ]
    assert host.notes.sent[-4].startswith("RELOADING=1\nMONOTONIC_USEC=")


def test_stop_waits_for_a_running_reload(host: Host) -> None:
    (host.root / "sleep").write_text("0.3")
    d = host.daemon()
    host.sources[0].push(CPU)
    spin_until(d, lambda: d._attempt is not None)
    d.request_stop("SIGTERM")
    assert not d.finished
    end = time.monotonic() + 3
    while not d.finished and time.monotonic() < end:
        d.turn(max_wait=0.05)
    assert d.finished
    assert host.calls == 1
    assert d.counters.reloads == 1
    assert d.close() == 0


def test_restart_after_a_topology_change_reloads(host: Host) -> None:
    d = host.daemon()
    d.close()
    # While the daemon was down, memory was added and its events were lost.
    (host.root / "proc/iomem").write_text(
        "00001000-0009ffff : System RAM\n100000000-13fffffff : System RAM\n"
    )
    d2 = host.daemon()
    spin_until(d2, lambda: d2.counters.reloads == 1)
    assert host.calls == 1
    d3 = host.daemon()  # and a restart without a change does nothing
    spin(d3, 0.3)
    assert host.calls == 1


def test_restart_during_a_reload_loads_the_owed_crash_kernel(host: Host) -> None:
    (host.root / "sleep").write_text("5")
    d = host.daemon()
    host.sources[0].push(CPU)
    loaded = host.sys / "kernel/kexec_crash_loaded"
    spin_until(d, lambda: host.calls == 1 and loaded.read_text() == "0\n")
    assert d._attempt is not None
    assert d._attempt.running is not None
    assert json.loads((host.root / "run/state.json").read_text())["reloading"] is True
    # The daemon dies here (SIGKILL): its command is killed with it (systemd kills the
    # cgroup) after the unload and before the load.
    d._attempt.running.kill()
    d._attempt.running.finish()
    d._lock.release()
    assert (host.sys / "kernel/kexec_crash_loaded").read_text() == "0\n"
    (host.root / "sleep").write_text("0")
    d2 = host.daemon()
    assert d2.protection is Protection.UNPROTECTED
    spin_until(d2, lambda: d2.counters.reloads == 1)
    assert host.calls == 2
    assert (host.sys / "kernel/kexec_crash_loaded").read_text() == "1\n"
    assert Protection(d2.protection) is Protection.PROTECTED


def test_kernel_handled_bursts_keep_the_topology_record_current(host: Host) -> None:
    host.set(cpu="1", mem="1")
    d = host.daemon()
    (host.root / "proc/iomem").write_text("00001000-0009ffff : System RAM\n1-2 : System RAM\n")
    with capture_logs() as logs:
        host.sources[0].push(MEM, 8)
        spin(d, 0.3)
    assert events(logs, "kernel_handles")
    d.close()
    with capture_logs() as logs:
        d2 = host.daemon()
        spin(d2, 0.2)
    assert not events(logs, "topology_changed_while_down")
    assert host.calls == 0
