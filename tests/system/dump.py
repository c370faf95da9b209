"""Crash the guest and check what its crash kernel would dump.

    report = crash_and_check(guest)   # the guest is gone afterwards
    assert report.complete, report.describe()

The crash kernel boots a tiny busybox initrd (the assets' crash initrd with our own `/init`
appended) that writes the head of `/proc/vmcore` -- the ELF header, the program headers and
the notes -- base64 to the serial console and powers off. Just before the crash the guest's
`/proc/iomem` and online CPU list are read through the agent. The dump is **complete** when
every System RAM range above 1 MiB, minus the crash kernel's reservation, is covered by a
PT_LOAD, and there is one non-empty NT_PRSTATUS note per CPU online at the crash (KERNEL.md,
"What a dump needs").

The parsing and the judgement are pure functions (no VM) tested in tests/unit/test_dump.py;
`crash_and_check` is the one part that needs a guest. Also reads makedumpfile's
kdump-compressed files (`parse_kdump_compressed`) for the distribution's dump path.
"""

from __future__ import annotations

import base64
import os
import re
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.system.cpio import CpioWriter
from tests.system.vm import Vm, VmError

MIB = 1 << 20
PAGE = 4096
PT_LOAD = 1
PT_NOTE = 4
NT_PRSTATUS = 1
ELF_MAGIC = b"\x7fELF"
BEGIN = "CRASHHP-DUMPCHECK-BEGIN"
END = "CRASHHP-DUMPCHECK-END"
# The head of /proc/vmcore handed to the host: the header, program headers and notes sit
# well inside it (a few KiB for a dozen CPUs); `parse_elf_core` fails loudly if they do not.
HEAD_BYTES = 64 * 1024
CRASH_TIMEOUT_S = 300.0
GUEST_CRASH_INITRD = "/boot/crash-initrd.img"
DUMPCHECK_INIT = f"""#!/bin/sh
# crashhp system test: the crash kernel's /init. Hands the head of /proc/vmcore to the host.
/bin/busybox --install -s /bin
mkdir -p /proc /sys
mount -t proc proc /proc
echo 1 >/proc/sys/kernel/printk
if [ -e /proc/vmcore ]; then
    echo "{BEGIN} $(stat -c %s /proc/vmcore)"
    dd if=/proc/vmcore bs=4096 count={HEAD_BYTES // PAGE} 2>/dev/null | base64
    echo "{END}"
else
    echo "{BEGIN} none"
    echo "{END}"
fi
sync
poweroff -f
"""

Range = tuple[int, int]  # [start, end): half-open, bytes


# ---- ranges ---------------------------------------------------------------------------------


def merge(ranges: Iterable[Range]) -> list[Range]:
    out: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def subtract(ranges: Iterable[Range], holes: Iterable[Range]) -> list[Range]:
    """`ranges` minus `holes`, merged."""
    result = merge(ranges)
    for h0, h1 in merge(holes):
        nxt: list[Range] = []
        for r0, r1 in result:
            if h1 <= r0 or h0 >= r1:
                nxt.append((r0, r1))
                continue
            if r0 < h0:
                nxt.append((r0, h0))
            if h1 < r1:
                nxt.append((h1, r1))
        result = nxt
    return result


def total(ranges: Iterable[Range]) -> int:
    return sum(end - start for start, end in merge(ranges))


# ---- what the guest was just before the crash -------------------------------------------------


@dataclass(frozen=True)
class Machine:
    ram: tuple[Range, ...]
    crash_reserved: tuple[Range, ...]
    online_cpus: frozenset[int]

    def required(self) -> list[Range]:
        """The memory a complete dump holds: System RAM above 1 MiB minus the reservation."""
        return subtract(self.ram, [(0, MIB), *self.crash_reserved])


def parse_iomem(text: str) -> tuple[list[Range], list[Range]]:
    """System RAM and "Crash kernel" ranges of /proc/iomem (read as root: real addresses)."""
    ram: list[Range] = []
    crash: list[Range] = []
    for line in text.splitlines():
        m = re.match(r"^\s*([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.+?)\s*$", line)
        if not m:
            continue
        start, last, name = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
        if name == "System RAM":
            ram.append((start, last + 1))
        elif name == "Crash kernel":
            crash.append((start, last + 1))
    if ram and all(r == (0, 1) for r in ram):
        raise ValueError("/proc/iomem shows zeros: read it as root")
    return merge(ram), merge(crash)


