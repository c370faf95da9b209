"""Parts 1 and 4: a burst of memory-block uevents through crashhp and through a per-event helper.

Both designs run in a :class:`tests.support.nshost.FakeHost` of their own (a private network and
mount namespace over a fake sysfs, where ``crash_hotplug`` reads 0 and ``kexec_crash_loaded``
reads 1: a crash kernel loaded with kexec_load without ``--hotplug``). The same pre-built
udev-format messages (``ACTION=online``, ``SUBSYSTEM=memory``, ``memoryN``) are multicast on
the namespace's netlink at full speed, and one design runs at a time, so the two never compete
for the two CPUs.

- **crashhp**: the real daemon (``python -m crashhp daemon``) with the packaged coalescing
  defaults (quiet 500 ms, maximum delay 5 s, settle 200 ms), the packaged 128 MiB receive
  buffer, and the tests' reload recorder as its reload command. Events handled: the daemon's
  own count (``state.json``); done: its last burst line; last event received: that line's
  time minus its ``since_last_event_ms``.
- **per-event helper**: :mod:`benchmarks.dispatcher` (udevd's part) starting
  ``flock LOCK cat /sys/devices/system/memory/crash_hotplug /sys/kernel/kexec_crash_loaded``
  per event (the helper's part). Done: the last helper reaped.

Events/s = events handled / (last one handled - first one sent). CPU = the process and every
child it reaped (``/proc/PID/stat``), from just before the first send to the end.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import procfs
from benchmarks.report import Problems
from tests.support.nshost import Daemon, FakeHost, WaitTimeout, wait_until

# crashhp's packaged defaults (crashhp/config.py), spelled out: the benchmark measures them.
PACKAGED: dict[str, Any] = {
    "coalesce": {"quiet_ms": 500, "max_delay_ms": 5000, "settle_ms": 200},
    "events": {"receive_buffer_bytes": 128 << 20},
}
# Long enough after a reload finished for a second one to have started, were one due.
AFTER_RELOAD_S = 2.0
LOCK = "/run/kdump-helper.lock"
HELPER_FILES = ("/sys/devices/system/memory/crash_hotplug", "/sys/kernel/kexec_crash_loaded")
Say = Callable[[str], None]


def helper_argv() -> list[str]:
    flock, cat = shutil.which("flock"), shutil.which("cat")
    if flock is None or cat is None:
        raise RuntimeError("the helper needs flock(1) and cat(1) (util-linux, coreutils)")
    return [flock, LOCK, cat, *HELPER_FILES]


@dataclass
class Run:
    """One burst through one design."""

    design: str  # "crashhp" or "helper"
    sent: int
    handled: int
    seconds: float  # first event sent -> last event handled
    cpu: procfs.Cpu
    reloads: int  # crashhp: reload commands started; helper: reloads due (not run)
    send_rate: float
    restore_ms: float | None = None  # crashhp: last event received -> reload done
    overflows: int = 0
    notes: list[str] = field(default_factory=list)
    each: list[tuple[float, int]] = field(default_factory=list)  # (events/s, reloads) per burst

    @property
    def rate(self) -> float:
        return self.handled / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu.total_s / self.sent * 1e6


def _state(host: FakeHost) -> dict[str, Any]:
    path = host.run / "crashhp" / "state.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _events_counted(host: FakeHost) -> int:
    counters = _state(host).get("counters", {})
    return int(counters.get("events", 0)) if isinstance(counters, dict) else 0


@contextmanager
def crashhp_host(base: Path, problems: Problems) -> Iterator[tuple[FakeHost, Daemon]]:
    """A fake host running crashhp with the packaged defaults; checks it survived."""
    with FakeHost(base) as host:
        daemon = host.start_daemon(PACKAGED)
        yield host, daemon
        if not daemon.alive():
            problems.add(f"crashhp died (exit {daemon.popen.poll()}): {daemon.logs.text(20)}")


def crashhp_burst(host: FakeHost, daemon: Daemon, count: int, problems: Problems) -> Run:
    """Send ``count`` events to a running crashhp; wait until it reloaded and settled."""
    logs = daemon.logs
    payloads = host.burst(count, subsystems=("memory",), action="online")
    n_done = len(logs.events("reload_done"))
    n_failed = len(logs.events("reload_failed"))
    calls_before = host.recorder.count()
    counted_before = _events_counted(host)
    cpu0 = procfs.cpu(daemon.pid)
    first = time.monotonic()
    report = daemon.sender.send_many(payloads)
    timeout = 30 + count / 2000
    try:
        wait_until(
            lambda: len(logs.events("reload_done")) > n_done or not daemon.alive(),
            timeout,
            "reload_done",
        )
    except WaitTimeout:
        problems.add(f"crashhp, {count:,} events: no reload done within {timeout:.0f} s")
    # A second reload (a burst longer than max_delay_ms) would have started by now.
    time.sleep(AFTER_RELOAD_S)
    wait_until(lambda: not host.recorder.calls() or host.recorder.calls()[-1].end, 30, "reload")
    cpu1 = procfs.cpu(daemon.pid) if daemon.alive() else cpu0
    bursts = [b for b in logs.events("burst") if b["_t"] >= first]
    overflows = [o for o in logs.events("monitor_overflow") if o["_t"] >= first]
    failed = logs.events("reload_failed")[n_failed:]
    reloads = host.recorder.count() - calls_before
    handled = _events_counted(host) - counted_before
    run = Run("crashhp", count, handled, float("nan"), cpu1 - cpu0, reloads, report.rate)
    run.overflows = len(overflows)
    if bursts:
        last = bursts[-1]
        last_rx = last["_t"] - float(last["since_last_event_ms"]) / 1000
        run.seconds = last_rx - first
        done = [d for d in logs.events("reload_done") if d["_t"] >= last_rx]
        if done:
            run.restore_ms = (done[0]["_t"] - last_rx) * 1000
    if not daemon.alive():
        problems.add(f"crashhp died during the {count:,}-event burst: {logs.text(20)}")
    if reloads == 0:
        problems.add(f"crashhp, {count:,} events: no reload started where one was due")
    if failed:
        problems.add(f"crashhp, {count:,} events: reload failed: {failed[0].get('reason')}")
    if any(c.overlap for c in host.recorder.calls()):
        problems.add(f"crashhp, {count:,} events: two reload commands ran at once")
    if run.overflows:
        run.notes.append(
            f"receive buffer overflowed {run.overflows}x: the daemon rebuilt its monitor and "
            f"resynced; it counted {handled:,} of {count:,} events"
        )
    elif handled != count:
        run.notes.append(f"the daemon counted {handled:,} of {count:,} events")
    return run


def helper_burst(base: Path, count: int, problems: Problems, max_children: int = 0) -> Run:
    """Send ``count`` events to the dispatcher in a fresh fake host; wait for every helper."""
    with FakeHost(base) as host:
        argv = [sys.executable, "-m", "benchmarks.dispatcher", "--expect", str(count)]
        argv += ["--max-children", str(max_children), "--", *helper_argv()]
        proc = host.spawn(argv)
        ready = proc.stdout.wait_for("ready", timeout=30)
        cpu0 = procfs.cpu(proc.pid)
        payloads = host.burst(count, subsystems=("memory",), action="online")
        first = time.monotonic()
        report = proc.sender.send_many(payloads)
        timeout = 60 + count / 100
        try:
            done = proc.stdout.wait_for("done", timeout=timeout)
        except WaitTimeout:
            problems.add(f"helper, {count:,} events: not done within {timeout:.0f} s")
            done = {}
        cpu1 = procfs.cpu(proc.pid) if procfs.alive(proc.pid) else cpu0
        exited = int(done.get("exited", 0))
        last_exit = done.get("last_exit")
        run = Run(
            "helper",
            count,
            exited,
            (float(last_exit) - first) if last_exit is not None else float("nan"),
            cpu1 - cpu0,
            int(done.get("reload_due", 0)),
            report.rate,
        )
        run.overflows = int(done.get("overflows", 0))
        run.notes.append(
            f"up to {ready['max_children']} helpers at once (udevd's children_max here); "
            f"{done.get('max_running', '?')} reached"
        )
        if done.get("failed"):
            run.notes.append(f"{done['failed']} helpers failed: {done.get('statuses')}")
        if exited != count:
            problems.add(f"helper, {count:,} events: {exited:,} helpers ran ({done})")
        return run


def median_run(runs: Sequence[Run]) -> Run:
    """The run with the median events/s (keeps its own CPU and reload figures)."""
    ordered = sorted(runs, key=lambda r: r.rate)
    pick = ordered[len(ordered) // 2]
    pick.each = [(r.rate, r.reloads) for r in runs]
    return pick


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):,.0f} (min {min(values):,.0f}, max {max(values):,.0f})"
