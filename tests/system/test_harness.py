"""The harness's pure parts, without a VM: the ACPI patch, the cpio writer, the metrics."""

from __future__ import annotations

import collections
import struct
from pathlib import Path

import pytest

from tests.system import acpi, flavours, vm
from tests.system.cpio import CpioWriter
from tests.system.measure import Row, analyse, table
from tests.system.scenarios import QUIET_MS, Outcome

pytestmark = pytest.mark.system

MS = 1_000_000


def _table(signature: bytes, body: bytes, revision: int = 1) -> bytes:
    length = 36 + len(body)
    header = bytearray(
        signature
        + struct.pack("<IBB6s8sI4sI", length, revision, 0, b"BOCHS ", b"BXPC    ", 1, b"BXPC", 1)
    )
    data = header + body
    data[9] = (-sum(data)) & 0xFF
    return bytes(data)


def _madt() -> bytes:
    body = struct.pack("<II", 0xFEE00000, 1)
    for apic_id, flags in ((0, 1), (1, 1), (2, 0), (3, 0)):
        body += struct.pack("<BBBBI", 0, 8, apic_id, apic_id, flags)
    body += struct.pack("<BBHIII", 9, 16, 0, 300, 0, 300)  # a disabled x2APIC entry
    body += struct.pack("<BBBBIHH", 1, 12, 0, 0, 0xFEC00000, 0, 0)  # an I/O APIC, untouched
    return _table(b"APIC", body)


def _entries(madt: bytes) -> list[tuple[int, int]]:
    found = []
    pos = 44
    while pos < len(madt):
        kind, length = madt[pos], madt[pos + 1]
        if kind == 0:
            found.append((kind, struct.unpack_from("<I", madt, pos + 4)[0]))
        elif kind == 9:
            found.append((kind, struct.unpack_from("<I", madt, pos + 8)[0]))
        pos += length
    return found


def test_madt_marks_disabled_cpus_online_capable() -> None:
    patched, marked = acpi.patch_madt(_madt())
    assert marked == 3
    assert patched[8] == 5
    assert sum(patched) & 0xFF == 0
    assert struct.unpack_from("<I", patched, 24)[0] == 2  # OEM revision bumped
    assert _entries(patched) == [(0, 1), (0, 1), (0, 2), (0, 2), (9, 2)]


def test_fadt_becomes_6_3() -> None:
    fadt = _table(b"FACP", bytes(244 - 36), revision=3)
    patched = acpi.patch_fadt(fadt)
    assert (patched[8], patched[131]) == (6, 3)
    assert sum(patched) & 0xFF == 0
    assert len(patched) == len(fadt)


def test_acpi_patch_refuses_other_tables() -> None:
    with pytest.raises(ValueError, match="not a FACP"):
        acpi.patch_fadt(_madt())
    broken = bytearray(_madt())
    broken[40] ^= 1
    with pytest.raises(ValueError, match="checksum"):
        acpi.patch_madt(bytes(broken))


def test_cpio_writer_newc_layout() -> None:
    w = CpioWriter()
    w.file("kernel/firmware/acpi/apic.aml", b"abc")
    w.symlink("usr/bin/x", "/usr/local/bin/x")
    data = w.getvalue()
    assert data.startswith(b"070701")
    assert len(data) % 512 == 0
    assert b"kernel/firmware/acpi/apic.aml\0" in data
    assert b"kernel/firmware/acpi\0" in data  # parents come first
    assert b"TRAILER!!!\0" in data
    assert data.index(b"kernel/firmware\0") < data.index(b"kernel/firmware/acpi/apic.aml")


def _loaded(t: int, v: int) -> dict[str, object]:
    return {"t": t, "k": "loaded", "v": v, "gap_us": 1000}


def _uevent(t: int) -> dict[str, object]:
    return {"t": t, "k": "uevent", "action": "add", "subsystem": "cpu", "devpath": "/x"}


def test_analyse_one_reload() -> None:
    records = [
        _loaded(0, 1),
        _uevent(10 * MS),
        _uevent(20 * MS),
        _loaded(700 * MS, 0),
        _loaded(1700 * MS, 1),
    ]
    m = analyse(records, 5 * MS, 3000 * MS)
    assert (m.uevents, m.drops, m.loaded_at_end) == (2, 1, True)
    assert m.unloaded_ms == 1000
    assert m.restore_ms == 1680


def test_analyse_kernel_keeps_it_current() -> None:
    m = analyse([_loaded(0, 1), _uevent(10 * MS)], 5 * MS, 100 * MS, kernel_updates=True)
    assert (m.drops, m.unloaded_ms, m.restore_ms, m.loaded_at_end) == (0, 0, 0.0, True)


def test_analyse_nothing_loaded_and_a_stale_kernel() -> None:
    m = analyse([_loaded(0, 0), _uevent(10 * MS)], 5 * MS, 105 * MS)
    assert (m.unloaded_ms, m.restore_ms, m.loaded_at_end) == (100, None, False)
    stale = analyse([_loaded(0, 1), _uevent(10 * MS)], 5 * MS, 105 * MS)
    assert stale.restore_ms is None  # loaded, but nothing made it match the new topology


