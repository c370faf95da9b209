"""Gathering a burst with a fake clock: quiet period, maximum delay, seqnums, removals."""

from __future__ import annotations

import pytest

from crashhp.coalesce import Gathering, Timing, gather
from crashhp.model import Subsystem

CPU, MEM = Subsystem.CPU, Subsystem.MEMORY
T = Timing(0.5, 5.0, 0.2)


def test_quiet_period_after_the_last_event() -> None:
    g = gather(None, 10.0, CPU, 7)
    g = gather(g, 10.2, MEM, 9)
    assert g.due_at(T) == pytest.approx(10.7)
    burst = g.burst()
    assert (burst.events, burst.subsystems) == (2, frozenset({CPU, MEM}))
    assert (burst.first_at, burst.last_at, burst.max_seqnum) == (10.0, 10.2, 9)


def test_a_storm_converges_at_the_maximum_delay() -> None:
    t, g = 100.0, None
    for _ in range(1000):  # an event every 10 ms for 10 s: never quiet
        g = gather(g, t, MEM, 1)
        if t >= g.due_at(T):
            break
        t += 0.01
    assert t == pytest.approx(105.0)
    assert g is not None
    assert g.burst().events == 501


def test_out_of_order_times_do_not_move_the_deadline_back() -> None:
    g = gather(gather(None, 10.0, CPU, 1), 9.0, CPU, 2)
    assert g.due_at(T) == pytest.approx(10.5)


def test_an_event_without_seqnum_makes_the_burst_uncoverable() -> None:
    g = gather(gather(None, 1.0, CPU, 5), 1.1, MEM, None)
    assert g.max_seqnum is None
    assert gather(g, 1.2, MEM, 9).max_seqnum is None


def test_memory_remove_and_synthetic_events_are_marked() -> None:
    g = gather(None, 1.0, MEM, 3, action="remove")
    assert g.burst().removes_memory
    assert not gather(None, 1.0, CPU, 3, action="remove").burst().removes_memory
    g = gather(gather(None, 1.0, MEM, 3, synthetic=True), 1.0, MEM, 4)
    assert (g.events, g.synthetic) == (2, 1)


def test_merge_and_everything() -> None:
    a = gather(None, 1.0, CPU, 5)
    b = gather(None, 2.0, MEM, 8, action="remove")
    m = a.merge(b)
    assert (m.first_at, m.last_at, m.events, m.max_seqnum) == (1.0, 2.0, 2, 8)
    assert m.removes_memory
    every = Gathering.everything(3.0, forced=True)
    assert every.due_at(T) == 3.0  # forced: due at once
    assert every.burst().subsystems == frozenset(Subsystem)
    assert every.burst().max_seqnum is None


def test_timings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_delay"):
        Timing(2.0, 1.0, 0.0)