def parse_cpulist(text: str) -> frozenset[int]:
    """A kernel CPU list such as `0-3,6`."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


# ---- what the dump holds --------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    name: str
    type: int
    desc: bytes

    @property
    def empty(self) -> bool:
        return not any(self.desc)


@dataclass(frozen=True)
class CoreHeader:
    """The memory and CPUs an ELF core (/proc/vmcore, makedumpfile -E) describes."""

    loads: tuple[Range, ...]  # physical [p_paddr, p_paddr + p_memsz)
    notes: tuple[Note, ...]

    @property
    def prstatus(self) -> int:
        """Non-empty NT_PRSTATUS notes: the CPUs whose registers the crash saved."""
        return sum(
            1 for n in self.notes if n.name == "CORE" and n.type == NT_PRSTATUS and not n.empty
        )


def parse_notes(data: bytes) -> list[Note]:
    notes: list[Note] = []
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            break  # the zero padding after the last note
        name_at = pos + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        end = desc_at + (descsz + 3) // 4 * 4
        if end > len(data):
            raise ValueError(f"note at {pos} runs past the PT_NOTE ({end} > {len(data)})")
        name = data[name_at : name_at + namesz].rstrip(b"\0").decode(errors="replace")
        notes.append(Note(name, ntype, data[desc_at : desc_at + descsz]))
        pos = end
    return notes


def parse_elf_core(data: bytes) -> CoreHeader:
    """PT_LOADs and notes of a little-endian ELF64 core whose head is `data`."""
    if len(data) < 64 or data[:4] != ELF_MAGIC:
        raise ValueError(f"not an ELF file (starts {data[:8]!r})")
    if data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 core")
    (e_type,) = struct.unpack_from("<H", data, 16)
    if e_type != 4:
        raise ValueError(f"ELF type {e_type}, not a core (4)")
    phoff, phentsize, phnum = (
        struct.unpack_from("<Q", data, 32)[0],
        *struct.unpack_from("<HH", data, 54),
    )
    if phoff + phnum * phentsize > len(data):
        raise ValueError(f"program headers end at {phoff + phnum * phentsize}, have {len(data)}")
    loads: list[Range] = []
    notes: list[Note] = []
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize
        )
        if p_type == PT_LOAD:
            loads.append((p_paddr, p_paddr + p_memsz))
        elif p_type == PT_NOTE:
            if p_offset + p_filesz > len(data):
                raise ValueError(f"PT_NOTE ends at {p_offset + p_filesz}, have {len(data)}")
            notes += parse_notes(data[p_offset : p_offset + p_filesz])
    return CoreHeader(tuple(loads), tuple(notes))


KDUMP_SIGNATURE = b"KDUMP   "
FLAT_SIGNATURE = b"makedumpfile\0"
FLAT_HEADER_SIZE = 4096


def unflatten(data: bytes) -> bytes:
    """makedumpfile's flattened format (`-F`, what kdump-tools writes through a pipe) back
    into the file it stands for: after a 4096-byte header, records of (offset, size) and
    `size` bytes to put at `offset`, until an offset of -1. The integers are big-endian."""
    if not data.startswith(FLAT_SIGNATURE):
        return data
    out = bytearray()
    pos = FLAT_HEADER_SIZE
    while pos + 16 <= len(data):
        offset, size = struct.unpack_from(">qq", data, pos)
        pos += 16
        if offset < 0:
            return bytes(out)
        if size < 0 or pos + size > len(data):
            raise ValueError(f"flattened record at {pos - 16} runs past the file")
        if len(out) < offset + size:
            out.extend(bytes(offset + size - len(out)))
        out[offset : offset + size] = data[pos : pos + size]
        pos += size
    raise ValueError("flattened dump without its end record (cut off?)")


@dataclass(frozen=True)
class KdumpCompressed:
    """makedumpfile's kdump-compressed header: what the first bitmap and the notes say."""

    max_mapnr: int
    nr_cpus: int
    block_size: int
    present: tuple[Range, ...]  # PFN ranges the first bitmap marks, as byte ranges
    notes: tuple[Note, ...]

    def core(self) -> CoreHeader:
        return CoreHeader(self.present, self.notes)


