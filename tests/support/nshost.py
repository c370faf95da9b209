"""A fake host in a private network and mount namespace, for real-netlink tests.

:class:`FakeHost` builds a fake kernel tree in a directory of its own (``sys/cpu``,
``sys/memory``, ``sys/kernel``, ``run``) and starts programs with
``unshare --net --mount --propagation private`` through :mod:`tests.support.nsinit`, which
bind-mounts those directories over ``/sys/devices/system/cpu``, ``/sys/devices/system/memory``,
``/sys/kernel`` and ``/run`` inside the namespace only, and a fake ``proc/iomem`` file over
``/proc/iomem`` (procfs cannot be replaced wholesale, one file can). The test writes the files
directly in its directory at any time; the program sees them at the kernel's paths. The fake
iomem is one file bind-mounted by inode, so it is rewritten in place (one pwrite, never a
truncate), never replaced.
``run/udev/control`` exists so that libudev subscribes to the udev group even where ``/dev``
is not a devtmpfs.

The namespace has its own uevent netlink: udev-group messages sent there reach only the
monitors of that namespace, and nothing from the host's udevd gets in. Messages are sent from a
socket created in the namespace (:func:`socket_in_netns`).

Each program's stdout and stderr are read by threads into :class:`Lines` (JSON lines parsed),
its sd_notify messages by :class:`NotifyListener`, and :class:`ReloadRecorder` stands in for
the reload tool. Everything is stopped and killed on exit, also when the test failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from tests.support.uevent import NETLINK_KOBJECT_UEVENT, UeventSender, hotplug_event, udev_message

REPO = Path(__file__).resolve().parents[2]
CLONE_NEWNET = 0x40000000
UNSHARE = "/usr/bin/unshare"

T = TypeVar("T")


class WaitTimeout(AssertionError):
    pass


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``predicate`` every 10 ms until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(0.01)


def socket_in_netns(pid: int) -> socket.socket:
    """A NETLINK_KOBJECT_UEVENT socket in the network namespace of process ``pid``.

    ``setns(2)`` moves only the calling thread, so a short-lived thread joins the namespace,
    creates the socket (which stays in that namespace for its life) and ends.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into the netns of {pid}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT))
        except BaseException as e:
            result.append(e)

    thread = threading.Thread(target=work, name=f"setns-{pid}")
    thread.start()
    thread.join(10)
    if not result:
        raise RuntimeError("setns thread did not finish")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


@dataclass(frozen=True)
class Line:
    t: float
    text: str
    obj: dict[str, Any] | None


