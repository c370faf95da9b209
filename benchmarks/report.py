"""The printed tables, number formats, and the list of things that broke during a run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class Problems:
    """What broke (a daemon crash, a lost reload...): any entry makes the run exit non-zero.

    Figures never land here: a slow run is reported, not failed.
    """

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, what: str) -> None:
        self.items.append(what)

    def __bool__(self) -> bool:
        return bool(self.items)


@dataclass
class Table:
    title: str
    head: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def render(self) -> str:
        width = len(self.head)
        rows = [r + [""] * (width - len(r)) for r in self.rows]
        widths = [max(len(row[i]) for row in [self.head, *rows]) for i in range(width)]

        def line(row: list[str]) -> str:
            cells = [row[0].ljust(widths[0])]
            cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
            return "  ".join(cells).rstrip()

        out = [self.title, "", line(self.head), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in rows]
        out += [f"  - {n}" for n in self.notes]
        return "\n".join(out)


def num(value: float | None, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def ratio(better: float | None, worse: float | None) -> str:
    """``better / worse`` as "N x" (for events/s: crashhp over the helper)."""
    if better is None or worse is None or math.isnan(better) or math.isnan(worse) or worse <= 0:
        return "-"
    r = better / worse
    return f"{r:,.0f}x" if r >= 10 else f"{r:.1f}x"


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"
