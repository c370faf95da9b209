"""What a process cost, read from outside through /proc: no cgroups, no cooperation needed.

CPU time comes from ``/proc/PID/stat`` (``utime + stime`` of the process, ``cutime + cstime``
of the children it has waited for, which include their own waited-for descendants), in
clock ticks (10 ms on this kernel): good enough for the hundreds of milliseconds a benchmark
burns. Wake-ups come from ``/proc/PID/task/*/schedstat`` (the third field counts the times a
task was put on a CPU) and from ``voluntary_ctxt_switches``/``nonvoluntary_ctxt_switches``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of a process and of the children it reaped, at one moment."""

    own_s: float
    children_s: float

    @property
    def total_s(self) -> float:
        return self.own_s + self.children_s

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.own_s - other.own_s, self.children_s - other.children_s)


def _stat_fields(pid: int) -> list[str]:
    # The command name may hold spaces and parentheses: split after the last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu(pid: int) -> Cpu:
    """``utime+stime`` and ``cutime+cstime`` of ``pid`` (fields 14-17 of stat(5))."""
    f = _stat_fields(pid)
    # f[0] is field 3 (state), so field N is f[N - 3].
    own = int(f[11]) + int(f[12])
    children = int(f[13]) + int(f[14])
    return Cpu(own * _TICK_S, children * _TICK_S)


def state(pid: int) -> str:
    """The one-letter state of ``pid``; "X" when it is gone."""
    try:
        return _stat_fields(pid)[0]
    except OSError:
        return "X"


def alive(pid: int) -> bool:
    return state(pid) not in ("X", "Z")


@dataclass(frozen=True)
class Wakeups:
    """Scheduling counters summed over a process's threads."""

    runs: int  # schedstat field 3: times put on a CPU
    voluntary: int
    involuntary: int
    threads: int

    def __sub__(self, other: Wakeups) -> Wakeups:
        return Wakeups(
            self.runs - other.runs,
            self.voluntary - other.voluntary,
            self.involuntary - other.involuntary,
            self.threads,
        )


def wakeups(pid: int) -> Wakeups:
    runs = voluntary = involuntary = threads = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            runs += int((task / "schedstat").read_text().split()[2])
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        threads += 1
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    return Wakeups(runs, voluntary, involuntary, threads)


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` (peak RSS) and the other ``Vm*`` lines of status, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith(("Vm", "Rss")) and value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
