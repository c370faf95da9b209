"""The kernel's own race: crash_hotplug reads 0 while the kexec lock is busy.

The kernel reads ``crash_hotplug`` under a trylock of its kexec lock and answers 0 when it
cannot take it: during a load or unload by another process, and during its own in-place
update of the crash header after each hotplug event. A hotplug-capable image therefore
flickers between 1 and 0 for as long as something holds the lock now and then. A 1 is
never a lie (it needs a loaded, hotplug-capable image); a 0 may be. crashhp must not
reload a crash kernel that the kernel keeps current just because it read 0 twice.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.nshost import FakeHost, wait_until

pytestmark = pytest.mark.faults

QUIET_S = 0.150  # FakeHost.BASE_CONFIG
SETTLE_S = 0.100


FLICKER = Path(__file__).resolve().parents[1] / "support" / "flicker.py"


@dataclass
class Flicker:
    report: Path

    def longest_busy_s(self) -> float:
        """The longest busy phase the flicker measured (known once the block ended)."""
        return float(self.report.read_text())


@contextmanager
def flicker(
    host: FakeHost, busy_s: tuple[float, float], free_s: tuple[float, float]
) -> Iterator[Flicker]:
    """Both crash_hotplug files read 0 for ``busy_s`` (a random length in that range), then 1
    for ``free_s``, over and over, until the block ends; kexec_crash_loaded stays 1. A
    SCHED_FIFO process of its own (tests/support/flicker.py): a flicker thread in the test
    process was once held past a whole settle window by the GIL, which made a correct
    daemon reload."""
    report = host.base / "flicker.report"
    argv = [
        sys.executable,
        str(FLICKER),
        str(host.sysfs.cpu / "crash_hotplug"),
        str(host.sysfs.memory / "crash_hotplug"),
        *(f"{v:g}" for v in (*busy_s, *free_s)),
        "7",
        str(report),
    ]
    proc = subprocess.Popen(argv)
    try:
        yield Flicker(report)
    finally:
        proc.terminate()
        proc.wait(5)
        host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")


def test_lock_busy_in_step_with_the_settle_time_no_reload(host: FakeHost) -> None:
    """Another kexec user holds the lock 50 ms out of every 100 ms: the settle time (100 ms)
    puts the re-read in the same phase as the first read, so two single reads agree on 0
    half the time. The image is hotplug-capable all along: no burst may reload it."""
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    daemon = host.start_daemon()
    with flicker(host, busy_s=(0.05, 0.05), free_s=(0.05, 0.05)) as lock:
        for n in range(8):
            daemon.send_burst(50, subsystems=("memory", "cpu"))

            def decided(want: int = n + 1) -> bool:
                return len(daemon.logs.events("burst")) >= want

            wait_until(decided, 5, f"burst {n + 1} decided")
            time.sleep(0.03 * n)  # vary the phase of the next burst
    bursts = daemon.logs.events("burst")
    longest = lock.longest_busy_s()
    assert [b["decision"] for b in bursts] == ["kernel_handles"] * 8, (
        f"longest busy phase {longest * 1000:.0f} ms (settle window {SETTLE_S * 1000:.0f} ms)",
        bursts,
    )
    assert host.recorder.count() == 0, host.recorder.calls()


def test_random_lock_contention_during_a_storm_no_reload(host: FakeHost) -> None:
    """Busy 20-50 ms, free 50-80 ms at random while events keep coming for 3 s; the
    maximum delay (700 ms) forces decisions in the middle of it."""
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    daemon = host.start_daemon({"coalesce": {"max_delay_ms": 700}})
    with flicker(host, busy_s=(0.02, 0.05), free_s=(0.05, 0.08)):
        start = time.monotonic()
        while time.monotonic() - start < 3.0:
            daemon.send_burst(20, subsystems=("memory",))
            time.sleep(0.05)
        storm_end = time.monotonic()
        wait_until(
            lambda: (b := daemon.logs.events("burst")) and b[-1]["_t"] > time.monotonic() - 5,
            5,
            "the last burst decided",
        )
        time.sleep(QUIET_S + SETTLE_S + 0.3)
    decided = daemon.logs.events("burst")
    # At least two decisions while events still came (a loaded machine sends fewer).
    during = [b for b in decided if b["_t"] < storm_end]
    assert len(during) >= 2, ("max_delay_ms did not force decisions during the storm", decided)
    # A decision forced while the storm goes on may already see the next send's change
    # (the fake host changes the topology before it sends): its burst is then unchanged.
    assert "kernel_handles" in {b["decision"] for b in decided}, decided
    assert {b["decision"] for b in decided} <= {"kernel_handles", "unchanged"}, decided
    assert host.recorder.count() == 0


def test_a_real_zero_still_reloads(host: FakeHost) -> None:
    """The control: 0 that stays 0 (image loaded without hotplug support) reloads once."""
    host.sysfs.set(cpu_hotplug="0", memory_hotplug="0")
    daemon = host.start_daemon()
    sent = daemon.send_burst(50)
    call = host.recorder.wait_calls(1)[0]
    daemon.logs.wait_for("reload_done")
    time.sleep(0.5)
    assert host.recorder.count() == 1
    assert call.start - sent >= (QUIET_S + SETTLE_S) * 0.95, "a 0 was not confirmed"