class Lines:
    """Lines of a stream, read by a thread; JSON objects parsed, the rest kept as text."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._stream = stream
        self._lines: list[Line] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"lines-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for raw in iter(self._stream.readline, b""):
            text = raw.decode(errors="replace").rstrip("\n")
            obj: dict[str, Any] | None = None
            if text.startswith("{"):
                with contextlib.suppress(ValueError):
                    parsed = json.loads(text)
                    if isinstance(parsed, dict):
                        obj = parsed
            with self._lock:
                self._lines.append(Line(time.monotonic(), text, obj))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def lines(self) -> list[Line]:
        with self._lock:
            return list(self._lines)

    def objects(self) -> list[dict[str, Any]]:
        """Parsed JSON lines, each with the receive time added as ``_t``."""
        return [{**line.obj, "_t": line.t} for line in self.lines() if line.obj is not None]

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        """Log records whose ``event`` is ``name`` and whose fields equal ``match``."""
        return [
            o
            for o in self.objects()
            if o.get("event") == name and all(o.get(k) == v for k, v in match.items())
        ]

    def wait_for(
        self, name: str, timeout: float = 10.0, *, after: float = 0.0, **match: Any
    ) -> dict[str, Any]:
        """The first record ``name`` (received after monotonic time ``after``)."""

        def found() -> dict[str, Any] | None:
            hits = [o for o in self.events(name, **match) if o["_t"] >= after]
            return hits[0] if hits else None

        try:
            return wait_until(found, timeout, f"log event {name!r} {match or ''}")
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}\n--- output so far ---\n{self.text()}") from None

    def text(self, last: int = 60) -> str:
        return "\n".join(line.text for line in self.lines()[-last:])


@dataclass(frozen=True)
class Notification:
    t: float
    key: str
    value: str


class NotifyListener:
    """The sd_notify datagram socket a service manager would listen on (``NOTIFY_SOCKET``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(str(path))
        self._items: list[Notification] = []
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            readable, _, _ = select.select([self._sock.fileno(), self._stop_r], [], [])
            if self._stop_r in readable:
                return
            data = self._sock.recv(65536)
            now = time.monotonic()
            with self._lock:
                for assignment in data.decode(errors="replace").splitlines():
                    key, _, value = assignment.partition("=")
                    self._items.append(Notification(now, key, value))

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        self._sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def items(self, key: str | None = None) -> list[Notification]:
        with self._lock:
            return [n for n in self._items if key is None or n.key == key]

    def wait_for(
        self, key: str, value: str | None = None, *, timeout: float = 10.0, after: float = 0.0
    ) -> Notification:
        def found() -> Notification | None:
            hits = [
                n for n in self.items(key) if n.t >= after and (value is None or n.value == value)
            ]
            return hits[0] if hits else None

        return wait_until(found, timeout, f"sd_notify {key}={value or '*'} ({self.items()})")


@dataclass(frozen=True)
class Call:
    """One run of the reload recorder: its start record, and its end record if it ended."""

    pid: int
    pgid: int
    start: float
    overlap: bool
    end: float | None
    rc: int | None
    hang_child: int | None
    argv: tuple[str, ...] = ()  # the recorder's own arguments (after the script)
    ebusy: bool = False  # failed as kexec does on EBUSY (``ebusy_lock`` knob)
    image: dict[str, Any] | None = None  # the topology it "loaded" (successful calls)


class ReloadRecorder:
    """The reload command for ``[reload] method = "command"``: see ``reload_recorder.py``."""

    SCRIPT = Path(__file__).with_name("reload_recorder.py")

    def __init__(self, state: Path) -> None:
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.set_knobs()

    @property
    def argv(self) -> list[str]:
        return [sys.executable, str(self.SCRIPT), str(self.state)]

    def set_knobs(
        self,
        *,
        duration_ms: float = 0,
        fail: int = 0,
        hang: bool = False,
        leave_unloaded: bool = False,
        ebusy_lock: Path | None = None,
        fail_before_unload: bool = False,
        hotplug_after: bool = False,
    ) -> None:
        knobs = {
            "duration_ms": duration_ms,
            "fail": fail,
            "hang": hang,
            "leave_unloaded": leave_unloaded,
            "ebusy_lock": str(ebusy_lock) if ebusy_lock is not None else None,
            "fail_before_unload": fail_before_unload,
            "hotplug_after": hotplug_after,
        }
        tmp = self.state / "knobs.tmp"
        tmp.write_text(json.dumps(knobs))
        tmp.replace(self.state / "knobs.json")

    def _records(self) -> list[dict[str, Any]]:
        path = self.state / "calls.jsonl"
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line being written right now
                records.append(json.loads(line))
        return records

    def calls(self) -> list[Call]:
        records = self._records()
        calls = []
        for rec in records:
            if rec["phase"] != "start":
                continue
            pid = rec["pid"]
            end = next((r for r in records if r["pid"] == pid and r["phase"] == "end"), None)
            hang = next((r for r in records if r["pid"] == pid and r["phase"] == "hang"), None)
            calls.append(
                Call(
                    pid=pid,
                    pgid=rec["pgid"],
                    start=rec["t"],
                    overlap=rec["overlap"],
                    end=end["t"] if end else None,
                    rc=end["rc"] if end else None,
                    hang_child=hang["child"] if hang else None,
                    argv=tuple(rec.get("argv", ())),
                    ebusy=bool(end.get("ebusy")) if end else False,
                    image=end.get("image") if end else None,
                )
            )
        return sorted(calls, key=lambda c: c.start)

    def count(self) -> int:
        return len(self.calls())

    def image(self) -> dict[str, Any] | None:
        """The topology the last successful call "loaded", or None before any."""
        path = self.state / "image.json"
        try:
            image: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return image

    def wait_calls(self, n: int, timeout: float = 10.0) -> list[Call]:
        return wait_until(
            lambda: c if len(c := self.calls()) >= n else None, timeout, f"{n} reload call(s)"
        )

    def assert_never_concurrent(self) -> None:
        """No call started while another ran: by the lock, and by the recorded intervals."""
        calls = self.calls()
        assert not any(c.overlap for c in calls), f"overlapping reload commands: {calls}"
        for before, after in itertools.pairwise(calls):
            assert before.end is not None, f"a call never ended before the next: {calls}"
            assert after.start >= before.end, f"reload commands overlap: {before} / {after}"

    def kill_leftovers(self) -> None:
        for call in self.calls():
            for pid in (call.pid, call.hang_child):
                if pid is not None and _is_ours(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def _is_ours(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"reload_recorder" in cmdline or b"time.sleep(3600)" in cmdline


def proc_status(pid: int) -> dict[str, int]:
    """The ``kB`` and count fields of ``/proc/PID/status`` (VmRSS, VmHWM, Threads...)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields = value.split()
        if fields and fields[0].isdigit():
            out[key] = int(fields[0])
    return out


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (gone, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class FakeSysfs:
    """The fake kernel files, in the fixture's directory, seen by the namespace at /sys."""

    def __init__(self, root: Path, cpus: int = 4, memory_blocks: int = 8) -> None:
        self.root = root
        self.cpu = root / "cpu"
        self.memory = root / "memory"
        self.kernel = root / "kernel"
        for d in (self.cpu, self.memory, self.kernel):
            d.mkdir(parents=True, exist_ok=True)
        for n in range(cpus):
            (self.cpu / f"cpu{n}").mkdir(exist_ok=True)
            (self.cpu / f"cpu{n}" / "online").write_text("1\n")
        span = f"0-{cpus - 1}\n" if cpus > 1 else "0\n"
        for name in ("online", "possible", "present"):
            (self.cpu / name).write_text(span)
        (self.memory / "block_size_bytes").write_text("8000000\n")
        self.set_blocks(memory_blocks)
        (self.kernel / "crash_elfcorehdr_size").write_text("4096\n")
        (self.kernel / "kexec_crash_size").write_text("268435456\n")
        self.set(cpu_hotplug="0", memory_hotplug="0", loaded="1")

    def set_blocks(self, count: int) -> None:
        """Blocks memory0..count-1, online; the namespace sees the change at once."""
        for n in range(count):
            block = self.memory / f"memory{n}"
            if not block.is_dir():
                block.mkdir()
                (block / "online").write_text("1\n")
                (block / "state").write_text("online\n")
        for block in self.memory.glob("memory*"):
            suffix = block.name.removeprefix("memory")
            if suffix.isdigit() and int(suffix) >= count:
                shutil.rmtree(block)

    def set(
        self,
        *,
        cpu_hotplug: str | bool | None = False,
        memory_hotplug: str | bool | None = False,
        loaded: str | bool | None = False,
    ) -> None:
        """Write the kernel's answers; None removes a file, False leaves it alone."""
        for path, value in (
            (self.cpu / "crash_hotplug", cpu_hotplug),
            (self.memory / "crash_hotplug", memory_hotplug),
            (self._loaded_path, loaded),
        ):
            if value is False:
                continue
            if value is None or value is True:
                path.unlink(missing_ok=True)
            else:
                self.write(path, str(value))

    @staticmethod
    def write(path: Path, value: str) -> None:
        """Replace a file atomically: a reader never sees it empty."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(value.rstrip("\n") + "\n")
        tmp.replace(path)

    @property
    def _loaded_path(self) -> Path:
        new = self.kernel / "kexec" / "crash_loaded"
        return new if new.exists() else self.kernel / "kexec_crash_loaded"

    def loaded(self) -> str:
        return self._loaded_path.read_text().strip()

    def new_layout_only(self) -> None:
        """The kexec files of Linux 6.19 and later under /sys/kernel/kexec/, and none of the
        old names (obsolete, "removed after 2028")."""
        kexec = self.kernel / "kexec"
        kexec.mkdir(exist_ok=True)
        for old, new in (
            ("kexec_crash_loaded", "crash_loaded"),
            ("kexec_crash_size", "crash_size"),
            ("crash_elfcorehdr_size", "crash_elfcorehdr_size"),
        ):
            (self.kernel / old).replace(kexec / new)
        (kexec / "loaded").write_text("0\n")


class NsProcess:
    """A program running in its own network and mount namespace; its pid is the program's."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        assert popen.stdout is not None
        assert popen.stderr is not None
        self.stdout = Lines(popen.stdout, f"{self.pid}-out")
        self.stderr = Lines(popen.stderr, f"{self.pid}-err")
        self._sender: UeventSender | None = None

    @property
    def sender(self) -> UeventSender:
        """A uevent socket in this process's network namespace."""
        if self._sender is None:
            self._sender = UeventSender(socket_in_netns(self.pid))
        return self._sender

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL to the whole process group; returns the exit status."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        self.stdout.join(2)
        self.stderr.join(2)
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        return self.popen.returncode


def toml_dumps(config: Mapping[str, Any]) -> str:
    """Enough TOML for crashhp's config: scalars, string lists, one level of tables."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    top = [f"{k} = {value(v)}" for k, v in config.items() if not isinstance(v, Mapping)]
    tables = [
        f"\n[{k}]\n" + "\n".join(f"{kk} = {value(vv)}" for kk, vv in v.items())
        for k, v in config.items()
        if isinstance(v, Mapping)
    ]
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


class Daemon(NsProcess):
    """``python -m crashhp daemon --config FILE`` in the fake host; JSON logs on stderr."""

    def __init__(self, popen: subprocess.Popen[bytes], host: FakeHost) -> None:
        self.spawned_at = time.monotonic()
        super().__init__(popen)
        self.host = host
        self.logs = self.stderr
        self.notify = host.notify

    def wait_ready(self, timeout: float = 15.0) -> Notification:
        """This process's READY=1 (the notify socket outlives restarts of the daemon)."""
        try:
            return self.notify.wait_for("READY", "1", timeout=timeout, after=self.spawned_at)
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}\n--- daemon stderr ---\n{self.logs.text()}") from None

    def send_burst(
        self,
        count: int,
        *,
        subsystems: Sequence[str] = ("memory",),
        action: str = "online",
        change: bool = True,
        synthetic: bool = False,
    ) -> float:
        """Send ``count`` events as fast as possible; returns the monotonic time of the last.
        ``change`` and ``synthetic``: as for :meth:`FakeHost.burst`."""
        payloads = self.host.burst(
            count, subsystems=subsystems, action=action, change=change, synthetic=synthetic
        )
        report = self.sender.send_many(payloads)
        self.host.last_send_rate = report.rate
        return time.monotonic()


class FakeHost:
    """A fake host: the kernel tree, the namespace, the notify socket, the reload recorder."""

    BASE_CONFIG: Mapping[str, Any] = {
        "policy": "auto",
        "coalesce": {"quiet_ms": 150, "max_delay_ms": 3000, "settle_ms": 100},
        "reload": {
            "method": "command",
            "timeout_s": 10,
            "retries": 0,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 1.0,
        },
        "events": {"source": "udev", "receive_buffer_bytes": 64 << 20},
        "log": {"level": "info", "format": "json"},
    }

    def __init__(self, base: Path, *, cpus: int = 4, memory_blocks: int = 8) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        self.sysfs = FakeSysfs(base / "sys", cpus=cpus, memory_blocks=memory_blocks)
        self.iomem = base / "proc" / "iomem"
        self.iomem.parent.mkdir(exist_ok=True)
        self.iomem.touch()
        self.set_topology(cpus=cpus, memory_blocks=memory_blocks)
        self.run = base / "run"
        (self.run / "udev").mkdir(parents=True, exist_ok=True)
        (self.run / "udev" / "control").touch()
        self.recorder = ReloadRecorder(base / "reload")
        self.config_path = base / "etc" / "crashhp.toml"
        self.config_path.parent.mkdir(exist_ok=True)
        self.notify = NotifyListener(base / "notify.sock")
        self.overlays: list[tuple[str, Path, Path]] = []  # (target, upper, work)
        self.processes: list[NsProcess] = []
        self._seqnum = 1000
        self.last_send_rate = 0.0

    def __enter__(self) -> FakeHost:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.processes:
            proc.stop()
        self.recorder.kill_leftovers()
        self.notify.close()

    @property
    def binds(self) -> list[tuple[Path, str]]:
        return [
            (self.sysfs.cpu, "/sys/devices/system/cpu"),
            (self.sysfs.memory, "/sys/devices/system/memory"),
            (self.sysfs.kernel, "/sys/kernel"),
            (self.run, "/run"),
            (self.iomem, "/proc/iomem"),
        ]

    BLOCK_BYTES = 0x8000000  # FakeSysfs's block_size_bytes: 128 MiB

    def load_by_hand(self) -> None:
        """Someone else (the distribution's tool, an admin) loads a crash kernel now: it
        describes the topology of now."""
        image = self.recorder.state / "image.json"
        image.write_text(json.dumps(self.topology(), sort_keys=True))
        self.sysfs.set(loaded="1")

    def grow(self, subsystems: Sequence[str]) -> None:
        """A real hotplug change in the fake kernel: one more memory block, one more CPU."""
        self.set_topology(
            cpus=self.cpus + 1 if "cpu" in subsystems else None,
            memory_blocks=self.memory_blocks + 1 if "memory" in subsystems else None,
        )

    def set_topology(self, *, cpus: int | None = None, memory_blocks: int | None = None) -> None:
        """Hot-plug in the fake kernel: cpus 0..N-1 present and online, N memory blocks online.

        Memory is "System RAM" in /proc/iomem: the low 640 KiB, then one range per block from
        1 MiB on, one line per four blocks (as the kernel merges adjacent ranges, roughly);
        and blocks memory0..N-1 under /sys/devices/system/memory, changed first.
        """
        if cpus is not None:
            self.cpus = cpus
            span = f"0-{cpus - 1}" if cpus > 1 else "0"
            for name in ("present", "online"):
                self.sysfs.write(self.sysfs.cpu / name, span)
            for n in range(cpus):
                (self.sysfs.cpu / f"cpu{n}").mkdir(exist_ok=True)
        if memory_blocks is not None:
            self.memory_blocks = memory_blocks
            self.sysfs.set_blocks(memory_blocks)
            lines = ["00000000-00000fff : Reserved", "00001000-0009fbff : System RAM"]
            start = 0x100000
            for first in range(0, memory_blocks, 4):
                size = min(4, memory_blocks - first) * self.BLOCK_BYTES
                lines.append(f"{start:08x}-{start + size - 1:08x} : System RAM")
                start += size
            self._rewrite_iomem(("\n".join(lines) + "\n").encode())

    def _rewrite_iomem(self, data: bytes) -> None:
        """Rewrite the bind-mounted file in place with one pwrite, never truncating.

        Truncating and then writing left a window in which a reader (the daemon, the reload
        recorder) could see an empty /proc/iomem, which the real one never is. Empty lines pad
        the new text to the old length (readers count only "System RAM" lines, as crashhp and
        kexec-tools do).
        """
        fd = os.open(self.iomem, os.O_WRONLY)
        try:
            os.pwrite(fd, data.ljust(os.fstat(fd).st_size, b"\n"), 0)
        finally:
            os.close(fd)

    def topology(self) -> dict[str, Any]:
        """The current fake topology, as the reload recorder records a "loaded image"."""
        ram = [line.strip() for line in self.iomem.read_text().splitlines() if "System RAM" in line]
        return {
            "ram": ram,
            "present": (self.sysfs.cpu / "present").read_text().strip(),
            "online": (self.sysfs.cpu / "online").read_text().strip(),
        }

    def overlay_etc(self) -> Path:
        """Give programs started from now on an /etc with ``etc-upper`` on top of the host's.

        Returns the upper directory: files put there before a program starts are in its
        /etc (``etc-upper/crashhp/crashhp.toml`` is its ``/etc/crashhp/crashhp.toml``).
        Change them while it runs through :meth:`in_namespace`, not in the upper directory
        behind the overlay's back.
        """
        upper, work = self.base / "etc-upper", self.base / "etc-work"
        for d in (upper, work):
            d.mkdir(mode=0o755, exist_ok=True)
        self.overlays = [("/etc", upper, work)]
        return upper

    def in_namespace(self, proc: NsProcess, code: str, *args: str) -> None:
        """Run Python ``code`` (with ``args`` in sys.argv[1:]) in ``proc``'s mount namespace."""
        argv = ["nsenter", f"--mount=/proc/{proc.pid}/ns/mnt", "--", sys.executable, "-c", code]
        subprocess.run(
            [*argv, *args],
            check=True,
            timeout=15,
            capture_output=True,
        )

    def next_seqnum(self) -> int:
        self._seqnum += 1
        return self._seqnum

    def burst(
        self,
        count: int,
        *,
        subsystems: Sequence[str] = ("memory",),
        action: str = "online",
        change: bool = True,
        synthetic: bool = False,
    ) -> list[bytes]:
        """Pre-built udev messages for ``count`` events cycling over ``subsystems``.

        ``change``: first change the fake topology as such a burst does (one more memory
        block, one more CPU), so that the burst is a real hotplug: crashhp compares the
        topology with what the loaded crash kernel describes, and a burst that changed
        nothing (``change=False``: a `udevadm trigger` replay, an offline-online rollback)
        needs no reload. ``synthetic``: with SYNTH_UUID, as `udevadm trigger` makes the
        kernel send.
        """
        if change:
            self.grow(subsystems)
        return [
            udev_message(
                hotplug_event(
                    subsystems[i % len(subsystems)],
                    action,
                    i,
                    self.next_seqnum(),
                    synthetic=synthetic,
                )
            )
            for i in range(count)
        ]

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        factory: Callable[[subprocess.Popen[bytes]], NsProcess] = NsProcess,
    ) -> NsProcess:
        """Start ``argv`` in a new namespace with the fake tree mounted; wait for the mounts."""
        ready_r, ready_w = os.pipe()
        cmd = [UNSHARE, "--net", "--mount", "--propagation", "private", "--"]
        cmd += [sys.executable, "-m", "tests.support.nsinit", "--ready-fd", str(ready_w)]
        for source, target in self.binds:
            cmd += ["--bind", f"{source}:{target}"]
        for target, upper, work in self.overlays:
            cmd += ["--overlay", f"{target}:{upper}:{work}"]
        cmd += ["--", *argv]
        child_env = dict(os.environ if env is None else env)
        child_env["PYTHONPATH"] = str(REPO)
        child_env["PYTHONUNBUFFERED"] = "1"
        try:
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(ready_w,),
                cwd=REPO,
                env=child_env,
                start_new_session=True,
            )
        finally:
            os.close(ready_w)
        proc = factory(popen)
        self.processes.append(proc)
        try:
            readable, _, _ = select.select([ready_r], [], [], 10)
            answer = os.read(ready_r, 64) if readable else b""
        finally:
            os.close(ready_r)
        if not answer.strip().isdigit():
            proc.stop(1)
            raise RuntimeError(f"namespace set-up failed: {proc.stderr.text()}")
        own = os.stat("/proc/self/ns/net").st_ino
        if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == own:
            raise RuntimeError("the program did not get a network namespace of its own")
        return proc

    def write_config(
        self, overrides: Mapping[str, Any] | None = None, text: str | None = None
    ) -> Path:
        """Write the daemon's config: the base config merged with ``overrides``, or ``text``."""
        if text is None:
            config = merge(self.BASE_CONFIG, {"reload": {"command": self.recorder.argv}})
            config = merge(config, overrides or {})
            text = toml_dumps(config)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(self.config_path)
        return self.config_path

    def start_daemon(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        watchdog_usec: int | None = None,
        wait_ready: bool = True,
        prefix: Sequence[str] = (),
    ) -> Daemon:
        """Start the real daemon in the namespace; by default wait for READY=1.

        ``prefix`` runs it through another program that execs it (``setpriv ... --``).
        """
        self.write_config(overrides)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
        }
        env["NOTIFY_SOCKET"] = str(self.notify.path)
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        argv = [sys.executable, "-m", "crashhp", "daemon", "--config", str(self.config_path)]
        argv = [*prefix, *argv]
        proc = self.spawn(argv, env=env, factory=lambda p: Daemon(p, self))
        assert isinstance(proc, Daemon)
        if wait_ready:
            proc.wait_ready()
        return proc


def skip_reason() -> str | None:
    """Why this machine cannot run FakeHost tests, or None."""
    if os.geteuid() != 0:
        return "real-netlink tests need root (netlink multicast, unshare, mounts)"
    if shutil.which("unshare") is None:
        return "real-netlink tests need unshare(1) from util-linux"
    return None


@contextlib.contextmanager
def fake_host(root: Path) -> Iterator[FakeHost]:
    """A FakeHost under ``root`` for one test; skips where the machine cannot run it."""
    import pytest

    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with FakeHost(root) as host:
        yield host
