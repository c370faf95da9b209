"""The scenarios of issue 3 as steps on a booted guest, shared by the tests and the demo.

A `Guest` wraps a `Vm` with what the scenarios need: loading a crash kernel in a given mode,
running crashhp as its real systemd service (the unit from the working tree), the hotplug
bursts, waiting until everything settled, and measuring the window with the recorder's log.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.system.measure import Metrics, Row, analyse
from tests.system.vm import MAX_CPUS, Vm, VmError

CRASH_INITRD = "/boot/crash-initrd.img"
CRASH_APPEND = "console=ttyS0 irqpoll nr_cpus=1 reset_devices"
# kexec flags per load mode; "none" unloads.
LOAD_FLAGS = {
    "file": ["-s"],  # kexec_file_load: the kernel keeps the header current
    "classic": ["-c"],  # kexec_load without the flag: every change needs a reload
    "hotplug": ["-c", "--hotplug"],  # kexec_load with KEXEC_CRASH_HOTPLUG_SUPPORT
}
LOAD_LABEL = {
    "file": "kexec -s -p",
    "classic": "kexec -c -p",
    "hotplug": "kexec -c -p --hotplug",
    "none": "(none)",
    "peer": "kdump-config load",
    "upgraded": "crashhp upgrade",
}
RELOAD_LOG = "/run/crashhp-test/reloads.log"
RELOAD_SCRIPT_PATH = "/usr/local/sbin/crashhp-test-reload"
# crashhp's reload.method = "command": log each call, then unload and load with kexec_load.


def reload_script(image: str, append: str) -> str:
    return f"""#!/bin/sh
# crashhp system test: the configured reload command. Logs every call.
log={RELOAD_LOG}
echo "start $$ $(cut -d' ' -f1 /proc/uptime)" >>"$log"
/usr/sbin/kexec -p -u || {{ echo "done $$ unload-failed" >>"$log"; exit 1; }}
/usr/sbin/kexec -c -p --initrd={CRASH_INITRD} --append="{append}" "/boot/{image}-$(uname -r)"
rc=$?
echo "done $$ $rc" >>"$log"
exit $rc
"""


RELOAD_SCRIPT = reload_script("vmlinuz", CRASH_APPEND)
CONFIG_PATH = "/etc/crashhp/crashhp.toml"
# quiet_ms: under TCG on a shared 2-core host the steps of one burst (CPU add, online, DIMM)
# can be more than the default 500 ms apart; on hardware they are milliseconds apart.
CONFIG = f"""# crashhp system test
[coalesce]
quiet_ms = 1500
max_delay_ms = 10000

[reload]
method = "command"
command = ["{RELOAD_SCRIPT_PATH}"]
timeout_s = 60
retries = 2
backoff_initial_s = 1.0
"""
PEER_RULES = "/usr/lib/udev/rules.d/50-kdump-tools.rules"
PEER_RULES_PARKED = "/opt/crashhp-test/peer/50-kdump-tools.rules"
SETTLE_QUIET_S = 3.0

Say = Callable[[str], None]


def quiet(_: str) -> None:
    pass


@dataclass
class Outcome:
    """A scenario's row for the table plus what crashhp logged during it."""

    row: Row
    events: collections.Counter[str]
    journal: list[dict[str, Any]]
    status: dict[str, Any] | None = None
    status_rc: int | None = None
    reload_log: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> Metrics:
        return self.row.metrics


