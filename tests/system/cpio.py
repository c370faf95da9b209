"""A writer for the "newc" cpio format the kernel unpacks as an initramfs.

Used for the small archives built per boot (the working tree's crashhp, the guest agent) and for
the ACPI table override, so that they need neither root nor the cpio tool.
"""

from __future__ import annotations

import io
import stat
from dataclasses import dataclass, field

_MAGIC = b"070701"


@dataclass
class CpioWriter:
    """Collects entries in memory; `getvalue()` returns the archive with its trailer."""

    _buf: io.BytesIO = field(default_factory=io.BytesIO)
    _ino: int = 1000
    _dirs: set[str] = field(default_factory=set)

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name = name.lstrip("/")
        encoded = name.encode() + b"\0"
        self._ino += 1
        fields = (
            self._ino,  # ino
            mode,
            0,  # uid
            0,  # gid
            1,  # nlink
            0,  # mtime
            len(data),
            0,  # devmajor
            0,  # devminor
            0,  # rdevmajor
            0,  # rdevminor
            len(encoded),
            0,  # check
        )
        self._buf.write(_MAGIC + b"".join(b"%08X" % f for f in fields))
        self._buf.write(encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def directory(self, name: str, mode: int = 0o755) -> None:
        """Add a directory and its missing parents."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path and path not in self._dirs:
                self._dirs.add(path)
                self._entry(path, stat.S_IFDIR | mode)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        parent = name.strip("/").rpartition("/")[0]
        if parent:
            self.directory(parent)
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        parent = name.strip("/").rpartition("/")[0]
        if parent:
            self.directory(parent)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def getvalue(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        # The kernel accepts concatenated archives; keep each one 512-byte aligned.
        self._buf.write(b"\0" * (-self._buf.tell() % 512))
        return self._buf.getvalue()
