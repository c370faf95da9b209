"""A plain pyudev monitor that prints what it receives, one JSON object per line.

Run inside a :class:`tests.support.nshost.FakeHost` namespace to prove the plumbing without the
daemon: ``python -m tests.support.listen --source udev --subsystem cpu --subsystem memory``.

It prints ``{"ready": true}`` once the monitor is started, then for each wake-up of the monitor
socket (``select`` says it is readable) drains it with ``poll(timeout=0)`` and prints one line per
device with the number of wake-ups so far. A monitor whose kernel-side (BPF) filter drops a
message never wakes up for it; libudev's user-space filter would still drop it, but only after a
wake-up. So ``wakeups`` tells the two apart. A receive error is printed as ``{"error": ...}``
and the loop goes on. Exits on SIGTERM or after ``--idle-s`` quiet seconds.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import sys
import time
from typing import Any

import pyudev


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="listen")
    parser.add_argument("--source", choices=("udev", "kernel"), default="udev")
    parser.add_argument("--subsystem", action="append", default=[])
    parser.add_argument("--idle-s", type=float, default=30.0)
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=args.source)
    for subsystem in args.subsystem:
        monitor.filter_by(subsystem)
    monitor.start()
    _emit({"ready": True})

    wakeups = 0
    while True:
        readable, _, _ = select.select([monitor.fileno()], [], [], args.idle_s)
        if not readable:
            return 0
        wakeups += 1
        while True:
            try:
                device = monitor.poll(timeout=0)
            except (OSError, ValueError) as e:
                # libudev fails with EINVAL on a message it cannot parse (pyudev turns that
                # into ValueError) and with ENOBUFS after an overflow: report, keep going.
                _emit({"t": time.monotonic(), "wakeups": wakeups, "error": repr(e)})
                continue
            if device is None:
                break
            _emit(
                {
                    "t": time.monotonic(),
                    "wakeups": wakeups,
                    "action": device.action,
                    "subsystem": device.subsystem,
                    "sys_name": device.sys_name,
                    "device_path": device.device_path,
                    "seqnum": device.sequence_number,
                    "properties": dict(device.properties.items()),
                }
            )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