def _bitmap_ranges(bitmap: bytes, limit: int) -> list[Range]:
    """Byte ranges of the PFNs set in `bitmap` (bit n of byte n // 8 is PFN n), below `limit`."""
    ranges: list[Range] = []
    start: int | None = None
    for index, byte in enumerate(bitmap):
        if index * 8 >= limit:
            break
        if (byte == 0 and start is None) or (byte == 0xFF and start is not None):
            continue  # a whole byte that changes nothing
        for bit in range(8):
            pfn = index * 8 + bit
            on = pfn < limit and bool(byte >> bit & 1)
            if on and start is None:
                start = pfn
            elif not on and start is not None:
                ranges.append((start * PAGE, pfn * PAGE))
                start = None
    if start is not None:
        ranges.append((start * PAGE, min(limit, len(bitmap) * 8) * PAGE))
    return ranges


def parse_kdump_compressed(data: bytes) -> KdumpCompressed:
    """A kdump-compressed file (makedumpfile's default format) from its head: the disk_dump
    header, the kdump sub-header's notes, and the first bitmap (needs the whole bitmap)."""
    if data[:8] != KDUMP_SIGNATURE:
        raise ValueError(f"no kdump-compressed signature (starts {data[:8]!r})")
    # struct disk_dump_header: signature[8], header_version, new_utsname (6 x 65 bytes),
    # padding to 8, struct timeval (2 x 8), status, block_size, sub_hdr_size, bitmap_blocks,
    # max_mapnr, total_ram_blocks, device_blocks, written_blocks, current_cpu, nr_cpus.
    (version,) = struct.unpack_from("<i", data, 8)
    pos = 12 + 6 * 65
    pos += -pos % 8
    pos += 16
    status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from(
        "<iiiIi", data, pos
    )
    pos += 20
    _total, _device, _written, _current, nr_cpus = struct.unpack_from("<IIIii", data, pos)
    del status
    # The sub-header follows in the next block: phys_base, dump_level, split, start_pfn,
    # end_pfn, offset_vmcoreinfo, size_vmcoreinfo, offset_note, size_note (version >= 4),
    # offset_eraseinfo, size_eraseinfo, start_pfn_64, end_pfn_64, max_mapnr_64 (version >= 6).
    sub = block_size
    notes: list[Note] = []
    if version >= 4:
        off_note, size_note = struct.unpack_from("<QQ", data, sub + 8 + 4 + 4 + 8 + 8 + 8 + 8)
        if off_note + size_note > len(data):
            raise ValueError(f"notes end at {off_note + size_note}, have {len(data)}")
        notes = parse_notes(data[off_note : off_note + size_note])
    if version >= 6:
        # max_mapnr_64 is the last field of the version 6 sub-header.
        (max_mapnr_64,) = struct.unpack_from("<Q", data, sub + 8 + 4 + 4 + 8 * 10)
        max_mapnr = max_mapnr_64 or max_mapnr
    bitmap_at = block_size * (1 + sub_hdr_size)
    bitmap_len = bitmap_blocks * block_size // 2  # the first of the two bitmaps
    if bitmap_at + bitmap_len > len(data):
        raise ValueError(f"first bitmap ends at {bitmap_at + bitmap_len}, have {len(data)}")
    present = _bitmap_ranges(data[bitmap_at : bitmap_at + bitmap_len], max_mapnr)
    return KdumpCompressed(max_mapnr, nr_cpus, block_size, tuple(present), tuple(notes))


# ---- the judgement --------------------------------------------------------------------------


