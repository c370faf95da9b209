"""The dump check's pure parts (tests/system/dump.py), without a VM: /proc/iomem, CPU lists,
ELF64 cores, makedumpfile's kdump-compressed header, the judgement and the serial hand-over."""

from __future__ import annotations

import base64
import struct
import subprocess
from pathlib import Path

import pytest

from tests.system import dump
from tests.system.cpio import CpioWriter
from tests.system.dump import MIB, CoreHeader, Machine, Note
from tests.system.vm import write_into_image

GIB = 1024 * MIB
IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : System ROM
00100000-7ffdefff : System RAM
  13000000-14001fff : Kernel code
  61000000-70ffffff : Crash kernel
7ffdf000-7fffffff : Reserved
b0000000-bfffffff : PCI MMCONFIG 0000 [bus 00-ff]
100000000-13fffffff : System RAM
"""
RAM = [(0x1000, 0x9FC00), (0x100000, 0x7FFDF000), (0x100000000, 0x140000000)]
CRASH = [(0x61000000, 0x71000000)]


def prstatus(cpu: int) -> Note:
    return Note("CORE", dump.NT_PRSTATUS, struct.pack("<I", cpu + 1) + bytes(332))


def note_bytes(notes: list[Note]) -> bytes:
    out = b""
    for n in notes:
        name = n.name.encode() + b"\0"
        out += struct.pack("<III", len(name), len(n.desc), n.type)
        out += name + bytes(-len(name) % 4) + n.desc + bytes(-len(n.desc) % 4)
    return out


def elf_core(loads: list[tuple[int, int]], notes: list[Note], pad: int = 0) -> bytes:
    """An ELF64 core head the way /proc/vmcore starts: header, PT_NOTE, PT_LOADs, notes."""
    phnum = 1 + len(loads)
    notes_at = 64 + 56 * phnum
    blob = note_bytes(notes) + bytes(pad)
    data_at = (notes_at + len(blob) + 4095) // 4096 * 4096
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    head = ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", dump.PT_NOTE, 0, notes_at, 0, 0, len(blob), len(blob), 0)
    offset = data_at
    for start, end in loads:
        size = end - start
        phdrs += struct.pack("<IIQQQQQQ", dump.PT_LOAD, 7, offset, 0, start, size, size, 0)
        offset += size
    return head + phdrs + blob


# ---- ranges, iomem, cpu lists ---------------------------------------------------------------


def test_merge_and_subtract() -> None:
    assert dump.merge([(5, 10), (0, 3), (3, 4), (9, 12), (20, 20)]) == [(0, 4), (5, 12)]
    assert dump.subtract([(0, 100)], [(10, 20), (90, 200)]) == [(0, 10), (20, 90)]
    assert dump.subtract([(0, 10)], [(0, 10)]) == []
    assert dump.subtract([(0, 10), (20, 30)], [(5, 25)]) == [(0, 5), (25, 30)]
    assert dump.total([(0, 10), (5, 15)]) == 15


def test_parse_iomem_top_level_ram_and_the_reservation() -> None:
    ram, crash = dump.parse_iomem(IOMEM)
    assert ram == RAM
    assert crash == CRASH


def test_parse_iomem_refuses_the_zeros_non_root_sees() -> None:
    with pytest.raises(ValueError, match="root"):
        dump.parse_iomem("00000000-00000000 : System RAM\n")


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-1\n", {0, 1}), ("0-3,6\n", {0, 1, 2, 3, 6}), ("0\n", {0}), ("0,2-3,5-6", {0, 2, 3, 5, 6})],
)
def test_parse_cpulist(text: str, cpus: set[int]) -> None:
    assert dump.parse_cpulist(text) == cpus


def test_required_memory_is_ram_above_1mib_minus_the_reservation() -> None:
    m = Machine(tuple(RAM), tuple(CRASH), frozenset({0, 1}))
    assert m.required() == [(0x100000, 0x61000000), (0x71000000, 0x7FFDF000), (4 * GIB, 5 * GIB)]


def test_dt_crashkernel_is_big_endian_base_and_size() -> None:
    """ppc64: no "Crash kernel" in /proc/iomem; chosen/linux,crashkernel-* in the device tree."""
    base = (512 << 20).to_bytes(8, "big")
    assert dump.parse_dt_crashkernel(base, (512 << 20).to_bytes(8, "big")) == (
        512 << 20,
        1024 << 20,
    )
    assert dump.parse_dt_crashkernel(b"\0\0\0\x10", b"\0\0\0\x20") == (16, 48)
    with pytest.raises(ValueError, match="bytes"):
        dump.parse_dt_crashkernel(b"\0" * 3, b"\0" * 8)


# ---- ELF cores ------------------------------------------------------------------------------


def test_parse_elf_core_loads_and_notes() -> None:
    vmcoreinfo = Note("VMCOREINFO", 0, b"OSRELEASE=6.12\n")
    core = dump.parse_elf_core(
        elf_core([(0x1000, 0x9F000), (0x100000, 0x200000)], [prstatus(0), prstatus(1), vmcoreinfo])
    )
    assert core.loads == ((0x1000, 0x9F000), (0x100000, 0x200000))
    assert [n.name for n in core.notes] == ["CORE", "CORE", "VMCOREINFO"]
    assert core.prstatus == 2


def test_empty_prstatus_notes_do_not_count() -> None:
    empty = Note("CORE", dump.NT_PRSTATUS, bytes(336))
    core = dump.parse_elf_core(elf_core([(0, 4096)], [prstatus(0), empty, empty], pad=64))
    assert len(core.notes) == 3
    assert core.prstatus == 1


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"KDUMP   " + bytes(100), "not an ELF"),
        (b"\x7fELF" + bytes([1, 1]) + bytes(58), "ELF64"),
        (elf_core([(0, 4096)], [prstatus(0)])[:100], "program headers"),
        (elf_core([(0, 4096)], [prstatus(0)])[:200], "PT_NOTE"),
    ],
)
def test_parse_elf_core_refuses_what_it_cannot_read(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        dump.parse_elf_core(data)


# ---- the judgement --------------------------------------------------------------------------


def machine(cpus: int = 4) -> Machine:
    return Machine(tuple(RAM), tuple(CRASH), frozenset(range(cpus)))


def covering(m: Machine) -> list[tuple[int, int]]:
    return m.required()


def test_complete_when_all_ram_and_every_online_cpu_is_there() -> None:
    m = machine()
    # kexec-tools' header also lists the first MiB: more than needed is fine.
    loads = [(0x1000, 0x9FC00), *covering(m)]
    r = dump.judge(m, CoreHeader(tuple(loads), tuple(prstatus(c) for c in range(4))), "vmcore")
    assert r.complete
    assert r.missing == ()
    assert r.missing_text() == "is complete"
    assert r.verdict() == "yes"


def test_a_missing_dimm_and_two_missing_cpus() -> None:
    m = machine()
    loads = [r for r in covering(m) if r[0] < 4 * GIB]
    r = dump.judge(m, CoreHeader(tuple(loads), (prstatus(0), prstatus(1))), "vmcore")
    assert not r.complete
    assert r.missing == ((4 * GIB, 5 * GIB),)
    assert r.missing_mib == 1024
    assert r.missing_cpus == 2
    assert r.missing_text() == "misses 1024 MiB and 2 CPUs"
    assert r.verdict() == "NO"
    assert "0x100000000-0x13fffffff" in r.describe()


def test_memory_alone_or_cpus_alone_make_it_incomplete() -> None:
    m = machine(2)
    loads = covering(m)
    partial = [(loads[0][0], loads[0][1] - MIB), *loads[1:]]
    r = dump.judge(m, CoreHeader(tuple(partial), (prstatus(0), prstatus(1))), "vmcore")
    assert not r.complete
    assert r.missing_text() == "misses 1 MiB"
    r = dump.judge(m, CoreHeader(tuple(loads), (prstatus(0),)), "vmcore")
    assert not r.complete
    assert r.missing_text() == "misses 1 CPU"


def test_no_dump_reports_everything_missing() -> None:
    r = dump.no_dump(machine(), "vmcore", "no crash kernel was loaded at the crash")
    assert not r.complete
    assert r.verdict() == "NO DUMP"
    assert r.missing_mib == pytest.approx(r.required_mib)
    assert "no crash kernel" in r.missing_text()


# ---- the serial console hand-over -------------------------------------------------------------


def test_from_serial_takes_the_last_marked_block() -> None:
    head = elf_core([(0, 4096)], [prstatus(0)])
    text = base64.encodebytes(head).decode()
    serial = (
        "[    0.0] Linux version 6.12\n"
        f"{dump.BEGIN} 123\nQUJD\n{dump.END}\n"
        "[    9.9] sysrq: Trigger a crash\n"
        f"{dump.BEGIN} 4096\n{text}{dump.END}\n"
        "reboot: Power down\n"
    )
    assert dump.from_serial(serial) == head


def test_from_serial_errors() -> None:
    assert dump.from_serial(f"{dump.BEGIN} none\n{dump.END}\n") is None
    with pytest.raises(ValueError, match="never wrote"):
        dump.from_serial("Kernel panic - not syncing\n")
    with pytest.raises(ValueError, match="cut off"):
        dump.from_serial(f"{dump.BEGIN} 4096\nQUJD\n")


def test_check_crash_without_a_crash_kernel() -> None:
    c = dump.Crash(machine(2), False, ("0", "0"), 1.0, "")
    r = dump.check_crash(c)
    assert r.error == "no crash kernel was loaded at the crash"


def test_check_crash_end_to_end() -> None:
    m = machine(2)
    head = elf_core(covering(m), [prstatus(0), prstatus(1)])
    serial = f"{dump.BEGIN} 9\n{base64.encodebytes(head).decode()}{dump.END}\n"
    r = dump.check_crash(dump.Crash(m, True, ("1", "1"), 4.2, serial))
    assert r.complete, r.describe()
    assert r.extra["crash_hotplug"] == "1/1"


# ---- makedumpfile's kdump-compressed format -------------------------------------------------


def kdump_compressed(
    pfns: list[tuple[int, int]], max_mapnr: int, notes: list[Note], nr_cpus: int
) -> bytes:
    """The head of a kdump-compressed file: disk_dump_header, kdump_sub_header (version 6),
    then the two bitmaps."""
    block = 4096
    bitmap_bytes = (max_mapnr + 7) // 8
    bitmap_blocks = 2 * ((bitmap_bytes + block - 1) // block)
    head = b"KDUMP   " + struct.pack("<i", 6) + bytes(6 * 65)
    head += bytes(-len(head) % 8) + bytes(16)
    head += struct.pack("<iiiIi", 0, block, 1, bitmap_blocks, min(max_mapnr, 2**31 - 1))
    head += struct.pack("<IIIii", 0, 0, 0, 0, nr_cpus)
    head += bytes(block - len(head))
    blob = note_bytes(notes)
    note_at = 2 * block - len(blob) - 64
    sub = struct.pack("<QiiQQQQQQ", 0, 31, 0, 0, 0, 0, 0, note_at, len(blob))
    sub += struct.pack("<QQQQQ", 0, 0, 0, max_mapnr, max_mapnr)
    body = bytearray(sub + bytes(block - len(sub)))
    body[note_at - block : note_at - block + len(blob)] = blob
    bitmap = bytearray(bitmap_blocks * block // 2)
    for first, last in pfns:
        for pfn in range(first, last):
            bitmap[pfn // 8] |= 1 << (pfn % 8)
    return head + bytes(body) + bytes(bitmap) + bytes(len(bitmap))


def test_parse_kdump_compressed_bitmap_and_notes() -> None:
    pfns = [(1, 159), (256, 0x7FFDF), (0x100000, 0x140000)]
    data = kdump_compressed(pfns, 0x140000, [prstatus(0), prstatus(1)], nr_cpus=2)
    k = dump.parse_kdump_compressed(data)
    assert k.max_mapnr == 0x140000
    assert k.nr_cpus == 2
    assert k.present == tuple((a * 4096, b * 4096) for a, b in pfns)
    assert k.core().prstatus == 2
    r = dump.judge(machine(2), k.core(), "makedumpfile")
    assert r.complete, r.describe()


def test_kdump_compressed_without_the_dimm() -> None:
    pfns = [(1, 159), (256, 0x7FFDF)]
    k = dump.parse_kdump_compressed(kdump_compressed(pfns, 0x7FFDF, [prstatus(0)], nr_cpus=1))
    r = dump.judge(machine(2), k.core(), "makedumpfile")
    assert r.missing == ((4 * GIB, 5 * GIB),)
    assert r.missing_text() == "misses 1024 MiB and 1 CPU"


def test_kdump_compressed_refuses_other_files() -> None:
    with pytest.raises(ValueError, match="signature"):
        dump.parse_kdump_compressed(b"\x7fELF" + bytes(5000))
    data = kdump_compressed([(0, 8)], 0x140000, [prstatus(0)], nr_cpus=1)
    with pytest.raises(ValueError, match="bitmap"):
        dump.parse_kdump_compressed(data[: 2 * 4096 + 100])


def test_table_has_the_issue_columns() -> None:
    r = dump.judge(machine(2), CoreHeader(tuple(covering(machine(2))), (prstatus(0),)), "vmcore")
    text = dump.table([("B", "kexec -c -p", "1", "1203", r)])
    assert text.splitlines()[0].split(" | ")[-1].strip() == "notes / online CPUs"
    assert text.splitlines()[2].split(" | ")[4].strip() == "NO"
    assert "1 / 2" in text


def flatten(data: bytes, chunk: int) -> bytes:
    """makedumpfile -F: a header, then (offset, size, bytes) records, out of order."""
    head = b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)
    out = head.ljust(dump.FLAT_HEADER_SIZE, b"\0")
    pieces = [(i, data[i : i + chunk]) for i in range(0, len(data), chunk)]
    for offset, piece in reversed(pieces):
        out += struct.pack(">qq", offset, len(piece)) + piece
    return out + struct.pack(">qq", -1, -1)


def test_unflatten_puts_every_record_at_its_offset() -> None:
    data = kdump_compressed([(1, 159)], 4096, [prstatus(0)], nr_cpus=1)
    assert dump.unflatten(flatten(data, 1000)) == data
    assert dump.unflatten(data) == data  # not flattened: as it is
    with pytest.raises(ValueError, match="end record"):
        dump.unflatten(flatten(data, 1000)[:-16])


# ---- ext4 images through debugfs (real mkfs.ext4 and debugfs, no mount) ------------------------


def ext4_image(tmp_path: Path, tree: Path) -> Path:
    image = tmp_path / "disk.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), "16M"],
        check=True,
        timeout=60,
        capture_output=True,
    )
    return image


def test_saved_dump_is_found_and_read_back(tmp_path: Path) -> None:
    data = kdump_compressed([(1, 159)], 4096, [prstatus(0)], nr_cpus=1)
    stamp = tmp_path / "tree/var/crash/202611271501"
    stamp.mkdir(parents=True)
    (stamp / "dmesg.202611271501").write_text("[0.0] Linux\n")
    (stamp / "dump.202611271501").write_bytes(flatten(data, 512))
    (tmp_path / "tree/var/crash/kexec_cmd").write_text("/sbin/kexec -p ...\n")
    image = ext4_image(tmp_path, tmp_path / "tree")
    path = dump.saved_dump(image)
    assert path == "/var/crash/202611271501/dump.202611271501"
    assert dump.unflatten(dump.read_from_image(image, path)) == data


def test_no_saved_dump(tmp_path: Path) -> None:
    (tmp_path / "tree/var/crash").mkdir(parents=True)
    assert dump.saved_dump(ext4_image(tmp_path, tmp_path / "tree")) is None


def test_write_into_image_files_modes_and_links(tmp_path: Path) -> None:
    (tmp_path / "tree/etc").mkdir(parents=True)
    (tmp_path / "tree/etc/old").write_text("old\n")
    image = ext4_image(tmp_path, tmp_path / "tree")
    w = CpioWriter()
    w.file("etc/old", b"new\n")
    w.file("usr/local/bin/tool", b"#!/bin/sh\n", 0o755)
    w.symlink("usr/bin/tool", "/usr/local/bin/tool")
    write_into_image(image, w.getvalue())
    assert dump.read_from_image(image, "/etc/old") == b"new\n"
    assert dump.read_from_image(image, "/usr/local/bin/tool") == b"#!/bin/sh\n"
    stat = dump.debugfs(image, "stat /usr/local/bin/tool")
    assert "Mode:  0755" in stat, stat
    link = dump.debugfs(image, "stat /usr/bin/tool")
    assert 'Fast link dest: "/usr/local/bin/tool"' in link, link
