"""A QEMU guest running the trixie 6.12 kernel, with QMP for hotplug and an agent for commands.

    with Vm(assets.ensure(), name="demo") as vm:
        vm.cpu_add(2)
        print(vm.agent.run(["cat", "/sys/devices/system/cpu/crash_hotplug"]).stdout)

Every boot appends a small cpio built from the working tree (crashhp/, systemd/, udev/ and the
guest agent and recorder), so code changes need no asset rebuild. TCG only (VM-NOTES trap 1);
QEMU 7.2 crashes on a CPU device_add after a CPU device_del (trap 3), so `cpu_add` refuses that.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import importlib.util
import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from tests.system.assets import Assets, Disk, cache_root
from tests.system.cpio import CpioWriter

REPO = Path(__file__).resolve().parents[2]
GUEST_DIR = Path(__file__).resolve().parent / "guest"
QEMU = "qemu-system-x86_64"
MEMORY = "2G,slots=4,maxmem=8G"
SMP = "2,sockets=12,cores=1,threads=1,maxcpus=12"
BOOT_CPUS = 2
MAX_CPUS = 12
DIMM_SLOTS = 4
CMDLINE = (
    "console=ttyS0 crashkernel=256M memhp_default_state=online_movable panic=-1 "
    "systemd.show_status=false"
)
AGENT_PORT = "org.crashhp.agent"
GUEST_PYTHONPATH = "/opt/crashhp:/opt/crashhp-deps"
EVENTS = "/run/crashhp-test/events.jsonl"
BOOT_TIMEOUT_S = 240.0
QEMU_LOCK_TIMEOUT_S = 3600.0


class VmError(RuntimeError):
    """The guest or QEMU did not do what was asked: always a test failure, never a skip."""


# No network, no display, no default devices; the agent's virtio-serial bus (any machine).
COMMON_ARGS = (
    "-nic",
    "none",
    "-display",
    "none",
    "-no-user-config",
    "-nodefaults",
    "-device",
    "virtio-serial-pci,id=vser0",
)


def hardware_args() -> list[str]:
    return [
        "-machine",
        "q35",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-m",
        MEMORY,
        "-smp",
        SMP,
        *COMMON_ARGS,
    ]


def qemu_version() -> str:
    proc = subprocess.run(
        [QEMU, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise VmError(f"{QEMU} --version failed: {proc.stderr.strip()}")
    return proc.stdout.splitlines()[0]


def hardware_key() -> list[str]:
    """What QEMU's ACPI tables depend on."""
    return [qemu_version(), *hardware_args()]


def _unit(description: str, exec_start: str, extra: str = "") -> bytes:
    return (
        f"[Unit]\nDescription={description}\nDefaultDependencies=no\n"
        "After=systemd-udevd.service\n\n"
        f"[Service]\nExecStart={exec_start}\nRestart=always\nRestartSec=1\n{extra}\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ).encode()


# The guest userland's systemd: the unit in systemd/ is written for the newest and turned into
# one the older understands as the packages do (packaging/unitfile.py: no notify-reload on 252).
SYSTEMD_BY_SUITE = {"bookworm": 252, "trixie": 257}


def _unit_for(text: str, systemd_version: int) -> str:
    spec = importlib.util.spec_from_file_location("unitfile", REPO / "packaging" / "unitfile.py")
    assert spec is not None
    assert spec.loader is not None
    unitfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unitfile)
    converted: str = unitfile.for_systemd(text, systemd_version)
    return converted


