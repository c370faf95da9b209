"""Which raw events count, and for which subsystem."""

from __future__ import annotations

import pytest

from crashhp.model import Subsystem
from crashhp.uevents import classify


@pytest.mark.parametrize(
    ("action", "subsystem", "name", "expected"),
    [
        ("add", "cpu", "cpu4", Subsystem.CPU),
        ("remove", "cpu", "cpu4", Subsystem.CPU),
        ("online", "cpu", "cpu12", Subsystem.CPU),
        ("offline", "memory", "memory33", Subsystem.MEMORY),
        ("add", "memory", "memory0", Subsystem.MEMORY),
        ("bind", "cpu", "cpu4", None),  # cpu bind/unbind pass a subsystem filter
        ("unbind", "cpu", "cpu4", None),
        ("change", "memory", "memory1", None),
        ("online", "container", "PNP0A06:00", None),  # DIMM hot-add also emits this
        ("add", "cpu", "cpufreq", None),
        ("add", "cpu", "cpu4\n", None),
        ("add", "memory", "memory1/../../x", None),
        (None, "cpu", "cpu1", None),
        ("add", None, "cpu1", None),
        ("add", "cpu", None, None),
        ("add", "machinecheck", "machinecheck0", None),
    ],
)
def test_classify(
    action: str | None, subsystem: str | None, name: str | None, expected: Subsystem | None
) -> None:
    assert classify(action, subsystem, name) is expected