@dataclass(frozen=True)
class DumpReport:
    source: str  # what was read: "vmcore" (the crash kernel's /proc/vmcore), "makedumpfile"
    complete: bool
    missing: tuple[Range, ...]
    notes: int  # non-empty NT_PRSTATUS
    online_cpus: int
    required_mib: float
    covered_mib: float
    error: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def missing_mib(self) -> float:
        return total(self.missing) / MIB

    @property
    def missing_cpus(self) -> int:
        return max(0, self.online_cpus - self.notes)

    def verdict(self) -> str:
        if self.error is not None:
            return "NO DUMP"
        return "yes" if self.complete else "NO"

    def describe(self) -> str:
        if self.error is not None:
            return f"no dump ({self.source}): {self.error}"
        head = "complete" if self.complete else "INCOMPLETE"
        gaps = ", ".join(f"{a:#x}-{b - 1:#x}" for a, b in self.missing[:4])
        return (
            f"{head}: {self.missing_mib:.0f} MiB of {self.required_mib:.0f} MiB missing"
            + (f" ({gaps})" if gaps else "")
            + f"; {self.notes} CPU notes for {self.online_cpus} CPUs online"
        )

    def missing_text(self) -> str:
        """'misses 1024 MiB and 2 CPUs', 'is complete'."""
        if self.error is not None:
            return f"was not written ({self.error})"
        parts = []
        if self.missing:
            parts.append(f"{self.missing_mib:.0f} MiB")
        if self.notes != self.online_cpus:
            n = self.online_cpus - self.notes
            parts.append(f"{n} CPU{'s' if abs(n) != 1 else ''}" if n > 0 else f"{-n} extra notes")
        return "misses " + " and ".join(parts) if parts else "is complete"


def judge(machine: Machine, core: CoreHeader, source: str) -> DumpReport:
    required = machine.required()
    missing = subtract(required, core.loads)
    notes = core.prstatus
    online = len(machine.online_cpus)
    return DumpReport(
        source=source,
        complete=not missing and notes == online,
        missing=tuple(missing),
        notes=notes,
        online_cpus=online,
        required_mib=total(required) / MIB,
        covered_mib=(total(required) - total(missing)) / MIB,
    )


def no_dump(machine: Machine, source: str, error: str) -> DumpReport:
    required = machine.required()
    return DumpReport(
        source=source,
        complete=False,
        missing=tuple(required),
        notes=0,
        online_cpus=len(machine.online_cpus),
        required_mib=total(required) / MIB,
        covered_mib=0.0,
        error=error,
    )


def from_serial(text: str) -> bytes | None:
    """The vmcore head the crash initrd printed; None if it printed no vmcore (`none`)."""
    lines = text.splitlines()
    begin = [i for i, line in enumerate(lines) if line.strip().startswith(BEGIN)]
    if not begin:
        raise ValueError("the crash kernel's initrd never wrote its marker (did it boot?)")
    first = begin[-1]
    if lines[first].split()[-1] == "none":
        return None
    try:
        last = next(i for i in range(first + 1, len(lines)) if lines[i].strip() == END)
    except StopIteration:
        raise ValueError("the vmcore head was cut off (no end marker)") from None
    body = "".join(line.strip() for line in lines[first + 1 : last])
    return base64.b64decode(body, validate=True)


# ---- on a guest -----------------------------------------------------------------------------


def dumpcheck_overlay() -> bytes:
    """A cpio with our /init, to append to the assets' busybox crash initrd."""
    w = CpioWriter()
    w.file("init", DUMPCHECK_INIT.encode(), 0o755)
    return w.getvalue()


def install_dumpcheck_initrd(vm: Vm, path: str = GUEST_CRASH_INITRD) -> None:
    """Make the guest's crash initrd (what every load in the harness uses) the dump check."""
    marker = f"{path}.dumpcheck"
    if vm.agent.wait_path(marker, 0.0):
        return
    vm.agent.write_file("/run/crashhp-test/dumpcheck.cpio", dumpcheck_overlay())
    vm.agent.run(
        [
            "/bin/sh",
            "-ec",
            f'cat "{path}" /run/crashhp-test/dumpcheck.cpio >"{path}.new" && '
            f'mv "{path}.new" "{path}" && : >"{marker}"',
        ],
        60,
    ).check()


def install_tree(vm: Vm, tree: Path) -> None:
    """Copy an extracted package tree (`assets.ensure_tools`) into the running guest."""
    links: list[str] = []
    for path in sorted(tree.rglob("*")):
        target = "/" + str(path.relative_to(tree))
        if path.is_symlink():
            links += [os.readlink(path), target]
        elif path.is_file():
            vm.agent.write_file(target, path.read_bytes(), path.stat().st_mode & 0o7777)
    script = 'while [ $# -gt 0 ]; do ln -sfn "$1" "$2"; shift 2; done'
    vm.agent.run(["/bin/sh", "-ec", script, "links", *links], 60).check()


# ppc64 lists no "Crash kernel" in /proc/iomem; its device tree names the reservation.
DT_CRASHKERNEL = "/proc/device-tree/chosen/linux,crashkernel-"


