"""The coalescer with a fake clock: quiet period, maximum delay, one burst at a time."""

from __future__ import annotations

import pytest

from crashhp.coalesce import Coalescer
from crashhp.model import Subsystem

CPU, MEM = Subsystem.CPU, Subsystem.MEMORY


def test_nothing_pending_has_no_deadline() -> None:
    c = Coalescer(0.5, 5.0)
    assert not c.pending
    assert c.deadline() is None
    assert not c.due(1e9)


def test_quiet_period_after_the_last_event() -> None:
    c = Coalescer(0.5, 5.0)
    c.add(10.0, CPU)
    c.add(10.2, MEM)
    assert c.deadline() == pytest.approx(10.7)
    assert not c.due(10.69)
    assert c.due(10.7)
    burst = c.take()
    assert (burst.events, burst.subsystems) == (2, frozenset({CPU, MEM}))
    assert (burst.first_at, burst.last_at) == (10.0, 10.2)
    assert not c.pending


def test_a_storm_converges_at_the_maximum_delay() -> None:
    c = Coalescer(0.5, 5.0)
    t = 100.0
    for _ in range(1000):  # an event every 10 ms for 10 s: never quiet
        c.add(t, MEM)
        if c.due(t):
            break
        t += 0.01
    assert t == pytest.approx(105.0)
    assert c.take().events == 501


def test_one_burst_one_take_and_the_next_burst_starts_fresh() -> None:
    c = Coalescer(0.5, 5.0)
    for i in range(1000):
        c.add(1.0 + i * 1e-4, MEM)
    assert c.take().events == 1000
    c.add(50.0, CPU)
    assert c.deadline() == pytest.approx(50.5)
    assert c.take().subsystems == frozenset({CPU})


def test_out_of_order_times_do_not_move_the_deadline_back() -> None:
    c = Coalescer(0.5, 5.0)
    c.add(10.0, CPU)
    c.add(9.0, CPU)
    assert c.deadline() == pytest.approx(10.5)


def test_counts_and_zero_counts() -> None:
    c = Coalescer(0.0, 0.0)
    c.add(1.0, CPU, count=0)
    assert not c.pending
    c.add(1.0, CPU, count=7)
    assert c.due(1.0)
    assert c.take().events == 7


def test_retune_keeps_the_pending_burst() -> None:
    c = Coalescer(0.5, 5.0)
    c.add(10.0, CPU)
    c.retune(2.0, 3.0)
    assert c.deadline() == pytest.approx(12.0)
    with pytest.raises(ValueError, match="max_delay"):
        c.retune(2.0, 1.0)
