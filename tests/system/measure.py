"""What a scenario did to the crash kernel, computed from the guest recorder's log.

Pure functions over the recorder's records (guest CLOCK_MONOTONIC ns): no VM needed to test them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Metrics:
    uevents: int
    drops: int  # 1 -> 0 transitions of kexec_crash_loaded
    unloaded_ms: float  # total time with kexec_crash_loaded = 0 in the window
    loaded_at_end: bool | None
    # From the last uevent until a crash kernel that matches the new topology is loaded: the
    # last 0 -> 1 transition after it, or 0 if the kernel keeps the loaded one current.
    restore_ms: float | None
    max_sample_gap_ms: float  # the poller's worst resolution at a transition
    # The pauses between consecutive uevents: the harness's own steps, not crashhp's doing.
    uevent_gaps_ms: tuple[float, ...] = ()


def analyse(
    records: Iterable[Record], t0: int, t1: int, *, kernel_updates: bool = False
) -> Metrics:
    """Metrics for the window [t0, t1] of the recorder's log."""
    ordered = sorted(records, key=lambda r: int(r["t"]))
    state: int | None = None
    for r in ordered:
        if r["k"] == "loaded" and int(r["t"]) < t0:
            state = int(r["v"])
    inside = [r for r in ordered if t0 <= int(r["t"]) <= t1]
    uevents = [r for r in inside if r["k"] == "uevent"]
    transitions = [r for r in inside if r["k"] == "loaded"]
    unloaded = 0
    drops = 0
    since = t0
    worst_gap = 0
    for r in transitions:
        t, v = int(r["t"]), int(r["v"])
        worst_gap = max(worst_gap, int(r.get("gap_us", 0)))
        if state == 0:
            unloaded += t - since
        if state == 1 and v == 0:
            drops += 1
        state, since = v, t
    if state == 0:
        unloaded += t1 - since
    restore: float | None = None
    if uevents:
        last = int(uevents[-1]["t"])
        loads_after = [int(r["t"]) for r in transitions if int(r["v"]) == 1 and int(r["t"]) >= last]
        if state == 1 and loads_after:
            restore = (loads_after[-1] - last) / 1e6
        elif state == 1 and kernel_updates:
            restore = 0.0
    return Metrics(
        uevents=len(uevents),
        drops=drops,
        unloaded_ms=unloaded / 1e6,
        loaded_at_end=None if state is None else state == 1,
        restore_ms=restore,
        max_sample_gap_ms=worst_gap / 1000,
        uevent_gaps_ms=tuple(
            (int(b["t"]) - int(a["t"])) / 1e6 for a, b in itertools.pairwise(uevents)
        ),
    )


@dataclass
class Row:
    scenario: str
    what: str
    load: str
    crash_hotplug: str
    reloads: int
    metrics: Metrics
    notes: list[str] = field(default_factory=list)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(rows: Sequence[Row]) -> str:
    head = (
        "scenario",
        "what",
        "load",
        "crash_hotplug",
        "uevents",
        "reloads",
        "unloaded ms",
        "last uevent -> loaded ms",
        "loaded after",
    )
    body = [
        (
            r.scenario,
            r.what,
            r.load,
            r.crash_hotplug,
            str(r.metrics.uevents),
            str(r.reloads),
            _ms(r.metrics.unloaded_ms),
            _ms(r.metrics.restore_ms),
            {True: "yes", False: "NO", None: "?"}[r.metrics.loaded_at_end],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in (head, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r.scenario}: {n}" for r in rows for n in r.notes]
    return "\n".join(lines + (["notes:", *notes] if notes else []))
