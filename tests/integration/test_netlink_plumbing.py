"""The test plumbing itself, proven with a plain pyudev monitor and no daemon.

If these fail, the daemon tests mean nothing: our messages must look to libudev exactly like
udevd's (and, through the kernel's uevent injection, like the kernel's).
"""

from __future__ import annotations

import struct
import sys
import time
from typing import Any

import pytest

from tests.support.nshost import FakeHost, NsProcess, wait_until
from tests.support.uevent import (
    KERNEL_GROUP,
    PROPERTY_KERNEL_UPDATES,
    hotplug_event,
    kernel_message,
    murmurhash2,
    udev_message,
)

pytestmark = pytest.mark.netlink


def listen(host: FakeHost, *args: str) -> NsProcess:
    proc = host.spawn([sys.executable, "-m", "tests.support.listen", *args])
    wait_until(
        lambda: any(o.get("ready") for o in proc.stdout.objects()), 10, "the listener to start"
    )
    return proc


def devices(proc: NsProcess) -> list[dict[str, Any]]:
    return [o for o in proc.stdout.objects() if "action" in o]


def wait_devices(proc: NsProcess, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    return wait_until(
        lambda: d if len(d := devices(proc)) >= n else None,
        timeout,
        f"{n} device(s); listener said: {proc.stderr.text()}",
    )


def test_udev_message_reaches_a_filtered_pyudev_monitor(host: FakeHost) -> None:
    proc = listen(host, "--subsystem", "cpu", "--subsystem", "memory")
    cpu = hotplug_event("cpu", "add", 5, 4242, kernel_updates="0")
    mem = hotplug_event("memory", "offline", 17, 4243, kernel_updates="1")
    proc.sender.send_event(cpu)
    proc.sender.send_event(mem)
    got = wait_devices(proc, 2)
    assert [(d["action"], d["subsystem"], d["sys_name"], d["seqnum"]) for d in got] == [
        ("add", "cpu", "cpu5", 4242),
        ("offline", "memory", "memory17", 4243),
    ]
    assert got[0]["device_path"] == "/devices/system/cpu/cpu5"
    props = got[1]["properties"]
    assert props[PROPERTY_KERNEL_UPDATES] == "1"
    assert props["TAGS"] == ":crashhp:"
    assert props["CURRENT_TAGS"] == ":crashhp:"
    assert "DEVNAME" not in props


def test_subsystem_filter_runs_in_the_kernel(host: FakeHost) -> None:
    """A monitor on 'memory' is not even woken by 'cpu' messages: the BPF hash filter works."""
    proc = listen(host, "--subsystem", "memory")
    proc.sender.send_many(host.burst(200, subsystems=("cpu",)))
    time.sleep(0.3)
    proc.sender.send_event(hotplug_event("memory", "online", 3, host.next_seqnum()))
    (got,) = wait_devices(proc, 1)
    assert got["subsystem"] == "memory"
    assert got["wakeups"] == 1, "the monitor woke up for cpu messages"


def test_wrong_subsystem_hash_is_dropped_before_userspace(host: FakeHost) -> None:
    """Control for the test above: the hash, not the SUBSYSTEM property, decides in the kernel."""
    proc = listen(host, "--subsystem", "memory")
    good = udev_message(hotplug_event("memory", "online", 1, host.next_seqnum()))
    bad = bytearray(udev_message(hotplug_event("memory", "online", 2, host.next_seqnum())))
    struct.pack_into(">I", bad, 24, murmurhash2(b"cpu"))
    proc.sender.send(bytes(bad))
    time.sleep(0.3)
    proc.sender.send(good)
    (got,) = wait_devices(proc, 1)
    assert (got["sys_name"], got["wakeups"]) == ("memory1", 1)


def test_libudev_rejects_what_udevd_would_not_send(host: FakeHost) -> None:
    """Wrong magic: dropped silently. No SEQNUM: libudev fails with EINVAL, which pyudev raises
    as ValueError from ``Monitor.poll`` (a daemon must survive that). So good ones are not luck.
    """
    proc = listen(host, "--subsystem", "cpu")
    bad_magic = bytearray(udev_message(hotplug_event("cpu", "add", 1, host.next_seqnum())))
    struct.pack_into(">I", bad_magic, 8, 0xFEEDCAFF)
    no_seqnum = udev_message(hotplug_event("cpu", "add", 2, host.next_seqnum())).replace(
        b"SEQNUM=", b"XEQNUM="
    )
    proc.sender.send(bytes(bad_magic))
    proc.sender.send(no_seqnum)
    proc.sender.send_event(hotplug_event("cpu", "add", 3, host.next_seqnum()))
    wait_devices(proc, 1)
    time.sleep(0.2)
    assert [d["sys_name"] for d in devices(proc)] == ["cpu3"]
    errors = [o["error"] for o in proc.stdout.objects() if "error" in o]
    assert errors == ["ValueError('Invalid argument')"]


def test_kernel_source(host: FakeHost) -> None:
    """A kernel-source monitor ignores our multicast to group 1 (port id is not 0) but takes
    the kernel's re-broadcast of an injected uevent, with the kernel's own SEQNUM."""
    proc = listen(host, "--source", "kernel", "--subsystem", "cpu", "--subsystem", "memory")
    event = hotplug_event("memory", "offline", 9, host.next_seqnum(), tags=())
    proc.sender.send(kernel_message(event), group=KERNEL_GROUP)
    time.sleep(0.2)
    assert devices(proc) == []
    proc.sender.inject_kernel(hotplug_event("cpu", "remove", 2, host.next_seqnum(), tags=()))
    got = wait_devices(proc, 1)
    assert [(d["action"], d["subsystem"], d["sys_name"]) for d in got] == [
        ("remove", "cpu", "cpu2")
    ]
    assert got[0]["seqnum"] > 0


def test_bulk_send_rate(host: FakeHost) -> None:
    """Bulk sending is fast enough to overflow any reader (the figure is printed)."""
    proc = listen(host, "--subsystem", "memory")
    payloads = host.burst(20_000)
    report = proc.sender.send_many(payloads)
    print(
        f"\nbulk send: {report.sent} udev messages in {report.seconds * 1000:.0f} ms, "
        f"{report.rate:,.0f}/s"
    )
    assert report.sent == 20_000
    assert report.rate > 20_000, "too slow to overflow a receive buffer"
    assert devices(proc), "nothing arrived"
