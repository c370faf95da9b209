"""The ppc64le harness's pure parts, without a VM: the uevent sequences the closing figures
quote. Fast: they run with `make system` (the vmcore head is dump.py's, tested in
tests/unit/test_dump.py)."""

from __future__ import annotations

import pytest

from tests.system.ppc64 import (
    DRCONF_MEM_ASSIGNED,
    be_u64,
    compress,
    dynamic_memory_v2,
    uevent_sequence,
)

pytestmark = pytest.mark.system


def test_uevent_sequence_orders_by_seqnum_within_the_window() -> None:
    def ev(t: int, seq: int, action: str, path: str) -> dict[str, object]:
        sub = path.split("/")[3]
        return {"t": t, "k": "uevent", "action": action, "subsystem": sub, "devpath": path,
                "seqnum": seq}  # fmt: skip

    records = [
        ev(5, 11, "online", "/devices/system/cpu/cpu2"),
        ev(4, 10, "add", "/devices/system/cpu/cpu2"),
        {"t": 6, "k": "loaded", "v": 1, "gap_us": 3},
        ev(1, 9, "add", "/devices/system/memory/memory8"),
        ev(7, 12, "add", "/devices/system/memory/memory9"),
        ev(8, 13, "add", "/devices/system/memory/memory10"),
    ]
    seq = uevent_sequence(records, 2, 8)
    assert seq == [
        "add cpu cpu2",
        "online cpu cpu2",
        "add memory memory9",
        "add memory memory10",
    ]
    assert compress(seq) == "add cpu, online cpu, add memory x2"


def test_compress_keeps_interleaved_runs_apart() -> None:
    seq = ["add memory memory8", "online memory memory8", "add memory memory9"]
    assert compress(seq) == "add memory, online memory, add memory"
    assert compress([]) == ""


def test_dynamic_memory_v2_as_the_guest_showed_it_after_a_dimm() -> None:
    """The bytes `od` printed in the pseries guest after a 1 GiB DIMM (LMBs of 256 MiB): the
    boot memory's set (RESERVED 0x80: it is in /memory@0), the DIMM's four LMBs ASSIGNED at
    2 GiB, the unplugged rest of maxmem."""
    prop = bytes.fromhex(
        "00000003"
        "00000008" "0000000000000000" "00000000" "ffffffff" "000000a0"
        "00000004" "0000000080000000" "80000008" "00000000" "00000008"
        "0000001c" "00000000c0000000" "8000000c" "ffffffff" "00000000"
    )  # fmt: skip
    lmb = be_u64(bytes.fromhex("0000000010000000"))
    sets = dynamic_memory_v2(prop, lmb)
    assert sets == [
        (0, 0x80000000, 0xA0),
        (0x80000000, 0xC0000000, DRCONF_MEM_ASSIGNED),
        (0xC0000000, 0x280000000, 0),
    ]
