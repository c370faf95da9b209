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
QUIET_MS = 1500
# The recorder sees the kernel's uevents, crashhp sees udevd's, later and unevenly: a pause
# between two uevents this close to quiet_ms may end a burst for crashhp.
PAUSE_SLACK_MS = 500
CONFIG = f"""# crashhp system test
[coalesce]
quiet_ms = {QUIET_MS}
max_delay_ms = 10000

[reload]
method = "command"
command = ["{RELOAD_SCRIPT_PATH}"]
timeout_s = 60
retries = 2
backoff_initial_s = 1.0
"""
PEER_RULES = "/usr/lib/udev/rules.d/50-kdump-tools.rules"
UDEVD_DROPIN = "/etc/systemd/system/systemd-udevd.service.d/50-system-test-no-filter.conf"
PEER_RULES_PARKED = "/opt/crashhp-test/peer/50-kdump-tools.rules"
KDUMP_DEFAULTS = "/etc/default/kdump-tools"
UDEVD_DROPIN = "/etc/systemd/system/systemd-udevd.service.d/50-system-test-no-filter.conf"
SETTLE_QUIET_S = 3.0
STATE_JSON = "/run/crashhp/state.json"
RELOAD_EVENTS = ("reload_started", "reload_done", "reload_failed")

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
    peer_failed: int = 0  # kdump-config's failed unloads (the peer's scenarios)

    @property
    def metrics(self) -> Metrics:
        return self.row.metrics

    def pauses(self, quiet_ms: int = QUIET_MS) -> list[float]:
        """The harness's pauses between two uevents long enough to end a burst for crashhp."""
        return [g for g in self.metrics.uevent_gaps_ms if g >= quiet_ms - PAUSE_SLACK_MS]

    def assert_one_reload_per_burst(self, count: int, quiet_ms: int = QUIET_MS) -> None:
        """`count` reloads (or bursts) is one per burst: exactly one, unless the harness's own
        steps paused mid-burst for about crashhp's quiet time (a slow TCG host), which makes
        two bursts of one on hardware. The pause and the split go in the row's notes."""
        pauses = self.pauses(quiet_ms)
        bursts = 1 + len(pauses)
        gaps = self.metrics.uevent_gaps_ms
        assert 1 <= count <= bursts, (
            f"{count} reloads for {bursts} burst(s) of uevents (pauses of "
            f"{quiet_ms - PAUSE_SLACK_MS} ms or more: {[round(p) for p in pauses]}, the "
            f"longest {max(gaps, default=0):.0f} ms); crashhp's events {dict(self.events)}"
        )
        if count > 1:
            note = (
                f"the harness paused {max(pauses):.0f} ms between two uevents (quiet_ms "
                f"{quiet_ms}): {bursts} bursts"
            )
            if note not in self.row.notes:
                self.row.notes.append(note)


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
        # "offline" on 6.1 even with memhp_default_state= on the command line: hot-added
        # memory stays offline until someone writes its state (as a distribution's rule would).
        self.auto_online = self.sh("cat /sys/devices/system/memory/auto_online_blocks").strip()
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
        """The cpu and memory crash_hotplug files; "-" where the kernel has none (before 6.6)."""
        out = self.sh(
            "for f in /sys/devices/system/cpu/crash_hotplug "
            "/sys/devices/system/memory/crash_hotplug; "
            'do if [ -e "$f" ]; then cat "$f"; else echo -; fi; done'
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

    # -- the peer: Debian's kdump-tools ------------------------------------------------------
    def seed_kdump_tools(self, kexec_args: str | None = None) -> None:
        """What kdump-config needs to load CRASH_INITRD here (VM-NOTES trap 5: without a
        matching sysctl stamp it deletes its initrd), and its kexec arguments: None leaves
        them as Debian ships them (plain `kexec -p`: a file load with kexec-tools 2.0.29)."""
        k = self.kver
        self.sh(
            "mkdir -p /var/lib/kdump /etc/kdump /var/crash && touch /etc/kdump/sysctl.conf && "
            f"cp {CRASH_INITRD} /var/lib/kdump/initrd.img-{k} && "
            f"cp /etc/kdump/sysctl.conf /var/lib/kdump/latest_sysctls-{k}"
        )
        if kexec_args is not None:
            self.sh(f"echo 'KDUMP_KEXEC_ARGS=\"{kexec_args}\"' >>{KDUMP_DEFAULTS}")

    def kdump_config_load(self) -> None:
        self.unload()
        self.vm.agent.run(["kdump-config", "load"], 180).check()
        if not self.crash_loaded():
            raise VmError("kdump-config load succeeded but kexec_crash_loaded is 0")

    def peer_rules_on(self, *, lifted: bool = False) -> None:
        """kdump-tools' udev rules active; `lifted`: udevd without its system call filter."""
        if lifted:
            self.vm.agent.write_file(UDEVD_DROPIN, "[Service]\nSystemCallFilter=\n")
            self.sh("systemctl daemon-reload && systemctl restart systemd-udevd", 120)
        self.sh(f"cp {PEER_RULES_PARKED} {PEER_RULES} && udevadm control --reload")

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

    def upgrade_then_start(self) -> None:
        """`crashhp upgrade` with crashhp stopped and its state forgotten, then start it: the
        loaded crash kernel must be hotplug-capable afterwards."""
        self.crashhp_stop()
        self.sh("rm -f /run/crashhp/state.json")
        up = self.vm.agent.run(["crashhp", "upgrade"], 300)
        if up.rc != 0 or self.crash_hotplug() != ("1", "1"):
            raise VmError(
                f"crashhp upgrade: exit {up.rc}, crash_hotplug {self.crash_hotplug()}"
                f"\n{up.stdout}\n{up.stderr}"
            )
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
        """The burst of scenario B: hot-add CPUs and a 1 GiB DIMM, online the CPUs.

        Every device_add goes first, back to back, and the onlining after: the guest agent's
        round trips (waiting for each CPU, writing its online file) can take seconds under
        TCG, and run between the CPU and DIMM plugs they would split what is one burst on
        hardware into two for crashhp's quiet time.
        """
        sockets = self.free_sockets()[:cpus]
        if len(sockets) < cpus:
            raise VmError(f"only {len(sockets)} free CPU sockets left in this VM")
        before = self.memory_blocks() if dimm else set()
        for s in sockets:
            self.vm.cpu_add(s)
        if dimm:
            self.vm.dimm_add(self.new_dimm())
        indices = [self.vm.wait_cpu(s) for s in sockets]
        for n in indices:
            self.vm.set_online(f"/sys/devices/system/cpu/cpu{n}/online", True)
        if dimm and self.auto_online == "offline":
            self.online_new_memory(before, blocks=8)
        return indices

    def memory_blocks(self) -> set[str]:
        return set(self.sh("ls /sys/devices/system/memory | grep '^memory[0-9]'").split())

    def online_new_memory(self, before: set[str], blocks: int, timeout: float = 60.0) -> None:
        """Online the blocks of a hot-added DIMM the kernel left offline, into ZONE_MOVABLE."""
        deadline = time.monotonic() + timeout
        while len(new := self.memory_blocks() - before) < blocks:
            if time.monotonic() > deadline:
                raise VmError(f"only {len(new)} of {blocks} new memory blocks in {timeout} s")
            time.sleep(0.1)
        for block in sorted(new, key=lambda b: int(b.removeprefix("memory"))):
            path = f"/sys/devices/system/memory/{block}/state"
            if self.vm.agent.read_text(path).strip() == "offline":
                self.vm.agent.write_file(path, "online_movable")

    def settle(self, quiet_s: float = SETTLE_QUIET_S, timeout: float = 180.0) -> None:
        """Wait until udev is idle, neither the recorder nor crashhp's journal saw anything for
        quiet_s (crashhp's retries are seconds apart), the test's reload command is not
        running, and crashhp itself says no reload of its own is under way or owed a retry:
        a silent method (kdump-config's unload-then-load) can be quiet for seconds mid-way."""
        deadline = time.monotonic() + timeout
        self.vm.agent.run(["udevadm", "settle", f"--timeout={int(timeout)}"], timeout + 5)
        while True:
            now = self.vm.agent.ping()
            records = self.vm.events()
            last = max(int(r["t"]) for r in records)
            last = max(last, self._last_journal_ns())
            starts = sum(1 for line in self.reload_log() if line.startswith("start"))
            dones = sum(1 for line in self.reload_log() if line.startswith("done"))
            busy = None
            if now - last >= quiet_s * 1e9 and starts == dones:
                busy = self.crashhp_reloading()
                if busy is None:
                    return
            if time.monotonic() > deadline:
                raise VmError(f"guest did not settle within {timeout} s ({busy or 'not quiet'})")
            time.sleep(0.5)

    def crashhp_reloading(self) -> str | None:
        """Why crashhp is not done with a reload, in its own words (state.json, and the last
        of its reload_started / reload_done / reload_failed in the journal); None if done or
        not running."""
        shown = self.vm.agent.run(
            ["systemctl", "show", "-p", "ActiveState", "-p", "MainPID", "crashhp.service"], 30
        ).stdout
        props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        pid = props.get("MainPID", "0")
        if props.get("ActiveState") not in ("active", "reloading") or pid == "0":
            return None
        try:
            state = json.loads(self.vm.agent.read_text(STATE_JSON))
        except (VmError, ValueError):
            state = None
        if isinstance(state, dict) and str(state.get("pid")) == pid and state.get("reloading"):
            return "crashhp's state.json says reloading"
        out = self.vm.agent.run(
            [
                "journalctl",
                "-u",
                "crashhp.service",
                f"_PID={pid}",
                *(f"CRASHHP_EVENT={e}" for e in RELOAD_EVENTS),
                "-n",
                "1",
                "-o",
                "json",
                "--no-pager",
            ],
            30,
        ).stdout
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            return None
        entry = json.loads(lines[-1])
        if entry.get("CRASHHP_EVENT") == "reload_started":
            return f"crashhp logged reload_started ({entry.get('METHOD')}) and no end yet"
        if entry.get("CRASHHP_EVENT") == "reload_failed" and entry.get("RETRY_IN_S"):
            return f"crashhp retries a failed reload in {entry['RETRY_IN_S']} s"
        return None

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

    # -- the peer: Debian's kdump-tools ----------------------------------------------------------
    def peer_burst(self, scenario: str, what: str, *, udevd_filter: bool) -> Outcome:
        """Debian's kdump-tools with its udev rules, crashhp stopped, through one burst.

        Its rules run `kdump-config try-reload` per cpu/memory event; `udevd_filter` False
        lifts udevd's system call filter (a drop-in), which refuses kexec to the rules'
        programs on trixie. The row's reloads are the unloads kdump-config logged, a note
        says how many failed.
        """
        self.crashhp_stop()
        self.unload()
        k = self.kver
        self.sh(
            "mkdir -p /var/lib/kdump /etc/kdump && touch /etc/kdump/sysctl.conf && "
            f"cp {CRASH_INITRD} /var/lib/kdump/initrd.img-{k} && "
            # VM-NOTES trap 5: without a matching sysctl stamp kdump-config deletes its initrd.
            f"cp /etc/kdump/sysctl.conf /var/lib/kdump/latest_sysctls-{k}"
        )
        loaded = self.vm.agent.run(["kdump-config", "load"], 120)
        if loaded.rc != 0 or not self.crash_loaded():
            raise VmError(f"kdump-config load: {loaded}")
        if not udevd_filter:
            self.vm.agent.write_file(UDEVD_DROPIN, "[Service]\nSystemCallFilter=\n")
            self.sh("systemctl daemon-reload && systemctl restart systemd-udevd")
        self.sh(f"cp {PEER_RULES_PARKED} {PEER_RULES} && udevadm control --reload")
        try:
            out = self.measure(
                scenario, what, "peer", self.add_cpus_and_dimm, reloads_from="kdump-config"
            )
        finally:
            self.sh(f"rm -f {PEER_RULES} {UDEVD_DROPIN} && udevadm control --reload")
            if not udevd_filter:
                self.sh("systemctl daemon-reload && systemctl restart systemd-udevd")
        failed = sum(1 for e in out.journal if e.get("MESSAGE") == "failed to unload kdump kernel")
        where = "stock udevd" if udevd_filter else "udevd with SystemCallFilter= lifted"
        out.row.notes.append(
            f"kdump-config try-reload per event ({where}): {out.row.reloads} reloads, "
            f"{failed} failed"
        )
        out.peer_failed = failed
        return out


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