def parse_dt_crashkernel(base: bytes, size: bytes) -> Range:
    """The reservation from the device tree's big-endian `linux,crashkernel-base`/`-size`."""
    if len(base) not in (4, 8) or len(size) not in (4, 8):
        raise ValueError(f"crashkernel-base/-size of {len(base)}/{len(size)} bytes")
    start = int.from_bytes(base, "big")
    return (start, start + int.from_bytes(size, "big"))


def machine_now(vm: Vm) -> Machine:
    ram, crash = parse_iomem(vm.agent.read_text("/proc/iomem"))
    if not crash and vm.agent.wait_path(f"{DT_CRASHKERNEL}base", 0.0):
        base, size = (vm.agent.read_file(f"{DT_CRASHKERNEL}{p}") for p in ("base", "size"))
        crash = [parse_dt_crashkernel(base, size)]
    online = parse_cpulist(vm.agent.read_text("/sys/devices/system/cpu/online"))
    return Machine(tuple(ram), tuple(crash), online)


@dataclass(frozen=True)
class Crash:
    machine: Machine
    crash_loaded: bool
    crash_hotplug: tuple[str, str]
    crash_to_off_s: float
    serial: str
    # The crash kernel came up as an ordinary boot (the guest agent answered): it will not
    # save a dump, so the guest was stopped; why, in words.
    booted_instead: str | None = None


