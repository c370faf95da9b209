"""Part 3: what crashhp costs while nothing happens, and how fast it is ready.

- **Start-up**: from the exec of ``python -m crashhp daemon`` (the moment ``nsinit`` reports
  its mounts done and execs: :meth:`FakeHost.spawn` returns) to the ``READY=1`` datagram on
  the notify socket. Several starts; the median is reported.
- **RSS**: ``VmRSS`` one second after ``READY=1``.
- **Idle wake-ups**: two daemons side by side for the same window, one without and one with
  ``WATCHDOG_USEC``; the voluntary context switches of all its threads over the window (each
  wake-up ends in one: the thread blocks again), and the ``WATCHDOG=1`` pings received in it
  (every wake-up but those is "beyond the watchdog"). schedstat's run count, which also
  counts preemptions, is reported alongside.
"""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import procfs
from benchmarks.pipeline import PACKAGED
from benchmarks.report import Problems
from tests.support.nshost import Daemon, FakeHost


@dataclass
class Idle:
    label: str
    watchdog_usec: int | None
    window_s: float
    wakeups: procfs.Wakeups
    pings: int

    @property
    def per_minute(self) -> float:
        # A wake-up ends in a voluntary switch (the thread blocks again); involuntary ones
        # are preemptions while it ran, and schedstat's run count includes both.
        return self.wakeups.voluntary * 60 / self.window_s

    @property
    def pings_per_minute(self) -> float:
        return self.pings * 60 / self.window_s

    @property
    def beyond_watchdog_per_minute(self) -> float:
        return max(0, self.wakeups.voluntary - self.pings) * 60 / self.window_s


@dataclass
class Figures:
    ready_s: list[float] = field(default_factory=list)
    rss_kib: int = 0
    idle: list[Idle] = field(default_factory=list)

    @property
    def ready_median_s(self) -> float:
        return statistics.median(self.ready_s) if self.ready_s else float("nan")


def start_up(base: Path, problems: Problems, starts: int = 5) -> Figures:
    figures = Figures()
    with FakeHost(base) as host:
        for i in range(starts):
            daemon = host.start_daemon(PACKAGED, wait_ready=False)
            execed = time.monotonic()
            ready = daemon.wait_ready(timeout=30)
            figures.ready_s.append(ready.t - execed)
            if i == 0:
                time.sleep(1.0)
                figures.rss_kib = procfs.memory_kib(daemon.pid).get("VmRSS", 0)
            rc = daemon.stop()
            if rc != 0:
                problems.add(f"crashhp exited {rc} on SIGTERM: {daemon.logs.text(10)}")
    return figures


def idle(base: Path, figures: Figures, problems: Problems, window_s: float = 30.0) -> None:
    """Both daemons idle over the same window: without and with a 10 s watchdog."""
    variants: list[tuple[str, int | None]] = [
        ("no watchdog", None),
        ("WATCHDOG_USEC=10 s", 10_000_000),
    ]
    with ExitStack() as stack:
        daemons: list[tuple[str, int | None, Daemon]] = []
        for n, (label, usec) in enumerate(variants):
            host = stack.enter_context(FakeHost(base / f"idle{n}"))
            daemons.append((label, usec, host.start_daemon(PACKAGED, watchdog_usec=usec)))
        time.sleep(2.0)  # past start-up: imports done, first state written
        before = [procfs.wakeups(d.pid) for _, _, d in daemons]
        t0 = time.monotonic()
        time.sleep(window_s)
        after = [procfs.wakeups(d.pid) for _, _, d in daemons]
        t1 = time.monotonic()
        for (label, usec, daemon), b, a in zip(daemons, before, after, strict=True):
            pings = [n for n in daemon.notify.items("WATCHDOG") if t0 <= n.t <= t1]
            figures.idle.append(Idle(label, usec, t1 - t0, a - b, len(pings)))
            if not daemon.alive():
                problems.add(f"crashhp ({label}) died while idle: {daemon.logs.text(10)}")
