"""The guest recorder: what the kernel did, timestamped with the guest's CLOCK_MONOTONIC.

Runs inside the guest (started by crashhp-test-recorder.service) and appends JSON lines to
/run/crashhp-test/events.jsonl:

    {"t": ns, "k": "loaded", "v": 0|1, "gap_us": N}   a kexec_crash_loaded transition; gap_us is
                                                      the time since the previous sample (the
                                                      uncertainty of this timestamp)
    {"t": ns, "k": "uevent", "action": ..., "subsystem": ..., "devpath": ..., "seqnum": N}
                                                      every cpu/memory kernel uevent

A thread polls /sys/kernel/kexec_crash_loaded about every millisecond (pread at offset 0
regenerates a sysfs attribute) and writes only transitions; another reads kernel uevents.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyudev

OUT = Path("/run/crashhp-test/events.jsonl")
LOADED = "/sys/kernel/kexec_crash_loaded"
PERIOD_S = 0.001
SUBSYSTEMS = {"cpu", "memory"}


class Sink:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def put(self, record: dict[str, Any]) -> None:
        line = json.dumps(record)
        with self._lock:
            self._f.write(line + "\n")


def poll_loaded(sink: Sink) -> None:
    fd = os.open(LOADED, os.O_RDONLY)
    last = None
    prev_t = time.monotonic_ns()
    samples = 0
    max_gap = 0
    stats_at = prev_t + 10_000_000_000
    while True:
        value = os.pread(fd, 8, 0)[:1]
        now = time.monotonic_ns()
        gap = now - prev_t
        prev_t = now
        samples += 1
        max_gap = max(max_gap, gap)
        if value != last:
            sink.put({"t": now, "k": "loaded", "v": int(value), "gap_us": gap // 1000})
            last = value
        if now >= stats_at:
            sink.put({"t": now, "k": "stats", "samples": samples, "max_gap_us": max_gap // 1000})
            samples = 0
            max_gap = 0
            stats_at = now + 10_000_000_000
        time.sleep(PERIOD_S)


def watch_uevents(sink: Sink) -> None:
    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context, source="kernel")
    monitor.set_receive_buffer_size(64 * 1024 * 1024)
    monitor.start()
    while True:
        device = monitor.poll()
        now = time.monotonic_ns()
        if device is None or device.subsystem not in SUBSYSTEMS:
            continue
        sink.put(
            {
                "t": now,
                "k": "uevent",
                "action": device.action,
                "subsystem": device.subsystem,
                "devpath": device.device_path,
                "seqnum": int(device.sequence_number),
            }
        )


def main() -> int:
    sink = Sink(OUT)
    sink.put({"t": time.monotonic_ns(), "k": "start"})
    threading.Thread(target=watch_uevents, args=(sink,), daemon=True).start()
    poll_loaded(sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
