"""The ACPI table fix that makes CPU hotplug work in a TCG guest (VM-NOTES trap 2).

Under TCG the 6.12 guest sees no hypervisor and counts QEMU's disabled CPU entries as
hot-pluggable only when the tables say so. We take QEMU's own FADT and MADT from a first boot,
raise the FADT to revision 6.3 and the MADT to revision 5, mark every disabled Local APIC and
x2APIC entry "Online Capable", bump the OEM revision so the kernel accepts the upgrade, and fix
the checksums. The kernel loads them from `kernel/firmware/acpi/*.aml` in the first, uncompressed
cpio of the initrd (CONFIG_ACPI_TABLE_UPGRADE).
"""

from __future__ import annotations

import struct

from tests.system.cpio import CpioWriter

_HEADER_LEN = 36
_MADT_ENTRIES = 44  # header + local APIC address (4) + flags (4)
_LAPIC = 0
_X2APIC = 9
_ENABLED = 1 << 0
_ONLINE_CAPABLE = 1 << 1


def _finish(table: bytearray) -> bytes:
    """Bump the OEM revision (offset 24) and recompute the checksum (offset 9)."""
    (oem_rev,) = struct.unpack_from("<I", table, 24)
    struct.pack_into("<I", table, 24, oem_rev + 1)
    table[9] = 0
    table[9] = (-sum(table)) & 0xFF
    return bytes(table)


def _check(table: bytes, signature: bytes) -> None:
    if table[:4] != signature:
        raise ValueError(f"not a {signature.decode()} table: {table[:4]!r}")
    (length,) = struct.unpack_from("<I", table, 4)
    if length != len(table):
        raise ValueError(f"{signature.decode()}: header length {length} != {len(table)} bytes")
    if sum(table) & 0xFF:
        raise ValueError(f"{signature.decode()}: bad checksum")


def patch_fadt(fadt: bytes) -> bytes:
    """FADT revision 6.3: major at byte 8, minor at byte 131."""
    _check(fadt, b"FACP")
    if len(fadt) <= 131:
        raise ValueError(f"FACP too short for a minor revision: {len(fadt)} bytes")
    table = bytearray(fadt)
    table[8] = 6
    table[131] = 3
    return _finish(table)


def patch_madt(madt: bytes) -> tuple[bytes, int]:
    """MADT revision 5, disabled (L)x2APIC entries marked online-capable.

    Returns the table and how many entries were marked.
    """
    _check(madt, b"APIC")
    table = bytearray(madt)
    table[8] = 5
    marked = 0
    pos = _MADT_ENTRIES
    while pos + 2 <= len(table):
        kind, length = table[pos], table[pos + 1]
        if length < 2:
            raise ValueError(f"APIC: bad entry length {length} at offset {pos}")
        flags_at = {_LAPIC: pos + 4, _X2APIC: pos + 8}.get(kind)
        if flags_at is not None:
            (flags,) = struct.unpack_from("<I", table, flags_at)
            if not flags & _ENABLED:
                struct.pack_into("<I", table, flags_at, flags | _ONLINE_CAPABLE)
                marked += 1
        pos += length
    return _finish(table), marked


def override_cpio(fadt: bytes, madt: bytes) -> tuple[bytes, int]:
    """The uncompressed cpio to put first in the initrd, and the number of CPUs marked."""
    new_madt, marked = patch_madt(madt)
    writer = CpioWriter()
    writer.file("kernel/firmware/acpi/facp.aml", patch_fadt(fadt))
    writer.file("kernel/firmware/acpi/apic.aml", new_madt)
    return writer.getvalue(), marked
