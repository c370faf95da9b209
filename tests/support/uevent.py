"""Build and send uevents on a NETLINK_KOBJECT_UEVENT socket, as udevd and the kernel do.

Two wire formats exist on that netlink family:

* **udev format** (multicast group 2, ``UDEV_GROUP``): what udevd re-broadcasts after its rules
  ran, and what libudev/sd-device monitors with ``source="udev"`` read. A 40-byte header
  (``monitor_netlink_header`` in systemd's ``sd-device/device-monitor.c``) followed by the
  properties as NUL-terminated ``KEY=VALUE`` strings:

  ======  ===================  ==============================================================
  offset  field                encoding
  ======  ===================  ==============================================================
  0       prefix               ``b"libudev\\0"``: tells it apart from a kernel message
  8       magic                ``0xfeedcafe``, network order (the BPF filter checks it)
  12      header_size          40, host order
  16      properties_off       40, host order (where the properties start)
  20      properties_len       host order
  24      filter_subsystem     MurmurHash2(SUBSYSTEM, seed 0), network order
  28      filter_devtype       MurmurHash2(DEVTYPE) or 0, network order
  32      filter_tag_bloom_hi  upper 32 bits of the 64-bit tag bloom, network order
  36      filter_tag_bloom_lo  lower 32 bits, network order
  ======  ===================  ==============================================================

  A monitor with a subsystem filter installs a classic-BPF program that loads the hash words
  with ``BPF_LD|BPF_W|BPF_ABS`` (which reads big-endian) and compares them with the host-order
  hash: so a message with a wrong hash never wakes the receiving socket up. The receiving side
  then also demands: sender credentials with uid 0 (``SO_PASSCRED``; the kernel attaches the
  sender's credentials, so send as root), a correct magic, and properties that contain
  ``ACTION``, ``DEVPATH``, ``SUBSYSTEM`` and a non-zero ``SEQNUM``.

* **kernel format** (multicast group 1, ``KERNEL_GROUP``): ``ACTION@DEVPATH\\0`` followed by
  the same ``KEY=VALUE\\0`` strings, no header. libudev drops a kernel-group message whose
  sender port id is non-zero (only the kernel itself sends from port 0), so a message that a
  test *multicasts* to group 1 from its own socket never reaches a ``source="kernel"`` monitor:
  that path can only be exercised by a real kernel (the VM system tests). See
  :meth:`UeventSender.inject_kernel` for the one exception the kernel offers (uevent
  injection, Linux >= 4.18), which is what the kernel-source tests here use when it works.

The properties of cpu and memory devices carry no ``DEVNAME`` (they have no device node).
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1
UDEV_GROUP = 2
UDEV_MONITOR_MAGIC = 0xFEEDCAFE
HEADER_SIZE = 40
# struct nlmsghdr: len, type, flags, seq, pid; only used for kernel uevent injection.
_NLMSGHDR = struct.Struct("=IHHII")
_NLM_F_REQUEST = 0x1
_NLMSG_MIN_TYPE = 0x10

PROPERTY_KERNEL_UPDATES = "CRASHHP_KERNEL_UPDATES"
DEFAULT_TAGS = ("crashhp",)


def murmurhash2(data: bytes, seed: int = 0) -> int:
    """Austin Appleby's 32-bit MurmurHash2, as systemd's ``MurmurHash2(key, len, seed)``.

    Blocks of four bytes are read in host byte order (systemd copies them into a
    ``uint32_t``), so the result matches the C function on the machine that runs it.
    """
    m = 0x5BD1E995
    mask = 0xFFFFFFFF
    length = len(data)
    h = (seed ^ length) & mask
    whole = length - length % 4
    for (block,) in struct.iter_unpack("<I" if sys.byteorder == "little" else ">I", data[:whole]):
        k = (block * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def tag_bloom(tags: Iterable[str]) -> int:
    """The 64-bit bloom filter of a device's tags: four 6-bit slices of each tag's hash."""
    bits = 0
    for tag in tags:
        h = murmurhash2(tag.encode())
        for shift in (0, 6, 12, 18):
            bits |= 1 << ((h >> shift) & 63)
    return bits


@dataclass(frozen=True)
class Uevent:
    """One device event: the properties a monitor receives."""

    action: str
    devpath: str
    subsystem: str
    seqnum: int
    devtype: str | None = None
    tags: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.seqnum <= 0:
            raise ValueError("SEQNUM must be non-zero: libudev drops a device without it")
        if not self.devpath.startswith("/"):
            raise ValueError(f"DEVPATH must start with '/': {self.devpath!r}")

    @property
    def sys_name(self) -> str:
        return self.devpath.rsplit("/", 1)[-1]

    def properties(self, *, with_seqnum: bool = True) -> dict[str, str]:
        props = {"ACTION": self.action, "DEVPATH": self.devpath, "SUBSYSTEM": self.subsystem}
        if self.devtype is not None:
            props["DEVTYPE"] = self.devtype
        if with_seqnum:
            props["SEQNUM"] = str(self.seqnum)
        if self.tags:
            joined = ":" + ":".join(self.tags) + ":"
            props["TAGS"] = joined
            props["CURRENT_TAGS"] = joined
        props.update(self.extra)
        return props


def hotplug_event(
    subsystem: str,
    action: str,
    index: int,
    seqnum: int,
    *,
    kernel_updates: str | None = None,
    tags: Sequence[str] = DEFAULT_TAGS,
    extra: Mapping[str, str] | None = None,
    synthetic: bool = False,
) -> Uevent:
    """A cpuN or memoryN event as crashhp's udev rule would leave it.

    ``kernel_updates`` is the value of ``crash_hotplug`` the rule recorded at event time
    (``CRASHHP_KERNEL_UPDATES``); None leaves the property out. ``synthetic``: the
    SYNTH_UUID the kernel adds to the events `udevadm trigger` asks for.
    """
    if subsystem not in ("cpu", "memory"):
        raise ValueError(f"not a hotplug subsystem: {subsystem!r}")
    pairs = dict(extra or {})
    if kernel_updates is not None:
        pairs[PROPERTY_KERNEL_UPDATES] = kernel_updates
    if synthetic:
        pairs["SYNTH_UUID"] = "0"
    return Uevent(
        action=action,
        devpath=f"/devices/system/{subsystem}/{subsystem}{index}",
        subsystem=subsystem,
        seqnum=seqnum,
        tags=tuple(tags),
        extra=tuple(pairs.items()),
    )


def _nulstr(props: Mapping[str, str]) -> bytes:
    out = bytearray()
    for key, value in props.items():
        if "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"bad property {key!r}={value!r}")
        out += f"{key}={value}".encode() + b"\0"
    return bytes(out)


def udev_message(event: Uevent) -> bytes:
    """The udev-format (group 2) message for ``event``: header, then properties."""
    body = _nulstr(event.properties())
    bloom = tag_bloom(event.tags)
    devtype_hash = murmurhash2(event.devtype.encode()) if event.devtype is not None else 0
    header = (
        b"libudev\0"
        + struct.pack(">I", UDEV_MONITOR_MAGIC)
        + struct.pack("=III", HEADER_SIZE, HEADER_SIZE, len(body))
        + struct.pack(
            ">IIII",
            murmurhash2(event.subsystem.encode()),
            devtype_hash,
            bloom >> 32,
            bloom & 0xFFFFFFFF,
        )
    )
    assert len(header) == HEADER_SIZE
    return header + body


def raw_udev_message(
    properties: Sequence[bytes] | bytes,
    *,
    filter_subsystem: str = "cpu",
    magic: int = UDEV_MONITOR_MAGIC,
    header_size: int = HEADER_SIZE,
    properties_off: int = HEADER_SIZE,
    properties_len: int | None = None,
    tags: Iterable[str] = DEFAULT_TAGS,
) -> bytes:
    """A udev-format message with any header fields and any property bytes.

    For hostile-input tests: ``properties`` are raw ``KEY=VALUE`` byte strings (each gets its
    NUL; pass ``bytes`` to lay out the body exactly, terminators and all), so they may hold
    bytes that are not UTF-8, newlines, or no ``=``. ``filter_subsystem`` only sets the
    header's subsystem hash, which decides whether a monitor's BPF filter lets it through;
    the ``SUBSYSTEM`` property, if any, is whatever ``properties`` says.
    """
    body = properties if isinstance(properties, bytes) else b"".join(p + b"\0" for p in properties)
    bloom = tag_bloom(tags)
    return (
        b"libudev\0"
        + struct.pack(">I", magic)
        + struct.pack(
            "=III",
            header_size,
            properties_off,
            len(body) if properties_len is None else properties_len,
        )
        + struct.pack(
            ">IIII", murmurhash2(filter_subsystem.encode()), 0, bloom >> 32, bloom & 0xFFFFFFFF
        )
        + body
    )


def kernel_message(event: Uevent, *, with_seqnum: bool = True) -> bytes:
    """The kernel-format (group 1) message: ``ACTION@DEVPATH\\0KEY=VALUE\\0...``."""
    props = event.properties(with_seqnum=with_seqnum)
    # The kernel's own uevents carry no tags: udevd adds those.
    props.pop("TAGS", None)
    props.pop("CURRENT_TAGS", None)
    return f"{event.action}@{event.devpath}".encode() + b"\0" + _nulstr(props)


@dataclass(frozen=True)
class SendReport:
    sent: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.sent / self.seconds if self.seconds > 0 else float("inf")


class UeventSender:
    """A NETLINK_KOBJECT_UEVENT socket that multicasts pre-built messages.

    The socket belongs to the network namespace of the thread that creates it: use
    :func:`tests.support.nshost.socket_in_netns` (or build it inside the namespace) so that the
    messages reach the monitors of that namespace and no others.
    """

    def __init__(self, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT)
        self._sock = sock
        self._sock.bind((0, 0))
        # Multicast delivery never blocks the sender; a large send buffer keeps sendmsg from
        # waiting on the unicast leg to the kernel's own socket.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> UeventSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, payload: bytes, group: int = UDEV_GROUP) -> None:
        self._sendmsg(payload, (0, group))

    def send_event(self, event: Uevent) -> None:
        self.send(udev_message(event))

    def send_many(self, payloads: Sequence[bytes], group: int = UDEV_GROUP) -> SendReport:
        """Send pre-built messages in a tight loop; returns the count and time taken."""
        sendmsg = self._sock.sendmsg
        address = (0, group)
        start = time.perf_counter()
        for payload in payloads:
            try:  # noqa: SIM105 - the hot loop: no context manager per message
                sendmsg((payload,), (), 0, address)
            except ConnectionRefusedError:
                pass
        return SendReport(len(payloads), time.perf_counter() - start)

    def inject_kernel(self, event: Uevent) -> None:
        """Have the kernel broadcast ``event`` on group 1 of this socket's namespace.

        Since Linux 4.18 a process with CAP_SYS_ADMIN over a network namespace may send a
        uevent to the kernel's own uevent socket (port 0) wrapped in a ``nlmsghdr`` with
        ``NLM_F_REQUEST``; the kernel appends ``SEQNUM=`` and multicasts it to the kernel group
        of that namespace from port id 0, so libudev takes it for a kernel uevent. The message
        is therefore built without a SEQNUM.
        """
        body = kernel_message(event, with_seqnum=False)
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), _NLMSG_MIN_TYPE, _NLM_F_REQUEST, 0, 0)
        self._sendmsg(header + body, (0, 0))

    def _sendmsg(self, payload: bytes, address: tuple[int, int]) -> None:
        try:
            self._sock.sendmsg((payload,), (), 0, address)
        except ConnectionRefusedError:
            # The unicast leg of a multicast send to port 0 may be refused on old kernels;
            # the multicast copies were delivered all the same (udevd ignores this too).
            pass
        except OSError as e:
            if e.errno != errno.ECONNREFUSED:
                raise
