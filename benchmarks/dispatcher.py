"""A stand-in for systemd-udevd running a per-event helper: the rule-based design's floor.

    python -m benchmarks.dispatcher --expect N [--max-children K] -- HELPER ARGV...

Run inside a :class:`tests.support.nshost.FakeHost` namespace, it does for each uevent what
udevd does for a ``PROGRAM=`` (or ``RUN+=``) rule that matches it, and nothing else:

- it receives the uevents on the udev netlink group of its namespace (the messages crashhp
  receives, built by ``tests.support.uevent``), into a 128 MiB receive buffer as crashhp's;
- it matches the actions Debian's kdump-tools rules match (memory ``online``/``offline``,
  cpu ``add``/``remove``/``online``) and queues the event;
- it starts the helper once per queued event with at most ``--max-children`` running, the
  default being udevd's ``children_max`` on this machine (2 x CPUs + 16, at most one per
  128 MiB of RAM); stdin and stderr on /dev/null, stdout on a pipe that is read after the
  helper exits, as udevd reads a ``PROGRAM=``'s output;
- it reaps every helper and counts those that exited 0 and printed a ``1`` as their last
  line: with the default helper, ``flock LOCK cat .../crash_hotplug .../kexec_crash_loaded``,
  those are the events after which Debian's ``kdump-config try-reload`` would start a full
  reload (it reloads whenever ``kexec_crash_loaded`` is 1).

It does not model udevd's own work per event (rule evaluation, the worker processes and
their IPC, the database, re-broadcasting): the real pipeline costs more. It prints JSON lines
on stdout: ``ready`` once listening, ``done`` when ``--expect`` helpers have exited (or when
nothing happened for ``--idle-exit`` seconds after the first event), then waits for SIGTERM.

Standard library only, one thread, posix_spawn: as cheap as a Python dispatcher gets.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

NETLINK_KOBJECT_UEVENT = 15
UDEV_GROUP = 2
SO_RCVBUFFORCE = 33
RECEIVE_BUFFER_BYTES = 128 << 20
UDEV_MAGIC = b"libudev\0"
# (subsystem, action) pairs of Debian's kdump-tools rules (each runs its helper per event).
MATCHED = frozenset(
    {
        (b"memory", b"online"),
        (b"memory", b"offline"),
        (b"cpu", b"add"),
        (b"cpu", b"remove"),
        (b"cpu", b"online"),
    }
)


def udevd_children_max() -> int:
    """systemd-udevd's default worker limit: min(2 x CPUs + 16, max(RAM / 128 MiB, 10))."""
    cpus = len(os.sched_getaffinity(0))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(cpus * 2 + 16, max(ram // (128 << 20), 10))


def match(message: bytes) -> bool:
    """True for a udev-format message whose subsystem and action a rule matches."""
    if not message.startswith(UDEV_MAGIC) or len(message) < 40:
        return False
    offset = int.from_bytes(message[16:20], sys.byteorder)
    length = int.from_bytes(message[20:24], sys.byteorder)
    subsystem = action = b""
    for prop in message[offset : offset + length].split(b"\0"):
        if prop.startswith(b"SUBSYSTEM="):
            subsystem = prop[10:]
        elif prop.startswith(b"ACTION="):
            action = prop[7:]
    return (subsystem, action) in MATCHED


@dataclass
class Counts:
    received: int = 0
    matched: int = 0
    spawned: int = 0
    exited: int = 0
    failed: int = 0
    reload_due: int = 0
    overflows: int = 0
    max_running: int = 0
    first_rx: float | None = None
    last_rx: float | None = None
    last_exit: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(self, helper: list[str], max_children: int) -> None:
        self.helper = helper
        self.max_children = max_children
        self.counts = Counts()
        self.queue = 0  # events waiting for a free worker slot (their content is not needed)
        self.running: dict[int, int] = {}  # pid -> read end of its stdout pipe
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
        self.sock.bind((0, UDEV_GROUP))
        self.sock.setblocking(False)
        self.sigr, self.sigw = socket.socketpair()
        self.sigr.setblocking(False)
        self.sigw.setblocking(False)
        signal.set_wakeup_fd(self.sigw.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)
        self.stop = False
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ, "uevents")
        self.selector.register(self.sigr, selectors.EVENT_READ, "signals")

    def receive(self) -> None:
        now = time.monotonic()
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # udevd would lose these events too
                    self.counts.overflows += 1
                    continue
                raise
            self.counts.received += 1
            if self.counts.first_rx is None:
                self.counts.first_rx = now
            self.counts.last_rx = now
            if match(data):
                self.counts.matched += 1
                self.queue += 1

    def spawn(self) -> None:
        while self.queue and len(self.running) < self.max_children:
            r, w = os.pipe2(os.O_CLOEXEC)
            actions = [
                (os.POSIX_SPAWN_DUP2, self.devnull, 0),
                (os.POSIX_SPAWN_DUP2, w, 1),
                (os.POSIX_SPAWN_DUP2, self.devnull, 2),
            ]
            try:
                pid = os.posix_spawn(self.helper[0], self.helper, os.environ, file_actions=actions)
            finally:
                os.close(w)
            self.queue -= 1
            self.running[pid] = r
            self.counts.spawned += 1
            self.counts.max_running = max(self.counts.max_running, len(self.running))

    def reap(self) -> None:
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            r = self.running.pop(pid)
            chunks = []
            while chunk := os.read(r, 65536):
                chunks.append(chunk)
            os.close(r)
            code = os.waitstatus_to_exitcode(status)
            self.counts.exited += 1
            self.counts.last_exit = time.monotonic()
            self.counts.statuses[str(code)] = self.counts.statuses.get(str(code), 0) + 1
            lines = b"".join(chunks).split()
            if code != 0:
                self.counts.failed += 1
            elif lines and lines[-1] == b"1":
                self.counts.reload_due += 1

    def signals(self) -> None:
        try:
            data = self.sigr.recv(256)
        except BlockingIOError:
            return
        if signal.SIGTERM in data or signal.SIGINT in data:
            self.stop = True

    def run(self, expect: int, idle_exit_s: float) -> int:
        emit({"event": "ready", "pid": os.getpid(), "max_children": self.max_children})
        done = False
        last_progress = time.monotonic()
        while not self.stop:
            for key, _ in self.selector.select(0.5 if not done else None):
                if key.data == "uevents":
                    self.receive()
                else:
                    self.signals()
            before = self.counts.exited
            self.reap()
            self.spawn()
            now = time.monotonic()
            if self.counts.exited != before or self.queue:
                last_progress = now
            finished = self.counts.exited >= expect and not self.running and not self.queue
            stalled = (
                self.counts.first_rx is not None
                and not self.running
                and not self.queue
                and now - last_progress > idle_exit_s
            )
            if not done and (finished or stalled):
                done = True
                emit({"event": "done", "complete": finished, **vars(self.counts)})
        return 0


def emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dispatcher")
    parser.add_argument("--expect", type=int, required=True, help="helpers to wait for")
    parser.add_argument("--max-children", type=int, default=0, help="0: udevd's default")
    parser.add_argument("--idle-exit", type=float, default=30.0, metavar="S")
    parser.add_argument("helper", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    helper = args.helper[1:] if args.helper[:1] == ["--"] else args.helper
    if not helper or not os.path.isabs(helper[0]):
        parser.error("give the helper's argv, absolute path first")
    dispatcher = Dispatcher(helper, args.max_children or udevd_children_max())
    return dispatcher.run(args.expect, args.idle_exit)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
