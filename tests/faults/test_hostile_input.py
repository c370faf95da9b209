"""Hostile and malformed netlink input: ignored or logged, never fatal, never in an argv.

Every message here is multicast on the udev group of the daemon's own network namespace
with the cpu or memory subsystem hash in its header, so that it passes the monitor's BPF
filter and reaches libudev and crashhp. The daemon runs at log level debug, so that the
debug path that names the last event is exercised too. At the end a valid burst must still
cause exactly one reload whose argv is exactly the configured one.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import time
from typing import Any

import pytest

from tests.support.nshost import Daemon, FakeHost, socket_in_netns
from tests.support.uevent import (
    UDEV_GROUP,
    UDEV_MONITOR_MAGIC,
    hotplug_event,
    raw_udev_message,
    udev_message,
)

pytestmark = pytest.mark.faults

AFTERMATH_S = 0.8  # quiet (150 ms) + settle (100 ms) + a reload's start, with margin
NOBODY = 65534


def props(**extra: bytes) -> list[bytes]:
    """A valid cpu1 ``add`` as raw properties, with fields replaced or added."""
    fields = {
        b"ACTION": b"add",
        b"DEVPATH": b"/devices/system/cpu/cpu1",
        b"SUBSYSTEM": b"cpu",
        b"SEQNUM": b"4242",
    }
    for key, value in extra.items():
        fields[key.encode()] = value
    return [k + b"=" + v for k, v in fields.items() if v != b"<drop>"]


# (A zero-length message cannot be sent: the kernel refuses it with ENODATA.)
MALFORMED: dict[str, bytes] = {
    "truncated header": udev_message(hotplug_event("cpu", "add", 1, 7))[:20],
    "header only": raw_udev_message([]),
    "wrong magic": raw_udev_message(props(), magic=UDEV_MONITOR_MAGIC ^ 1),
    "properties_off past the end": raw_udev_message(props(), properties_off=4000),
    "no NUL at the end": raw_udev_message(b"\0".join(props())),
    "no ACTION": raw_udev_message(props(ACTION=b"<drop>")),
    "no DEVPATH": raw_udev_message(props(DEVPATH=b"<drop>")),
    "no SUBSYSTEM": raw_udev_message(props(SUBSYSTEM=b"<drop>")),
    "SEQNUM 0": raw_udev_message(props(SEQNUM=b"0")),
    "SEQNUM past 2**64": raw_udev_message(props(SEQNUM=b"18446744073709551616")),
    "SEQNUM not a number": raw_udev_message(props(SEQNUM=b"12; reboot")),
    "property without =": raw_udev_message([*props(), b"NOEQUALSIGN"]),
    "random bytes": b"libudev\0" + bytes(range(256)) * 4,
    "kernel format on the udev group": b"add@/devices/system/cpu/cpu1\0ACTION=add\0",
}

# libudev trusts neither header_size nor properties_len (it parses from properties_off to the
# end of what it received), and parses the first 8 KiB of a longer message: a valid cpu1 add
# in these is a hotplug hint like any other.
LENIENT: dict[str, bytes] = {
    "header_size 0": raw_udev_message(props(), header_size=0),
    "properties_len past the end": raw_udev_message(props(), properties_len=100_000),
    "properties_len 0": raw_udev_message(props(), properties_len=0),
    "over libudev's 8 KiB buffer": raw_udev_message(props(HUGE=b"x" * 100_000)),
    "1,000 properties": raw_udev_message([*props(), *(b"P%d=%d" % (i, i) for i in range(1000))]),
}

UNKNOWN_ACTIONS = [b"change", b"bind", b"unbind", b"move", b"", b"ADD", b" add", b"frobnicate"]

ODD_DEVPATHS = [
    b"/devices/system/cpu/cpu1\xff\xfe",  # not UTF-8
    b"/devices/system/cpu/cpu1;reboot",
    b"/devices/system/memory/memory$(reboot)",
    b"/devices/system/cpu/`id`",
    b"/devices/system/cpu/cpu1 --force",
    b"/devices/system/cpu/cpu1|sh",
    b"/devices/system/cpu/-rf",
    b"/devices/system/cpu/cpu\xd9\xa1",  # ARABIC-INDIC DIGIT ONE
    b"/devices/system/cpu/" + b"cpu1" * 1000,
    b"/devices/system/cpu/cpu99999999999",
    b"/../../../../etc/cpu1/..",
    b"relative/cpu1",
    b"/devices/system/cpu/",
]


# libudev cuts a value at a line break (so "add\n" is "add", and the DEVPATH below is
# .../memory1): what reaches crashhp is a clean name, and it counts as the hint it is.
CUT_AT_LINE_BREAK = [
    (b"ACTION", b"add\n"),
    (b"DEVPATH", b"/devices/system/memory/memory1\nACTION=remove\nDEVPATH=/x;reboot"),
    (b"DEVPATH", b"/devices/system/memory/memory1\r$(reboot)"),
]


def counters(host: FakeHost) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((host.run / "crashhp" / "state.json").read_text())
    return dict(data["counters"])


def send_all(daemon: Daemon, payloads: list[bytes]) -> None:
    for payload in payloads:
        daemon.sender.send(payload)


def assert_exact_argv_and_one_reload(host: FakeHost, daemon: Daemon) -> None:
    """A valid burst still works, and the command is exactly the configured one."""
    before = host.recorder.count()
    daemon.send_burst(10)
    host.recorder.wait_calls(before + 1)
    daemon.logs.wait_for("reload_done")
    time.sleep(AFTERMATH_S)
    calls = host.recorder.calls()
    assert len(calls) == before + 1, calls
    assert all(c.argv == (str(host.recorder.state),) for c in calls), calls
    configured = " ".join(host.recorder.argv)
    assert {r["command"] for r in daemon.logs.events("reload_started")} == {configured}


def start(host: FakeHost) -> Daemon:
    return host.start_daemon({"log": {"level": "debug"}})


def test_malformed_and_truncated_messages(host: FakeHost) -> None:
    daemon = start(host)
    for name, payload in MALFORMED.items():
        daemon.sender.send(payload)
        time.sleep(0.01)
        assert daemon.alive(), f"died on {name!r}:\n{daemon.logs.text()}"
    time.sleep(AFTERMATH_S)
    assert daemon.alive()
    assert host.recorder.count() == 0, daemon.logs.text()
    assert daemon.logs.events("daemon_crashed") == []
    # A message libudev refuses is dropped: no monitor rebuild, no resync, no reload.
    assert daemon.logs.events("monitor_overflow") == [], daemon.logs.text()
    assert_exact_argv_and_one_reload(host, daemon)


def test_lenient_headers_are_hints_at_most(host: FakeHost) -> None:
    daemon = start(host)
    host.grow(("cpu", "memory"))  # a real change: the events are its hints
    send_all(daemon, list(LENIENT.values()))
    host.recorder.wait_calls(1)
    burst = daemon.logs.wait_for("burst", action="reload")
    time.sleep(AFTERMATH_S)
    assert daemon.alive()
    assert burst["events"] == len(LENIENT)
    assert host.recorder.count() == 1
    assert host.recorder.calls()[0].argv == (str(host.recorder.state),)


def test_unknown_actions_are_ignored(host: FakeHost) -> None:
    daemon = start(host)
    send_all(daemon, [raw_udev_message(props(ACTION=action)) for action in UNKNOWN_ACTIONS])
    time.sleep(AFTERMATH_S)
    assert host.recorder.count() == 0
    assert_exact_argv_and_one_reload(host, daemon)
    counted = counters(host)
    assert counted["events"] == 10, counted
    # Parsed by libudev but not a cpu/memory add/remove/online/offline: counted as ignored
    # (the empty ACTION is refused by libudev itself).
    assert counted["ignored"] >= len(UNKNOWN_ACTIONS) - 1, counted


def test_odd_devpaths_never_reach_a_command_line(host: FakeHost) -> None:
    daemon = start(host)
    payloads = []
    for devpath in ODD_DEVPATHS:
        for subsystem in ("cpu", "memory"):
            payloads.append(
                raw_udev_message(
                    props(DEVPATH=devpath, SUBSYSTEM=subsystem.encode()),
                    filter_subsystem=subsystem,
                )
            )
    send_all(daemon, payloads)
    time.sleep(AFTERMATH_S)
    assert daemon.alive()
    assert host.recorder.count() == 0, "an odd DEVPATH was taken for a cpu or memory device"
    text = "\n".join(line.text for line in daemon.logs.lines())
    for needle in ("reboot", "`id`", "--force", "|sh", "-rf", "etc/cpu1"):
        assert needle not in text, f"{needle!r} from a DEVPATH reached the log"
    assert_exact_argv_and_one_reload(host, daemon)


def test_line_breaks_are_cut_by_libudev(host: FakeHost) -> None:
    daemon = start(host)
    host.grow(("cpu", "memory"))
    for key, value in CUT_AT_LINE_BREAK:
        fields = {key.decode(): value}
        if key == b"DEVPATH":
            fields["SUBSYSTEM"] = b"memory"
        daemon.sender.send(raw_udev_message(props(**fields), filter_subsystem="memory"))
    call = host.recorder.wait_calls(1)[0]
    daemon.logs.wait_for("reload_done")
    seen = daemon.logs.events("uevents")
    assert seen, "no debug line for the events"
    assert {(u["last_action"], u["last_device"]) for u in seen} <= {
        ("add", "cpu1"),
        ("add", "memory1"),
    }, seen
    assert call.argv == (str(host.recorder.state),)
    text = "\n".join(line.text for line in daemon.logs.lines())
    assert "reboot" not in text


def test_hostile_values_in_an_otherwise_valid_event(host: FakeHost) -> None:
    """A real cpu1 add whose other properties are hostile: one hotplug event (a hint), the
    values go nowhere."""
    daemon = start(host)
    host.grow(("cpu",))
    hostile = props(
        CRASHHP_KERNEL_UPDATES=b"1; reboot",
        DRIVER=b"\xff\xfe$(reboot)",
        HUGE=b"y" * 6000,
        MODALIAS=b"a\nb\rc",
        DEVTYPE=b"`id`",
    )
    daemon.sender.send(raw_udev_message(hostile))
    call = host.recorder.wait_calls(1)[0]
    daemon.logs.wait_for("reload_done")
    burst = daemon.logs.wait_for("burst", action="reload")
    assert burst["events"] == 1
    assert call.argv == (str(host.recorder.state),)
    text = "\n".join(line.text for line in daemon.logs.lines())
    assert "reboot" not in text
    assert "yyyy" not in text


def test_sender_that_is_not_root(host: FakeHost) -> None:
    """libudev accepts udev-group messages only from uid 0. A non-root process without
    CAP_NET_ADMIN cannot even send (EPERM); one with it reaches the socket (a raw listener
    sees its uid) and must be ignored."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv(1)")
    daemon = start(host)
    listener = socket_in_netns(daemon.pid)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    listener.bind((0, UDEV_GROUP))
    listener.settimeout(2)
    sock = socket_in_netns(daemon.pid)
    sock.bind((0, 0))
    message = udev_message(hotplug_event("memory", "online", 3, 9999))
    code = (
        "import socket, sys\n"
        "s = socket.socket(fileno=int(sys.argv[1]))\n"
        "s.sendmsg([sys.stdin.buffer.read()], [], 0, (0, 2))\n"
    )
    try:
        results = {}
        for name, caps in (
            ("no caps", []),
            ("CAP_NET_ADMIN", ["--inh-caps=+net_admin", "--ambient-caps=+net_admin"]),
        ):
            argv = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *caps]
            argv += ["--", "/usr/bin/python3", "-c", code, str(sock.fileno())]
            results[name] = subprocess.run(
                argv,
                input=message,
                pass_fds=(sock.fileno(),),
                capture_output=True,
                timeout=10,
                check=False,
            )
        assert results["no caps"].returncode != 0
        assert b"PermissionError" in results["no caps"].stderr
        assert results["CAP_NET_ADMIN"].returncode == 0, results["CAP_NET_ADMIN"].stderr
        data, ancillary, _, _ = listener.recvmsg(65536, socket.CMSG_SPACE(12))
        assert data == message
        (_, uid, _) = struct.unpack("=iII", ancillary[0][2])
        assert uid == NOBODY
    finally:
        listener.close()
        sock.close()
    time.sleep(AFTERMATH_S)
    assert daemon.alive()
    assert host.recorder.count() == 0, "a message from uid 65534 caused a reload"
    assert_exact_argv_and_one_reload(host, daemon)