class Guest:
    # The kernel image in /boot and the crash kernel's command line (ppc64: vmlinux, hvc0).
    image = "vmlinuz"
    crash_append = CRASH_APPEND
    crash_initrd = CRASH_INITRD

    def __init__(self, vm: Vm, say: Say = quiet) -> None:
        self.vm = vm
        self.say = say
        self.kver = self.sh("uname -r").strip()
        self._next_dimm = 1
        self.sh(f"mkdir -p /run/crashhp-test /etc/crashhp && : >>{RELOAD_LOG}")
        script = reload_script(self.image, self.crash_append)
        self.vm.agent.write_file(RELOAD_SCRIPT_PATH, script, 0o755)
        self.vm.agent.write_file(CONFIG_PATH, CONFIG)
        dropin = os.environ.get("CRASHHP_TEST_UNIT_DROPIN")
        if dropin:
            # Try a change to the unit without editing the tree: a drop-in for crashhp.service.
            self.vm.agent.write_file(
                "/etc/systemd/system/crashhp.service.d/50-test-dropin.conf",
                Path(dropin).read_text(),
            )
            self.sh("systemctl daemon-reload")

    # -- plumbing --------------------------------------------------------------------------
    def sh(self, script: str, timeout: float = 60.0) -> str:
        return self.vm.agent.sh(script, timeout).check().stdout

    def crash_hotplug(self) -> tuple[str, str]:
        out = self.sh(
            "cat /sys/devices/system/cpu/crash_hotplug /sys/devices/system/memory/crash_hotplug"
        ).split()
        return out[0], out[1]

    def crash_loaded(self) -> bool:
        return self.vm.agent.read_text("/sys/kernel/kexec_crash_loaded").strip() == "1"

    def reload_log(self) -> list[str]:
        return self.vm.agent.read_text(RELOAD_LOG).splitlines()

    # -- crash kernel ----------------------------------------------------------------------
    def unload(self) -> None:
        self.vm.agent.run(["/usr/sbin/kexec", "-p", "-u"], 30).check()

    def load(self, mode: str) -> None:
        self.unload()
        if mode == "none":
            return
        argv = [
            "/usr/sbin/kexec",
            "-p",
            *LOAD_FLAGS[mode],
            f"--initrd={self.crash_initrd}",
            f"--append={self.crash_append}",
            f"/boot/{self.image}-{self.kver}",
        ]
        self.vm.agent.run(argv, 60).check()
        if not self.crash_loaded():
            raise VmError(f"{' '.join(argv)} succeeded but kexec_crash_loaded is 0")

    # -- crashhp ---------------------------------------------------------------------------
    def crashhp_stop(self) -> None:
        self.vm.agent.run(["systemctl", "stop", "crashhp.service"], 60).check()

    def crashhp_start(self) -> None:
        """Start the real unit (Type=notify: returns once crashhp sent READY=1)."""
        result = self.vm.agent.run(["systemctl", "start", "crashhp.service"], 90)
        if result.rc != 0:
            journal = self.sh("journalctl -u crashhp --no-pager -n 30 || true")
            raise VmError(f"systemctl start crashhp failed: {result.stderr}\n{journal}")

    def fresh_crashhp(self, mode: str) -> None:
        """Stop crashhp, forget its state (a fresh boot), load `mode`, start it, let it settle."""
        self.crashhp_stop()
        self.sh("rm -f /run/crashhp/state.json")
        self.load(mode)
        self.crashhp_start()
        self.settle(quiet_s=1.0)

    def journal(self, t0: int, t1: int, *args: str) -> list[dict[str, Any]]:
        """Journal entries (json) between two guest monotonic ns stamps."""
        out = (
            self.vm.agent.run(["journalctl", "-o", "json", "--no-pager", *args], 60).check().stdout
        )
        entries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return [
            e for e in entries if t0 // 1000 <= int(e.get("__MONOTONIC_TIMESTAMP", 0)) <= t1 // 1000
        ]

    def status(self) -> tuple[int | None, dict[str, Any] | None]:
        result = self.vm.agent.run(["crashhp", "status", "--json"], 60)
        try:
            return result.rc, json.loads(result.stdout)
        except ValueError:
            return result.rc, None

    # -- hotplug ---------------------------------------------------------------------------
    def free_sockets(self) -> list[int]:
        return [s for s in self.vm.free_sockets() if s < MAX_CPUS]

    def new_dimm(self) -> int:
        n = self._next_dimm
        self._next_dimm += 1
        return n

    def add_cpus_and_dimm(self, cpus: int = 2, dimm: bool = True) -> list[int]:
        """The burst of scenario B: hot-add CPUs, online them, hot-add a 1 GiB DIMM."""
        sockets = self.free_sockets()[:cpus]
        if len(sockets) < cpus:
            raise VmError(f"only {len(sockets)} free CPU sockets left in this VM")
        for s in sockets:
            self.vm.cpu_add(s)
        indices = [self.vm.wait_cpu(s) for s in sockets]
        for n in indices:
            self.vm.set_online(f"/sys/devices/system/cpu/cpu{n}/online", True)
        if dimm:
            self.vm.dimm_add(self.new_dimm())
        return indices

    def settle(self, quiet_s: float = SETTLE_QUIET_S, timeout: float = 180.0) -> None:
        """Wait until udev is idle, no reload runs, and neither the recorder nor crashhp's
        journal saw anything for quiet_s (crashhp's retries are seconds apart)."""
        deadline = time.monotonic() + timeout
        self.vm.agent.run(["udevadm", "settle", f"--timeout={int(timeout)}"], timeout + 5)
        while True:
            now = self.vm.agent.ping()
            records = self.vm.events()
            last = max(int(r["t"]) for r in records)
            last = max(last, self._last_journal_ns())
            starts = sum(1 for line in self.reload_log() if line.startswith("start"))
            dones = sum(1 for line in self.reload_log() if line.startswith("done"))
            if now - last >= quiet_s * 1e9 and starts == dones:
                return
            if time.monotonic() > deadline:
                raise VmError(f"guest did not settle within {timeout} s")
            time.sleep(0.5)

    def _last_journal_ns(self) -> int:
        out = self.vm.agent.run(
            ["journalctl", "-u", "crashhp.service", "-n", "1", "-o", "json", "--no-pager"], 30
        ).stdout
        try:
            return int(json.loads(out.splitlines()[-1])["__MONOTONIC_TIMESTAMP"]) * 1000
        except (ValueError, IndexError, KeyError):
            return 0

    # -- one measured scenario ---------------------------------------------------------------
    def measure(
        self,
        scenario: str,
        what: str,
        load: str,
        action: Callable[[], object],
        *,
        reloads_from: str = "crashhp",
        settle_s: float = SETTLE_QUIET_S,
    ) -> Outcome:
        """Run `action` and measure until the guest settled. The state is already prepared."""
        ch = self.crash_hotplug()
        log_before = len(self.reload_log())
        t0 = self.vm.agent.ping()
        action()
        self.settle(quiet_s=settle_s)
        t1 = self.vm.agent.ping()
        kernel_updates = ch == ("1", "1") and load != "none"
        metrics = analyse(self.vm.events(), t0, t1, kernel_updates=kernel_updates)
        new_log = self.reload_log()[log_before:]
        if reloads_from == "crashhp":
            journal = self.journal(t0, t1, "-u", "crashhp.service")
            reloads = sum(1 for line in new_log if line.startswith("start"))
        else:
            journal = self.journal(t0, t1, "-t", "kdump-config")
            reloads = sum(
                1
                for e in journal
                if e.get("MESSAGE") in ("unloaded kdump kernel", "failed to unload kdump kernel")
            )
        events = collections.Counter(str(e.get("CRASHHP_EVENT")) for e in journal)
        events.pop("None", None)
        row = Row(scenario, what, LOAD_LABEL[load], "/".join(ch), reloads, metrics)
        return Outcome(row, events, journal, reload_log=new_log)


# Helpers for tests that read crashhp's journal in the guest.


def crashhp_journal(g: Guest, t0: int) -> list[dict[str, Any]]:
    """crashhp.service's journal entries since guest time ``t0``, as JSON objects."""
    return g.journal(t0, g.vm.agent.ping(), "-u", "crashhp.service")


def named_events(entries: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("CRASHHP_EVENT") == event]


def event_counts(entries: list[dict[str, Any]]) -> collections.Counter[str]:
    return collections.Counter(str(e["CRASHHP_EVENT"]) for e in entries if "CRASHHP_EVENT" in e)


def cpu_cycle(g: Guest, cpu: int = 1) -> None:
    """Offline, then online, guest CPU ``cpu``."""
    path = f"/sys/devices/system/cpu/cpu{cpu}/online"
    g.vm.set_online(path, False)
    g.vm.set_online(path, True)