def overlay_cpio(systemd_version: int = SYSTEMD_BY_SUITE["trixie"]) -> bytes:
    """The per-boot archive: crashhp from the working tree, its unit and rules, the agent."""
    w = CpioWriter()
    package = REPO / "crashhp"
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            w.file(f"opt/crashhp/crashhp/{path.relative_to(package)}", path.read_bytes())
    entry = (
        "-m crashhp"
        if (package / "__main__.py").exists()
        else ("-c 'import sys; from crashhp.cli import main; sys.exit(main(sys.argv[1:]))'")
    )
    w.file(
        "usr/local/bin/crashhp",
        # /opt/crashhp-deps: pinned wheels where the distribution's are too old (bookworm).
        f'#!/bin/sh\nPYTHONPATH={GUEST_PYTHONPATH} exec /usr/bin/python3 {entry} "$@"\n'.encode(),
        0o755,
    )
    for alias in ("usr/bin/crashhp", "usr/sbin/crashhp"):
        w.symlink(alias, "/usr/local/bin/crashhp")
    for unit in sorted((REPO / "systemd").glob("*")):
        if unit.is_file():
            unit_text = _unit_for(unit.read_text(), systemd_version)
            w.file(f"etc/systemd/system/{unit.name}", unit_text.encode())
    for rules in sorted((REPO / "udev").glob("*.rules")):
        w.file(f"etc/udev/rules.d/{rules.name}", rules.read_bytes())
    w.file("opt/crashhp-test/agent.py", (GUEST_DIR / "agent.py").read_bytes())
    w.file("opt/crashhp-test/recorder.py", (GUEST_DIR / "recorder.py").read_bytes())
    units = {
        "crashhp-test-agent.service": _unit(
            "crashhp system-test agent", "/usr/bin/python3 /opt/crashhp-test/agent.py"
        ),
        "crashhp-test-recorder.service": _unit(
            "crashhp system-test recorder (kexec_crash_loaded poller, uevent log)",
            "/usr/bin/python3 /opt/crashhp-test/recorder.py",
            "CPUSchedulingPolicy=fifo\nCPUSchedulingPriority=10\n",
        ),
    }
    for name, text in units.items():
        w.file(f"etc/systemd/system/{name}", text)
        w.symlink(f"etc/systemd/system/multi-user.target.wants/{name}", f"../{name}")
    return w.getvalue()


def _copy_disk(src: Path, dest: Path) -> None:
    subprocess.run(
        ["cp", "--sparse=always", "--reflink=auto", str(src), str(dest)],
        check=True,
        timeout=300,
        capture_output=True,
    )