def crash(vm: Vm, timeout_s: float = CRASH_TIMEOUT_S, *, watch_agent: bool = False) -> Crash:
    """Read the machine, panic the guest, wait for QEMU to end (the crash kernel powers off;
    with nothing loaded the guest reboots, which a `no_reboot` Vm turns into an exit).
    `watch_agent`: stop early when the crash kernel booted an ordinary system instead."""
    machine = machine_now(vm)
    loaded = vm.agent.read_text("/sys/kernel/kexec_crash_loaded").strip() == "1"
    # "-" where the kernel has no crash_hotplug (before 6.6: bookworm's 6.1).
    hotplug = tuple(
        vm.agent.read_text(path).strip() if vm.agent.wait_path(path, 0.0) else "-"
        for path in (f"/sys/devices/system/{s}/crash_hotplug" for s in ("cpu", "memory"))
    )
    vm.agent.run(["sync"], 30)
    start = time.monotonic()
    vm.agent.fire("write", path="/proc/sysrq-trigger", data=base64.b64encode(b"c").decode())
    proc = vm.proc
    if proc is None:
        raise VmError("VM not started")
    deadline = start + timeout_s
    booted: str | None = None
    while True:
        try:
            proc.wait(timeout=min(10.0, max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            pass
        else:
            break
        if watch_agent:
            booted = _booted_instead(vm)
            if booted is not None:
                vm.close()
                break
        if time.monotonic() > deadline:
            raise VmError(
                f"the guest was still running {timeout_s:.0f} s after the crash\n{vm.serial_tail()}"
            )
    took = time.monotonic() - start
    serial = vm.serial_log.read_text(errors="replace")
    return Crash(machine, loaded, (hotplug[0], hotplug[1]), took, serial, booted)


def _booted_instead(vm: Vm) -> str | None:
    """If the guest agent answers after the crash, the crash kernel booted the default target
    (an ordinary boot, agent and all) rather than the dump unit: say what it runs."""
    try:
        vm.agent.request("ping", timeout=3.0)
        cmdline = vm.agent.read_text("/proc/cmdline").strip()
        unit = vm.agent.run(["systemctl", "is-active", "kdump-tools-dump.service"], 30)
    except (VmError, OSError):
        return None
    return (
        "the crash kernel booted the default target instead of kdump-tools-dump.service "
        f"({unit.stdout.strip() or '?'}); its command line: {cmdline}"
    )


def check_crash(c: Crash) -> DumpReport:
    """The dump-check initrd's report, judged against the machine before the crash."""
    if not c.crash_loaded:
        return no_dump(c.machine, "vmcore", "no crash kernel was loaded at the crash")
    try:
        head = from_serial(c.serial)
        if head is None:
            return no_dump(c.machine, "vmcore", "the crash kernel had no /proc/vmcore")
        core = parse_elf_core(head)
    except ValueError as exc:
        return no_dump(c.machine, "vmcore", str(exc))
    report = judge(c.machine, core, "vmcore")
    report.extra["crash_to_off_s"] = f"{c.crash_to_off_s:.1f}"
    report.extra["crash_hotplug"] = "/".join(c.crash_hotplug)
    return report


def crash_and_check(vm: Vm, timeout_s: float = CRASH_TIMEOUT_S) -> DumpReport:
    """Panic the guest (its crash kernel must have been loaded with the dump-check initrd,
    `install_dumpcheck_initrd`) and judge the vmcore its crash kernel saw. Ends the guest."""
    return check_crash(crash(vm, timeout_s))


def summary_line(name: str, report: DumpReport) -> str:
    return f"{name}: dump {report.describe()}"


def table(rows: Sequence[tuple[str, str, str, str, DumpReport]]) -> str:
    """scenario | load | reloads | ms without a crash kernel | complete | missing | notes."""
    head = (
        "scenario",
        "load",
        "reloads",
        "ms without a crash kernel",
        "dump complete",
        "missing MiB",
        "notes / online CPUs",
    )
    body = [
        (
            name,
            load,
            reloads,
            unloaded,
            r.verdict(),
            f"{r.missing_mib:.0f}",
            f"{r.notes} / {r.online_cpus}",
        )
        for name, load, reloads, unloaded, r in rows
    ]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in (head, *body)
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


# ---- the distribution's dump path: what kdump-tools saved into /var/crash on the disk ----------


def debugfs(image: Path, request: str, timeout: float = 120.0) -> str:
    proc = subprocess.run(
        ["debugfs", "-R", request, str(image)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise VmError(f"debugfs -R {request!r} {image}: {proc.stderr[-1000:]}")
    return proc.stdout


def list_dir(image: Path, path: str) -> list[tuple[str, bool, int]]:
    """(name, is a directory, size) of the entries of `path` in an ext4 image."""
    entries = []
    for line in debugfs(image, f'ls -p "{path}"').splitlines():
        # /inode/mode/uid/gid/name/size/
        parts = line.strip().split("/")
        if len(parts) < 7 or parts[5] in (".", ".."):
            continue
        mode = int(parts[2], 8)
        entries.append((parts[5], mode & 0o170000 == 0o040000, int(parts[6] or 0)))
    return entries


def saved_dump(image: Path, coredir: str = "/var/crash") -> str | None:
    """The newest dump file kdump-tools saved (`$KDUMP_COREDIR/<stamp>/dump.<stamp>`)."""
    found = []
    for name, is_dir, _ in list_dir(image, coredir):
        if not is_dir:
            continue
        for file, file_is_dir, size in list_dir(image, f"{coredir}/{name}"):
            # dump.<stamp> from makedumpfile; vmcore.<stamp> when kdump-tools fell back to cp
            if file.startswith(("dump.", "vmcore.")) and not file_is_dir and size > 0:
                found.append(f"{coredir}/{name}/{file}")
    return max(found) if found else None


def read_from_image(image: Path, path: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="crashhp-dump-") as tmp:
        out = Path(tmp) / "file"
        debugfs(image, f'dump "{path}" "{out}"', timeout=600)
        return out.read_bytes()


def check_saved(c: Crash, image: Path) -> DumpReport:
    """Judge the dump kdump-tools saved on the disk (kdump-compressed, or ELF with -E)."""
    source = "makedumpfile"
    if not c.crash_loaded:
        return no_dump(c.machine, source, "no crash kernel was loaded at the crash")
    if c.booted_instead:
        return no_dump(c.machine, source, c.booted_instead)
    path = saved_dump(image)
    if path is None:
        return no_dump(c.machine, source, "kdump-tools saved no dump in /var/crash")
    try:
        data = unflatten(read_from_image(image, path))
        if data[:4] == ELF_MAGIC:
            core = parse_elf_core(data)
        else:
            core = parse_kdump_compressed(data).core()
    except ValueError as exc:
        return no_dump(c.machine, source, f"{path}: {exc}")
    report = judge(c.machine, core, source)
    report.extra.update(
        path=path,
        size_mib=f"{len(data) / MIB:.0f}",
        crash_to_off_s=f"{c.crash_to_off_s:.1f}",
        format="ELF" if data[:4] == ELF_MAGIC else "kdump-compressed",
    )
    return report