def test_analyse_ignores_records_outside_the_window() -> None:
    records = [_loaded(0, 1), _loaded(1 * MS, 0), _loaded(2 * MS, 1), _uevent(500 * MS)]
    m = analyse(records, 100 * MS, 200 * MS)
    assert (m.uevents, m.drops, m.unloaded_ms) == (0, 0, 0)


def test_analyse_lists_the_pauses_between_uevents() -> None:
    records = [_uevent(10 * MS), _loaded(15 * MS, 1), _uevent(30 * MS), _uevent(2030 * MS)]
    m = analyse(records, 0, 3000 * MS)
    assert m.uevent_gaps_ms == (20.0, 2000.0)


def _outcome(uevents_at_ms: list[int]) -> Outcome:
    m = analyse([_uevent(t * MS) for t in uevents_at_ms], 0, 60_000 * MS)
    return Outcome(Row("B", "burst", "kexec -c -p", "0/0", 1, m), collections.Counter(), [])


def test_one_reload_per_burst_allows_a_split_only_at_a_pause() -> None:
    steady = _outcome([0, 300, 900, 1500, 1900])  # no pause near quiet_ms: one burst
    steady.assert_one_reload_per_burst(1)
    for count in (0, 2):
        with pytest.raises(AssertionError, match=rf"{count} reloads for 1 burst"):
            steady.assert_one_reload_per_burst(count)
    paused = _outcome([0, 300, 300 + QUIET_MS + 200, 2100])  # the harness paused 1700 ms
    paused.assert_one_reload_per_burst(1)
    paused.assert_one_reload_per_burst(2)
    assert paused.row.notes == [
        f"the harness paused 1700 ms between two uevents (quiet_ms {QUIET_MS}): 2 bursts"
    ]
    with pytest.raises(AssertionError, match="3 reloads for 2 burst"):
        paused.assert_one_reload_per_burst(3)


def test_table_lists_every_row() -> None:
    m = analyse([_loaded(0, 1)], 0, MS)
    text = table([Row("A", "burst", "kexec -s -p", "1/1", 0, m, ["a note"])])
    assert "A " in text
    assert "kexec -s -p" in text
    assert "a note" in text


def _module(root: Path, rel: str, depends: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    # What a .ko's .modinfo section holds: NUL-separated key=value strings.
    path.write_bytes(b"\x7fELF...\0license=GPL\0depends=" + depends.encode() + b"\0name=x\0")


def test_modules_closure_follows_depends(tmp_path: Path) -> None:
    _module(tmp_path, "kernel/drivers/virtio/virtio_pci.ko", "virtio,virtio_ring,virtio_pci_x")
    _module(tmp_path, "kernel/drivers/virtio/virtio_pci-x.ko", "virtio")
    _module(tmp_path, "kernel/drivers/virtio/virtio.ko", "")
    _module(tmp_path, "kernel/drivers/virtio/virtio_ring.ko", "virtio")
    _module(tmp_path, "kernel/drivers/char/virtio_console.ko", "virtio,virtio_ring")
    _module(tmp_path, "kernel/drivers/net/virtio_net.ko", "virtio")
    assert flavours._modules_closure(tmp_path, ("virtio_console", "virtio_pci")) == [
        "kernel/drivers/char/virtio_console.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_pci-x.ko",
        "kernel/drivers/virtio/virtio_pci.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
    ]


def test_modules_closure_refuses_a_missing_module(tmp_path: Path) -> None:
    _module(tmp_path, "kernel/drivers/char/virtio_console.ko", "virtio")
    with pytest.raises(RuntimeError, match="module virtio not in"):
        flavours._modules_closure(tmp_path, ("virtio_console",))


def test_matrix_covers_every_kernel_with_both_bursts_in_ci() -> None:
    from tests.system.test_matrix import MATRIX

    assert set(MATRIX) == set(flavours.FLAVOURS)
    for kernel, steps in MATRIX.items():
        ci = [s.name for s in steps if not s.full]
        assert {"kexec_load_burst", "nothing_loaded"} <= set(ci), kernel
        bursts = sum(
            s.name in ("kexec_load_burst", "nothing_loaded") or "peer" in s.name for s in steps
        )
        assert bursts <= 4, f"{kernel}: more bursts than one boot's four DIMM slots"


def test_guest_units_follow_the_guests_systemd() -> None:
    """Bookworm's systemd 252 has no Type=notify-reload: its guest gets the unit the bookworm
    package ships (notify + ExecReload), trixie's the unit as written."""
    old = vm.overlay_cpio(vm.SYSTEMD_BY_SUITE["bookworm"])
    new = vm.overlay_cpio(vm.SYSTEMD_BY_SUITE["trixie"])
    assert b"\nType=notify\n" in old
    assert b"\nExecReload=/bin/kill -HUP $MAINPID\n" in old
    assert b"\nType=notify-reload\n" not in old
    assert b"\nType=notify-reload\n" in new