def write_into_image(image: Path, archive: bytes) -> None:
    """Put the files of a newc cpio into an ext4 image with debugfs (no mount, no root fs
    privileges): what `overlay_cpio` adds to an initramfs boot, for a disk boot."""
    with tempfile.TemporaryDirectory(prefix="crashhp-overlay-") as tmp:
        root = Path(tmp)
        subprocess.run(
            ["cpio", "-idm", "--quiet"],
            input=archive,
            cwd=root,
            check=True,
            timeout=60,
            capture_output=True,
        )
        paths = sorted(root.rglob("*"), key=lambda p: (len(p.parts), str(p)))
        cmds: list[str] = []
        for path in paths:
            dest = "/" + str(path.relative_to(root))
            if path.is_symlink():
                cmds += [f'rm "{dest}"', f'symlink "{dest}" "{os.readlink(path)}"']
            elif path.is_dir():
                cmds.append(f'mkdir "{dest}"')
            else:
                mode = 0o100000 | (path.stat().st_mode & 0o7777)
                cmds += [f'rm "{dest}"', f'write "{path}" "{dest}"', f'sif "{dest}" mode 0{mode:o}']
        script = root.parent / f"{root.name}.debugfs"
        script.write_text("\n".join(cmds) + "\n")
        try:
            proc = subprocess.run(
                ["debugfs", "-w", "-f", str(script), str(image)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        finally:
            script.unlink()
        if proc.returncode != 0:
            raise VmError(f"debugfs -w {image} failed: {proc.stderr[-2000:]}")


class _Lines:
    """Line reader over a stream socket with deadlines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def readline(self, deadline: float) -> bytes:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                try:
                    chunk = self.sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    raise VmError("connection closed by QEMU")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def send(self, obj: object) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")


def _connect(path: Path, deadline: float, alive: Vm) -> socket.socket:
    while True:
        alive.check_alive()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise VmError(f"cannot connect to {path}") from None
            time.sleep(0.05)
        else:
            return sock


class Qmp:
    def __init__(self, sock: socket.socket, vm: Vm) -> None:
        self.io = _Lines(sock)
        self.vm = vm
        self.events: list[dict[str, Any]] = []
        self._id = 0
        greeting = json.loads(self.io.readline(time.monotonic() + 30))
        if "QMP" not in greeting:
            raise VmError(f"unexpected QMP greeting {greeting}")
        self.execute("qmp_capabilities")

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        self._id += 1
        request: dict[str, Any] = {"execute": command, "id": self._id}
        if arguments:
            request["arguments"] = arguments
        self.io.send(request)
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = json.loads(self.io.readline(deadline))
            except VmError:
                self.vm.check_alive(wait=True)
                raise
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == self._id:
                if "error" in msg:
                    raise VmError(f"QMP {command} {arguments}: {msg['error']}")
                return msg.get("return")

    def wait_event(self, name: str, timeout: float, **data: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and all(
                    ev.get("data", {}).get(k) == v for k, v in data.items()
                ):
                    return self.events.pop(i)
            try:
                msg = json.loads(self.io.readline(deadline))
            except TimeoutError:
                raise VmError(f"no QMP event {name} {data} within {timeout} s") from None
            if "event" in msg:
                self.events.append(msg)


@dataclass(frozen=True)
class RunResult:
    argv: list[str]
    rc: int | None
    stdout: str
    stderr: str

    def check(self) -> RunResult:
        if self.rc != 0:
            raise VmError(f"guest: {self.argv} exited {self.rc}\n{self.stdout}\n{self.stderr}")
        return self


class Agent:
    def __init__(self, sock: socket.socket, vm: Vm) -> None:
        self.io = _Lines(sock)
        self.vm = vm
        self._id = 0

    def request(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        self._id += 1
        self.io.send({"id": self._id, "op": op, **args})
        deadline = time.monotonic() + timeout
        while True:
            self.vm.check_alive()
            try:
                line = self.io.readline(min(deadline, time.monotonic() + 1.0))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise VmError(f"agent: no answer to {op} {args} in {timeout} s") from None
                continue
            try:
                reply: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            if reply.get("id") != self._id:
                continue
            if "error" in reply:
                raise VmError(f"agent {op} {args}: {reply['error']}")
            return reply

    def fire(self, op: str, **args: Any) -> None:
        """Send a request and do not wait for its answer (one that ends the guest)."""
        self._id += 1
        self.io.send({"id": self._id, "op": op, **args})

    def wait_ready(self, deadline: float) -> None:
        while True:
            try:
                self.request("ping", timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            except VmError:
                if time.monotonic() > deadline:
                    raise
            else:
                return

    def ping(self) -> int:
        """The guest's CLOCK_MONOTONIC in ns."""
        return int(self.request("ping")["mono_ns"])

    def run(self, argv: list[str], timeout: float = 60.0, input_text: str = "") -> RunResult:
        reply = self.request(
            "run", timeout=timeout + 10, argv=argv, timeout_s=timeout, input=input_text
        )
        return RunResult(argv, reply["rc"], reply["stdout"], reply["stderr"])

    def sh(self, script: str, timeout: float = 60.0) -> RunResult:
        return self.run(["/bin/sh", "-ec", script], timeout)

    def read_file(self, path: str) -> bytes:
        return base64.b64decode(self.request("read", path=path)["data"])

    def read_text(self, path: str) -> str:
        return self.read_file(path).decode()

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.request("write", path=path, data=base64.b64encode(raw).decode(), mode=mode)

    def wait_path(self, path: str, timeout: float = 10.0, exists: bool = True) -> bool:
        reply = self.request(
            "wait_path", timeout=timeout + 10, path=path, timeout_s=timeout, exists=exists
        )
        return bool(reply["ok"])


class Vm:
    # The machine: a subclass for another architecture overrides these (tests/system/ppc64.py).
    qemu = QEMU
    boot_timeout_s = BOOT_TIMEOUT_S

    def hardware_args(self) -> list[str]:
        return hardware_args()

    def __init__(
        self,
        assets: Assets,
        name: str = "guest",
        cmdline: str = CMDLINE,
        acpi_fix: bool = True,
        no_reboot: bool = False,
        disk: Disk | None = None,
    ) -> None:
        self.assets = assets
        self.name = name
        self.cmdline = cmdline
        self.acpi_fix = acpi_fix and assets.acpi_cpio is not None
        # QEMU exits where the guest would reboot: a crash with no crash kernel ends the VM.
        self.no_reboot = no_reboot
        # Boot from an ext4 disk image (a copy per boot) instead of the rootfs initramfs.
        self.disk = disk
        self.dir = Path(tempfile.mkdtemp(prefix=f"crashhp-vm-{name}-"))
        self.serial_log = self.dir / "serial.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._qmp: Qmp | None = None
        self._agent: Agent | None = None
        self.boot_s = 0.0
        self.lock_wait_s = 0.0  # waited for another user's guest before booting
        self.cpus_plugged: set[int] = set()
        self.cpu_removed = False
        self.dimms: set[int] = set()
        self._lock: TextIO | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Vm:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _take_qemu_lock(self) -> None:
        """One guest at a time on this machine (2 cores): wait for any other user's VM."""
        path = cache_root() / "qemu.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = path.open("w")
        deadline = time.monotonic() + QEMU_LOCK_TIMEOUT_S
        told = False
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise VmError(
                        f"another guest held {path} for {QEMU_LOCK_TIMEOUT_S} s"
                    ) from None
                if not told:
                    print(f"vm[{self.name}]: waiting for another guest to finish ({path})")
                    told = True
                # Often: a test run that boots guest after guest frees the lock for
                # milliseconds only between them.
                time.sleep(0.02)
            else:
                return

    def _systemd_version(self) -> int:
        suite = str(self.assets.manifest.get("suite", "trixie"))
        return SYSTEMD_BY_SUITE.get(suite, SYSTEMD_BY_SUITE["trixie"])

    def start(self) -> None:
        if shutil.which(self.qemu) is None:
            raise VmError(f"{self.qemu} not found: install it (make setup)")
        waiting = time.monotonic()
        self._take_qemu_lock()
        self.lock_wait_s = time.monotonic() - waiting
        started = time.monotonic()
        initrd = self.dir / "initrd.cpio"
        with initrd.open("wb") as out:
            if self.acpi_fix:
                assert self.assets.acpi_cpio is not None
                out.write(self.assets.acpi_cpio.read_bytes())
            if self.disk is not None:
                out.write(self.disk.initrd.read_bytes())
            else:
                with self.assets.rootfs_cpio.open("rb") as src:
                    shutil.copyfileobj(src, out, 4 << 20)
                if self.assets.kernel_cpio is not None:
                    out.write(self.assets.kernel_cpio.read_bytes())
                out.write(overlay_cpio(self._systemd_version()))
        drive: list[str] = []
        if self.disk is not None:
            image = self.dir / "disk.img"
            _copy_disk(self.disk.image, image)
            write_into_image(image, overlay_cpio(self._systemd_version()))
            drive = ["-drive", f"file={image},if=virtio,format=raw"]
        argv = [
            self.qemu,
            *self.hardware_args(),
            "-name",
            f"crashhp-{self.name}",
            "-serial",
            f"file:{self.serial_log}",
            "-qmp",
            f"unix:{self.dir / 'qmp.sock'},server=on,wait=off",
            "-chardev",
            f"socket,id=agent,path={self.dir / 'agent.sock'},server=on,wait=off",
            "-device",
            f"virtserialport,chardev=agent,name={AGENT_PORT}",
            "-kernel",
            str(self.assets.vmlinuz),
            "-initrd",
            str(initrd),
            "-append",
            self.cmdline,
            *(["-no-reboot"] if self.no_reboot else []),
            *drive,
        ]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=(self.dir / "qemu.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = started + self.boot_timeout_s
        self._qmp = Qmp(_connect(self.dir / "qmp.sock", deadline, self), self)
        self._agent = Agent(_connect(self.dir / "agent.sock", deadline, self), self)
        try:
            self._agent.wait_ready(deadline)
            left = max(10.0, deadline - time.monotonic())
            state = self._agent.run(["systemctl", "is-system-running", "--wait"], timeout=left)
        except VmError as exc:
            raise VmError(f"{exc}\n{self.serial_tail()}") from exc
        self.boot_s = time.monotonic() - started
        initrd.unlink()
        if state.stdout.strip() not in ("running", "degraded"):
            raise VmError(f"guest system state {state.stdout.strip()!r}\n{self.serial_tail()}")
        if state.stdout.strip() == "degraded":
            failed = self._agent.run(["systemctl", "--failed", "--no-legend"]).stdout
            print(f"vm[{self.name}]: degraded, failed units: {failed.strip()}", flush=True)

    def close(self) -> None:
        try:
            self._stop_qemu()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _stop_qemu(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                if self._qmp is not None:
                    self._qmp.execute("quit", timeout=5)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        for conn in (self._qmp, self._agent):
            if conn is not None:
                conn.io.sock.close()
        (self.dir / "initrd.cpio").unlink(missing_ok=True)

    def check_alive(self, wait: bool = False) -> None:
        if self.proc is not None and wait:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.poll() is not None:
            out = (self.dir / "qemu.out").read_text(errors="replace")[-2000:]
            raise VmError(f"QEMU exited with {self.proc.returncode}: {out}\n{self.serial_tail()}")

    def serial_tail(self, lines: int = 40) -> str:
        try:
            text = self.serial_log.read_text(errors="replace")
        except OSError:
            return "(no serial log)"
        return f"--- last serial lines ({self.serial_log}) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )

    @property
    def qmp(self) -> Qmp:
        if self._qmp is None:
            raise VmError("VM not started")
        return self._qmp

    @property
    def agent(self) -> Agent:
        if self._agent is None:
            raise VmError("VM not started")
        return self._agent

    # -- hotplug through QMP ---------------------------------------------------------------
    def free_sockets(self) -> list[int]:
        slots = self.qmp.execute("query-hotpluggable-cpus")
        return sorted(int(s["props"]["socket-id"]) for s in slots if "qom-path" not in s)

    def cpu_add(self, socket_id: int) -> str:
        """Plug a CPU into an empty socket; returns the QOM id. Does not online it."""
        if self.cpu_removed:
            raise VmError(
                "QEMU 7.2 double-frees on CPU device_add after a device_del: use a new VM"
            )
        slots = self.qmp.execute("query-hotpluggable-cpus")
        props = next((s["props"] for s in slots if s["props"].get("socket-id") == socket_id), None)
        if props is None:
            raise VmError(f"no CPU socket {socket_id}")
        dev_id = f"cpu{socket_id}"
        self.qmp.execute("device_add", {"driver": slots[0]["type"], "id": dev_id, **props})
        self.cpus_plugged.add(socket_id)
        return dev_id

    def cpu_del(self, socket_id: int, timeout: float = 60.0) -> None:
        """Unplug a CPU and wait until QEMU reports its socket empty.

        QEMU 7.2 sends DEVICE_DELETED only for the CPU's lapic child, so the truth is
        query-hotpluggable-cpus, polled.
        """
        dev_id = f"cpu{socket_id}"
        self.cpu_removed = True
        self.qmp.execute("device_del", {"id": dev_id})
        self._wait(lambda: socket_id in self.free_sockets(), timeout, f"{dev_id} unplugged")
        self.cpus_plugged.discard(socket_id)

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise VmError(f"not {what} within {timeout} s\n{self.serial_tail(15)}")
            time.sleep(0.05)

    def dimm_add(self, n: int, size_mib: int = 1024) -> None:
        self.qmp.execute(
            "object-add",
            {"qom-type": "memory-backend-ram", "id": f"mem{n}", "size": size_mib << 20},
        )
        self.qmp.execute("device_add", {"driver": "pc-dimm", "id": f"dimm{n}", "memdev": f"mem{n}"})
        self.dimms.add(n)

    def dimm_del(self, n: int, timeout: float = 60.0) -> None:
        """Unplug a DIMM (the guest must offline its memory first) and wait until it is gone."""
        self.qmp.execute("device_del", {"id": f"dimm{n}"})

        def gone() -> bool:
            devices = self.qmp.execute("query-memory-devices")
            return all(d.get("data", {}).get("id") != f"dimm{n}" for d in devices)

        self._wait(gone, timeout, f"dimm{n} unplugged")
        self.qmp.execute("object-del", {"id": f"mem{n}"})
        self.dimms.discard(n)

    # -- guest helpers ---------------------------------------------------------------------
    def guest_cpu_index(self, socket_id: int) -> int:
        """The guest's CPU number for a socket (APIC id = socket id with one core/thread)."""
        return socket_id

    def wait_cpu(self, socket_id: int, timeout: float = 30.0) -> int:
        n = self.guest_cpu_index(socket_id)
        if not self.agent.wait_path(f"/sys/devices/system/cpu/cpu{n}/online", timeout):
            raise VmError(f"guest never saw cpu{n} after plugging socket {socket_id}")
        return n

    def set_online(self, path: str, online: bool) -> None:
        self.agent.write_file(path, "1" if online else "0")

    def events(self) -> list[dict[str, Any]]:
        """The recorder's log: loaded transitions and uevents, guest monotonic ns."""
        text = self.agent.read_text(EVENTS)
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _main() -> int:
    """Boot, show the hotplug facts, shut down: `python -m tests.system.vm`."""
    from tests.system import assets

    a = assets.ensure()
    with Vm(a, name="smoke") as vm:
        print(f"booted in {vm.boot_s:.1f} s; dir {vm.dir}")
        ag = vm.agent
        print(
            ag.sh(
                "grep -i -e 'hotplug CPUs' -e 'ACPI: .*upgrade' -e 'Table Upgrade' "
                "/dev/kmsg -m 0 2>/dev/null; dmesg | grep -i -e hotplug -e upgrade "
                "-e 'online capable' | head -20",
                20,
            ).stdout
        )
        print(
            "crash_hotplug cpu/mem:",
            ag.sh(
                "cat /sys/devices/system/cpu/crash_hotplug /sys/devices/system/memory/crash_hotplug"
            ).stdout.split(),
        )
        t = time.monotonic()
        vm.cpu_add(2)
        n = vm.wait_cpu(2)
        print(f"cpu{n} appeared in {time.monotonic() - t:.2f} s")
        vm.set_online(f"/sys/devices/system/cpu/cpu{n}/online", True)
        vm.dimm_add(1)
        time.sleep(3)
        print(ag.sh("nproc; grep MemTotal /proc/meminfo").stdout)
        for ev in vm.events()[-30:]:
            print(ev)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
