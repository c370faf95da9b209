"""Figures of the real daemon on real netlink, measured, printed, never asserted.

``python -m tests.integration.figures`` (root; about 15 s). With the packaged coalescing
defaults (quiet 500 ms, max delay 5 s, settle 200 ms) and the reload recorder as the command:

- reloads per 1,000-event burst (mixed cpu and memory ``online``/``add``);
- ms from the last event sent to the reload command's start (the recorder's own clock), and
  the daemon's own ``since_last_event_ms``;
- events/s through the daemon: 20,000 events sent at full speed into the default 128 MiB
  buffer; from the first send to the last event the daemon received (its ``reload_started``
  line minus its ``since_last_event_ms``), and the daemon's CPU time per event;
- idle RSS of the daemon after start-up.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.nshost import Daemon, FakeHost, wait_until

DEFAULTS: dict[str, Any] = {
    "coalesce": {"quiet_ms": 500, "max_delay_ms": 5000, "settle_ms": 200},
    "events": {"receive_buffer_bytes": 128 << 20},
}


@dataclass
class Figures:
    reloads_per_burst: list[int] = field(default_factory=list)
    last_event_to_start_ms: list[float] = field(default_factory=list)
    daemon_since_last_event_ms: list[float] = field(default_factory=list)
    send_rate: float = 0.0
    flood_events: int = 0
    flood_received: int = 0
    daemon_rate: float = 0.0
    cpu_us_per_event: float = 0.0
    overflowed: bool = False
    idle_rss_kib: int = 0

    def lines(self) -> list[str]:
        med = statistics.median
        return [
            f"reloads per 1,000-event burst: {self.reloads_per_burst}",
            "last event sent -> reload command started: "
            f"median {med(self.last_event_to_start_ms):.0f} ms "
            f"(runs {[round(x) for x in self.last_event_to_start_ms]}); "
            f"daemon's since_last_event_ms median {med(self.daemon_since_last_event_ms):.0f}",
            f"bulk send: {self.send_rate:,.0f} events/s",
            f"through the daemon: {self.flood_received}/{self.flood_events} events counted, "
            f"{self.daemon_rate:,.0f} events/s, {self.cpu_us_per_event:.1f} us CPU/event"
            + (" (overflowed!)" if self.overflowed else ""),
            f"idle RSS: {self.idle_rss_kib / 1024:.1f} MiB",
        ]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _bursts(host: FakeHost, daemon: Daemon, figures: Figures, runs: int) -> None:
    for _ in range(runs):
        before = host.recorder.count()
        done_before = len(daemon.logs.events("reload_done"))
        last = daemon.send_burst(1000, subsystems=("cpu", "memory"))

        def reloaded(n: int = done_before) -> bool:
            return len(daemon.logs.events("reload_done")) > n

        wait_until(reloaded, 15, "reload_done")
        time.sleep(1.5)  # anything more would have started by now
        calls = host.recorder.calls()[before:]
        figures.reloads_per_burst.append(len(calls))
        figures.last_event_to_start_ms.append((calls[0].start - last) * 1000)
        started = daemon.logs.events("reload_started")[-len(calls)]
        figures.daemon_since_last_event_ms.append(float(started.get("since_last_event_ms", "nan")))


def _flood(host: FakeHost, daemon: Daemon, figures: Figures, count: int) -> None:
    payloads = host.burst(count, subsystems=("memory", "cpu"))
    cpu0 = _cpu_seconds(daemon.pid)
    n_started = len(daemon.logs.events("reload_started"))
    first = time.monotonic()
    report = daemon.sender.send_many(payloads)
    wait_until(lambda: len(daemon.logs.events("reload_started")) > n_started, 30, "reload_started")
    started = daemon.logs.events("reload_started")[n_started]
    last_received = started["_t"] - float(started.get("since_last_event_ms", 0)) / 1000
    figures.send_rate = report.rate
    figures.flood_events = count
    figures.flood_received = int(started.get("events", count))
    figures.daemon_rate = figures.flood_received / max(last_received - first, 1e-6)
    figures.cpu_us_per_event = (_cpu_seconds(daemon.pid) - cpu0) / count * 1e6
    figures.overflowed = bool(daemon.logs.events("monitor_overflow"))
    daemon.logs.wait_for("reload_done", timeout=15, after=started["_t"])


def measure(base: Path, *, runs: int = 3, flood: int = 20_000) -> Figures:
    figures = Figures()
    with FakeHost(base) as host:
        daemon = host.start_daemon(DEFAULTS)
        time.sleep(1.0)
        figures.idle_rss_kib = _rss_kib(daemon.pid)
        _bursts(host, daemon, figures, runs)
        _flood(host, daemon, figures, flood)
    return figures


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="crashhp-figures-") as tmp:
        figures = measure(Path(tmp))
    for line in figures.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
