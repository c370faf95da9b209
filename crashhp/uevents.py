"""CPU and memory uevents from netlink: the only module that imports pyudev.

Events are hints, sysfs is the truth: a uevent only marks a subsystem dirty. On a
receive-buffer overflow the monitor is rebuilt by the daemon and the state resynced.
"""

from __future__ import annotations

import errno
import re
from typing import Any, Protocol

from crashhp.model import EVENT_ACTIONS, Subsystem, Uevent

_SYSNAME = {
    Subsystem.CPU: re.compile(r"cpu[0-9]{1,6}"),
    Subsystem.MEMORY: re.compile(r"memory[0-9]{1,9}"),
}
# libudev has read one message off the socket and refused to parse it (a SEQNUM beyond
# 2**64 gives ERANGE, for example); the socket itself is fine. pyudev raises EINVAL as
# ValueError and these as OSError.
_REJECTED_MESSAGE = frozenset(
    {errno.ERANGE, errno.EBADMSG, errno.EPROTO, errno.ENODATA, errno.EILSEQ, errno.EOVERFLOW}
)


__all__ = ["MonitorOverflow", "PyudevSource", "Uevent", "UeventSource", "classify"]


class MonitorOverflow(Exception):
    """The netlink receive buffer overflowed (ENOBUFS): events were lost."""


class UeventSource(Protocol):
    def fileno(self) -> int: ...

    def drain(self, limit: int) -> tuple[list[Uevent], int]:
        """Up to ``limit`` relevant events now queued, and how many others were ignored."""
        ...

    def close(self) -> None: ...


def classify(action: str | None, subsystem: str | None, sys_name: str | None) -> Subsystem | None:
    """The subsystem a raw event counts for, or None to ignore it. Pure."""
    if action not in EVENT_ACTIONS or subsystem is None or sys_name is None:
        return None
    try:
        sub = Subsystem(subsystem)
    except ValueError:
        return None
    return sub if _SYSNAME[sub].fullmatch(sys_name) else None


class PyudevSource:
    """A pyudev netlink monitor filtered on the cpu and memory subsystems."""

    def __init__(self, source: str = "udev", receive_buffer_bytes: int = 128 << 20) -> None:
        import pyudev  # the untyped binding stays behind this edge

        self.source = source
        self._context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(self._context, source=source)
        for subsystem in Subsystem:
            monitor.filter_by(subsystem.value)  # every filter before start()
        self.buffer_error: str | None = None
        try:
            monitor.set_receive_buffer_size(receive_buffer_bytes)
        except OSError as exc:  # needs CAP_NET_ADMIN; keep the default then
            self.buffer_error = exc.strerror or str(exc)
        monitor.start()
        self._monitor: Any = monitor

    def fileno(self) -> int:
        fd: int = self._monitor.fileno()
        return fd

    def drain(self, limit: int) -> tuple[list[Uevent], int]:
        events: list[Uevent] = []
        ignored = 0
        while len(events) + ignored < limit:
            try:
                device = self._monitor.poll(timeout=0)
            except ValueError:
                # libudev rejected one message (EINVAL: no SEQNUM, bad header...). It has
                # been read off the socket; ignore it and go on with the next.
                ignored += 1
                continue
            except OSError as exc:
                # On an overflow the socket reports an error: recvmsg gives ENOBUFS, and
                # pyudev's own poll() turns POLLERR into an OSError without an errno.
                if exc.errno in (errno.ENOBUFS, None):
                    raise MonitorOverflow(str(exc)) from exc
                if exc.errno in _REJECTED_MESSAGE:
                    ignored += 1
                    continue
                raise
            if device is None:
                break
            event = _to_uevent(device)
            if event is None:
                ignored += 1
            else:
                events.append(event)
        return events, ignored

    def close(self) -> None:
        self._monitor = None  # dropping the last reference closes the socket


def _to_uevent(device: Any) -> Uevent | None:
    try:
        action = device.action
        subsystem = classify(action, device.subsystem, device.sys_name)
        if subsystem is None:
            return None
        props = device.properties
        seqnum = props.get("SEQNUM", "0")
        return Uevent(
            action=action,
            subsystem=subsystem,
            sys_name=device.sys_name,
            seqnum=int(seqnum) if seqnum.isdigit() else 0,
            # The kernel tags every uevent that `udevadm trigger` asks for (its
            # kobject_synth_uevent) with SYNTH_UUID: a replay, not a change.
            synthetic="SYNTH_UUID" in props,
        )
    except (ValueError, UnicodeError, KeyError, AttributeError):
        return None  # malformed message: ignore, never act on its contents
