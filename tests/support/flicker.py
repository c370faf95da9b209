"""The kernel's kexec lock, busy now and then: both crash_hotplug files read 0 while it is
busy and 1 while it is free (tests/faults/test_kernel_race.py).

A process of its own, at SCHED_FIFO where allowed, so that the phases keep their lengths
whatever the test process and its log readers do with their GIL: a phase that overran the
daemon's settle window would make a correct daemon reload. Until SIGTERM it alternates
busy (a random length in [BUSY_LO, BUSY_HI] s) and free ([FREE_LO, FREE_HI] s); then it
writes the longest busy phase it measured (seconds) to REPORT and leaves both files at 1.

    python flicker.py CPU_FILE MEMORY_FILE BUSY_LO BUSY_HI FREE_LO FREE_HI SEED REPORT

Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path


def write(path: Path, value: str) -> None:
    """Replace a file atomically, as the fake sysfs does: a reader never sees it empty."""
    tmp = path.with_name(f".{path.name}.flicker")
    tmp.write_text(value + "\n")
    tmp.replace(path)


def main(argv: list[str]) -> int:
    cpu, memory = Path(argv[0]), Path(argv[1])
    busy_lo, busy_hi, free_lo, free_hi = (float(a) for a in argv[2:6])
    rng = random.Random(int(argv[6]))
    report = Path(argv[7])
    # Not root or not Linux: plain scheduling.
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    longest = 0.0
    while not stop.is_set():
        began = time.monotonic()
        write(cpu, "0")
        write(memory, "0")
        stop.wait(rng.uniform(busy_lo, busy_hi))
        write(cpu, "1")
        write(memory, "1")
        longest = max(longest, time.monotonic() - began)
        stop.wait(rng.uniform(free_lo, free_hi))
    write(cpu, "1")
    write(memory, "1")
    report.write_text(f"{longest:.6f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
