"""Storms: 100,000 uevents as fast as the sender goes, again and again.

The daemon must stay up with bounded memory and file descriptors, reload once per storm,
and never lose the reload after the last event: each storm also hot-plugs memory in the
fake kernel, and the image the recorder "loaded" after the storm must describe it.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any

import pytest

from tests.support.nshost import Daemon, FakeHost, open_fds, proc_status, wait_until

pytestmark = pytest.mark.faults

STORM = 100_000
STORMS = 3
# After a storm's reload: long enough for a second (wrong) reload to have started.
AFTERMATH_S = 1.0


def _state(host: FakeHost) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((host.run / "crashhp" / "state.json").read_text())
    return data


def _storm(host: FakeHost, daemon: Daemon, blocks: int) -> dict[str, Any]:
    """Hot-plug memory to ``blocks`` blocks, send a storm, wait for its reload.

    Each storm has SEQNUMs of its own (the kernel never repeats one), and the fake kernel's
    /sys/kernel/uevent_seqnum says the whole storm was sent at once: from then on only the
    sockets lag behind, as when the kernel is faster than udev and the daemon.
    """
    payloads = host.burst(STORM, subsystems=("memory", "cpu"))
    seqnum = re.search(rb"SEQNUM=(\d+)", payloads[-1])
    assert seqnum is not None
    before = host.recorder.count()
    host.set_topology(memory_blocks=blocks)
    host.sysfs.write(host.sysfs.kernel / "uevent_seqnum", seqnum.group(1).decode())
    report = daemon.sender.send_many(payloads)
    last = time.monotonic()
    wait_until(
        lambda: any(c.start > last and c.end for c in host.recorder.calls()),
        20,
        "a reload that starts after the storm's last event",
    )
    time.sleep(AFTERMATH_S)
    calls = host.recorder.calls()[before:]
    status = proc_status(daemon.pid)
    return {
        "rate": report.rate,
        "reloads": len(calls),
        "after_last": sum(1 for c in calls if c.start > last),
        "rss_kib": status["VmRSS"],
        "hwm_kib": status["VmHWM"],
        "fds": open_fds(daemon.pid),
        "image": host.recorder.image(),
    }


def _report(title: str, baseline: int, storms: list[dict[str, Any]], extra: str = "") -> None:
    print(f"\n{title}: idle RSS {baseline / 1024:.1f} MiB{extra}")
    for n, s in enumerate(storms, 1):
        print(
            f"  storm {n}: {STORM:,} events at {s['rate']:,.0f}/s, {s['reloads']} reload(s), "
            f"RSS {s['rss_kib'] / 1024:.1f} MiB (peak {s['hwm_kib'] / 1024:.1f}), "
            f"{s['fds']} fds, {s.get('overflows', 0)} overflows"
        )


def test_storms_with_overflow(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    """Three storms into a 256 KiB receive buffer: it overflows, the monitor is rebuilt."""
    daemon = host.start_daemon({"events": {"receive_buffer_bytes": 256 << 10}})
    idle = proc_status(daemon.pid)["VmRSS"]
    idle_fds = open_fds(daemon.pid)

    storms = []
    for n in range(STORMS):
        overflows_before = _state(host)["counters"]["overflows"]
        warned_before = len(daemon.logs.events("monitor_overflow"))
        storm = _storm(host, daemon, blocks=16 + 8 * n)
        storm["overflows"] = _state(host)["counters"]["overflows"] - overflows_before
        warned = len(daemon.logs.events("monitor_overflow")) - warned_before
        storms.append(storm)
        assert daemon.alive(), daemon.logs.text()
        assert storm["overflows"] > 0, "the 256 KiB buffer never overflowed"
        assert 1 <= warned <= 2, f"{warned} monitor_overflow warnings for one storm"
        assert storm["reloads"] == 1, f"storm {n + 1}: {host.recorder.calls()}"
        assert storm["after_last"] == 1, "the reload did not follow the last event"
        assert storm["image"] == host.topology(), "the loaded image misses the last hot-plug"
        assert storm["fds"] == idle_fds, "file descriptors leak across monitor rebuilds"
    with capsys.disabled():
        _report("storms into a 256 KiB buffer", idle, storms)

    assert host.sysfs.loaded() == "1"
    host.recorder.assert_never_concurrent()
    # Bounded: a few MiB over idle at the peak, and no growth from one storm to the next.
    assert max(s["hwm_kib"] for s in storms) - idle < 16 << 10
    assert storms[-1]["rss_kib"] - storms[0]["rss_kib"] < 2 << 10


def test_storm_into_the_packaged_buffer(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    """The packaged 128 MiB buffer and coalescing: nothing overflows, every event is read.

    The storm is sent in well under a second, but the daemon reads it for seconds; events
    the kernel sent before a reload started are covered by that reload, so reading them
    late must not cause a second one. The watchdog (WatchdogSec=1s here) is fed all along.
    """
    daemon = host.start_daemon(
        {
            "coalesce": {"quiet_ms": 500, "max_delay_ms": 5000, "settle_ms": 200},
            "events": {"receive_buffer_bytes": 128 << 20},
        },
        watchdog_usec=1_000_000,
    )
    idle = proc_status(daemon.pid)["VmRSS"]
    sent = time.monotonic()
    storm = _storm(host, daemon, blocks=24)
    wait_until(lambda: _state(host)["counters"]["events"] == STORM, 10, "every event to be counted")
    with capsys.disabled():
        _report("a storm into the packaged 128 MiB buffer", idle, [storm])

    assert daemon.logs.events("monitor_overflow") == []
    assert storm["reloads"] == 1, host.recorder.calls()
    assert storm["image"] == host.topology()
    assert storm["hwm_kib"] - idle < 16 << 10
    pings = [n.t for n in host.notify.items("WATCHDOG") if n.t >= sent]
    gaps = [b - a for a, b in itertools.pairwise([sent, *pings])]
    assert max(gaps) < 1.0, f"watchdog starved while reading the storm: {max(gaps):.2f} s"


def test_storm_read_slower_than_it_came(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    """The packaged buffer with max_delay_ms 300: the daemon reads the storm for seconds and
    max_delay_ms forces a reload after 300 ms of it. The rest of the backlog was sent by
    the kernel before that reload started (uevent_seqnum), so it is covered, and the
    topology equals what that reload loaded: one reload, where reading the backlog used to
    give one per max_delay_ms."""
    daemon = host.start_daemon(
        {
            "coalesce": {"quiet_ms": 100, "max_delay_ms": 300},
            "events": {"receive_buffer_bytes": 128 << 20},
        }
    )
    idle = proc_status(daemon.pid)["VmRSS"]
    storm = _storm(host, daemon, blocks=24)
    wait_until(lambda: _state(host)["counters"]["events"] == STORM, 15, "every event to be counted")
    time.sleep(AFTERMATH_S)
    with capsys.disabled():
        _report("a storm read slower than it came (max delay 300 ms)", idle, [storm])

    calls = host.recorder.calls()
    covered = [b for b in daemon.logs.events("burst") if b["decision"] in ("covered", "unchanged")]
    assert len(calls) == 1, calls
    assert covered, "no burst was covered by the reload: the storm was read too fast?"
    assert sum(b["events"] for b in daemon.logs.events("burst")) == STORM
    assert host.recorder.image() == host.topology()
