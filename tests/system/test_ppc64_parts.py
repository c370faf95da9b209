"""The ppc64le harness's pure parts, without a VM: the vmcore head parser, the console report,
the uevent sequences. Fast: they run with `make system`."""

from __future__ import annotations

import base64
import struct

import pytest

from tests.system.ppc64 import (
    DUMP_BEGIN,
    DUMP_END,
    compress,
    parse_vmcore_head,
    uevent_sequence,
    vmcore_from_console,
)

pytestmark = pytest.mark.system


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _note(name: bytes, n_type: int, desc: bytes) -> bytes:
    name_z = name + b"\0"
    return struct.pack("<III", len(name_z), len(desc), n_type) + _pad(name_z) + _pad(desc)


def _core(loads: list[tuple[int, int]], notes: bytes) -> bytes:
    phnum = 1 + len(loads)
    phoff = 64
    notes_off = phoff + 56 * phnum
    ehdr = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 21, 1, 0, phoff, 0, 0, 64, 56, phnum, 0, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, notes_off, 0, 0, len(notes), len(notes), 0)
    for paddr, size in loads:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, 1 << 20, paddr, paddr, size, size, 0)
    return ehdr + phdrs + notes


def test_vmcore_head_counts_loads_and_nonempty_prstatus() -> None:
    notes = (
        _note(b"CORE", 1, b"\1" * 504)
        + _note(b"CORE", 1, b"\2" * 504)
        + _note(b"CORE", 1, b"")
        + _note(b"VMCOREINFO", 0, b"OSRELEASE=6.12\n")
    )
    head = parse_vmcore_head(_core([(0, 1 << 30), (3 << 30, 256 << 20)], notes))
    assert head.loads == [(0, 1 << 30), (3 << 30, 256 << 20)]
    assert head.prstatus == 2
    assert head.load_bytes == (1 << 30) + (256 << 20)


def test_vmcore_head_rejects_what_is_not_an_elf64_le_core() -> None:
    with pytest.raises(ValueError, match="not an ELF64"):
        parse_vmcore_head(b"\x7fELF\x01\x01" + b"\0" * 58)


def test_vmcore_head_refuses_notes_cut_off() -> None:
    core = _core([(0, 4096)], _note(b"CORE", 1, b"\1" * 504))
    with pytest.raises(ValueError, match="past"):
        parse_vmcore_head(core[:-8])


def test_console_report_with_wrapped_base64_and_carriage_returns() -> None:
    core = _core([(0, 4096)], _note(b"CORE", 1, b"\1" * 504))
    text = base64.b64encode(core).decode()
    wrapped = "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    console = f"[  1.0] panic\r\ncrashhp-dump: up\r\n{DUMP_BEGIN}\r\n{wrapped}\r\n{DUMP_END}\r\n"
    head = vmcore_from_console(console)
    assert head is not None
    assert head.loads == [(0, 4096)]
    assert head.prstatus == 1
    assert vmcore_from_console(f"crashhp-dump: no /proc/vmcore\n{DUMP_END}\n") is None


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
