"""Part 2: the real kernel and the real peer, in the QEMU guest of the system tests.

Every case starts from a crash kernel loaded with ``kexec -c -p`` (kexec_load without
``--hotplug``: ``crash_hotplug`` reads 0, every change needs a reload), then hot-adds the same
burst through QMP: 4 CPUs (``add``, then ``online`` by writing their ``online`` file) and a
1 GiB DIMM (8 memory blocks, ``add`` and auto-``online``). The guest's recorder polls
``/sys/kernel/kexec_crash_loaded`` every millisecond and logs the kernel's uevents, all on the
guest's CLOCK_MONOTONIC; :func:`tests.system.measure.analyse` turns that into the figures.

- (a) crashhp as packaged, the real systemd unit from the working tree: ``reload.method =
  "auto"``, which on Debian is ``kdump-config reload`` (unload, then load): the reload tool
  the peer uses, run once per burst instead of once per event;
- (a') crashhp with ``reload.method = "kexec"``, ``kexec.syscall = "classic"``, ``hotplug =
  false``: a kexec_load straight over the loaded image, the same kind of load again;
- (a'') (a') under a unit drop-in that lets kexec_load work (run only when (a') failed):
  kexec-tools' kexec_load crash path on x86_64 opens /proc/kcore (the kernel wants
  CAP_SYS_RAWIO) and, under KASLR, reads ``_stext`` from /proc/kallsyms (zeros without
  CAP_SYSLOG, which the unit's ``ProtectKernelLogs=yes`` also removes);
- (b) Debian's kdump-tools with its own udev rules (``PROGRAM=kdump-config try-reload`` per
  cpu add/online and memory online event) under trixie's stock systemd-udevd;
- (b') the same with udevd's system call filter lifted by a drop-in (``SystemCallFilter=``):
  what the rules do where udevd lets them run kexec;
- (c) crashhp after ``crashhp upgrade`` made the load hotplug-capable (``kexec -c -p
  --hotplug``): the kernel keeps the header current and nothing is reloaded.

QEMU runs only while no other ``qemu-system`` process does (this machine has 2 CPUs); the
guest assets come from the system tests' cache, built by :func:`tests.system.assets.ensure`
only when the cache has none.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.report import Problems, Table, num, ratio
from tests.system import assets as assets_mod
from tests.system import dump
from tests.system.measure import Metrics, analyse
from tests.system.scenarios import CONFIG_PATH, CRASH_APPEND, CRASH_INITRD, Guest
from tests.system.vm import Vm, VmError, hardware_key

Say = Callable[[str], None]
BURST_CPUS = 4
BURST = f"+{BURST_CPUS} CPUs (add, online), +1 GiB DIMM"
QEMU_WAIT_S = 1800.0
PEER_RULES = "/usr/lib/udev/rules.d/50-kdump-tools.rules"
PEER_RULES_PARKED = "/opt/crashhp-test/peer/50-kdump-tools.rules"
KEXEC_DROPIN = "/etc/systemd/system/crashhp.service.d/50-crashhp-bench-kexec-load.conf"
KEXEC_DROPIN_TEXT = (
    "[Service]\nCapabilityBoundingSet=CAP_SYS_RAWIO CAP_SYSLOG\nProtectKernelLogs=no\n"
)
UDEVD_DROPIN = "/etc/systemd/system/systemd-udevd.service.d/50-crashhp-bench.conf"
CONFIG_HEAD = f"""# crashhp benchmark (part 2)
[reload]
timeout_s = 120
retries = 2
backoff_initial_s = 1.0

[kexec]
syscall = "classic"
hotplug = false
initrd = "{CRASH_INITRD}"
append = "{CRASH_APPEND}"
"""


@dataclass
class Case:
    key: str
    label: str
    reloads: str = "-"
    metrics: Metrics | None = None
    notes: list[str] = field(default_factory=list)
    stale_at_end: bool = False
    failed: bool = False  # a reload crashhp owed did not happen
    vmcore: dump.DumpReport | None = None  # the vmcore a crash after the burst gave


def other_qemu() -> list[str]:
    """Command lines of running qemu-system processes (pgrep matches the 15-byte comm)."""
    proc = subprocess.run(
        ["pgrep", "-a", "^qemu-system"], capture_output=True, text=True, timeout=30, check=False
    )
    return [line for line in proc.stdout.splitlines() if line.strip()]


def wait_for_free_machine(say: Say, timeout_s: float = QEMU_WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    announced = False
    while running := other_qemu():
        if time.monotonic() > deadline:
            raise VmError(f"another QEMU kept running for {timeout_s:.0f} s: {running[0][:120]}")
        if not announced:
            say(f"waiting: another QEMU runs on this 2-CPU machine (pid {running[0].split()[0]})")
            announced = True
        time.sleep(10)


def cached_assets(say: Say) -> assets_mod.Assets:
    """The system tests' cached guest, without touching the network when it is complete."""
    root = assets_mod.cache_root()
    kernels = sorted(root.glob("kernel-*/vmlinuz-*"), key=lambda p: p.stat().st_mtime)
    rootfs = sorted(root.glob("rootfs-*/rootfs.cpio"), key=lambda p: p.stat().st_mtime)
    acpi = root / f"acpi-{assets_mod._key(hardware_key(), 2)}" / "acpi.cpio"
    if kernels and rootfs and acpi.exists():
        vmlinuz = kernels[-1]
        manifest_path = rootfs[-1].parent / "manifest.json"
        manifest: dict[str, object] = (
            json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        )
        kver = vmlinuz.name.removeprefix("vmlinuz-")
        return assets_mod.Assets(kver, vmlinuz, rootfs[-1], acpi, manifest)
    say("no complete guest in the cache: building it (tests.system.assets; apt, debootstrap)")
    return assets_mod.ensure()


def write_config(g: Guest, method: str) -> None:
    text = CONFIG_HEAD.replace("[reload]\n", f'[reload]\nmethod = "{method}"\n', 1)
    g.vm.agent.write_file(CONFIG_PATH, text)


def prepare_kdump_tools(g: Guest) -> None:
    """What kdump-tools needs to reload here: its initrd and sysctl stamp (VM-NOTES trap 5)."""
    k = g.kver
    g.sh(
        "mkdir -p /var/lib/kdump /etc/kdump && touch /etc/kdump/sysctl.conf && "
        f"cp {CRASH_INITRD} /var/lib/kdump/initrd.img-{k} && "
        f"cp /etc/kdump/sysctl.conf /var/lib/kdump/latest_sysctls-{k}"
    )


@dataclass
class Measured:
    metrics: Metrics
    crashhp: list[dict[str, Any]]  # crashhp's journal entries in the window
    peer: list[dict[str, Any]]  # kdump-config's own lines (logger -t kdump-config)
    udevd: list[dict[str, Any]]  # systemd-udevd's, where a PROGRAM's failure shows

    def events(self) -> collections.Counter[str]:
        return collections.Counter(
            str(e["CRASHHP_EVENT"]) for e in self.crashhp if "CRASHHP_EVENT" in e
        )

    def peer_count(self, message: str) -> int:
        return sum(1 for e in self.peer if e.get("MESSAGE") == message)


def crashhp_busy(entries: list[dict[str, Any]]) -> bool:
    """A reload runs or a retry is scheduled, going by crashhp's journal; or nothing decided."""
    if not any(e.get("CRASHHP_EVENT") == "burst" for e in entries):
        return True  # every decision ends in a burst summary line: none yet
    steps = [
        e
        for e in entries
        if e.get("CRASHHP_EVENT") in ("reload_started", "reload_done", "reload_failed")
    ]
    if not steps:
        return False
    last = steps[-1]
    return last["CRASHHP_EVENT"] == "reload_started" or (
        last["CRASHHP_EVENT"] == "reload_failed" and "RETRY_IN_S" in last
    )


def measure(g: Guest, *, crashhp: bool, kernel_updates: bool, timeout_s: float = 300) -> Measured:
    """Run the burst; wait until udev, the recorder and crashhp are all done; analyse."""
    t0 = g.vm.agent.ping()
    g.add_cpus_and_dimm(cpus=BURST_CPUS, dimm=True)
    deadline = time.monotonic() + timeout_s
    entries: list[dict[str, Any]] = []
    while True:
        g.settle()
        if not crashhp:
            break
        entries = g.journal(t0, g.vm.agent.ping(), "-u", "crashhp.service")
        if not crashhp_busy(entries):
            break
        if time.monotonic() > deadline:
            raise VmError(f"crashhp still busy {timeout_s:.0f} s after the burst")
        time.sleep(1.0)
    t1 = g.vm.agent.ping()
    if crashhp:
        entries = g.journal(t0, t1, "-u", "crashhp.service")
    peer = g.journal(t0, t1, "-t", "kdump-config")
    udevd = g.journal(t0, t1, "-u", "systemd-udevd.service")
    metrics = analyse(g.vm.events(), t0, t1, kernel_updates=kernel_updates)
    return Measured(metrics, entries, peer, udevd)


def _failure_notes(m: Measured) -> list[str]:
    notes = []
    for e in m.crashhp:
        if e.get("CRASHHP_EVENT") == "reload_failed":
            output = " ".join(str(e.get("OUTPUT", "")).split())[-200:]
            notes.append(f"reload_failed: {e.get('REASON')}" + (f": {output}" if output else ""))
    return notes[:3]


def crashhp_case(g: Guest, key: str, label: str, method: str, problems: Problems) -> Case:
    case = Case(key, label)
    write_config(g, method)
    g.fresh_crashhp("classic")
    if g.crash_hotplug() != ("0", "0"):
        problems.add(f"({key}): crash_hotplug reads {g.crash_hotplug()} after kexec -c -p")
    m = measure(g, crashhp=True, kernel_updates=False)
    events = m.events()
    started, done, failed = (events[k] for k in ("reload_started", "reload_done", "reload_failed"))
    case.metrics = m.metrics
    case.reloads = str(started) if not failed else f"{started} ({failed} failed)"
    case.notes.append(
        f"crashhp logged {dict(sorted(events.items()))}; crash_hotplug after: "
        + "/".join(g.crash_hotplug())
    )
    case.notes += _failure_notes(m)
    case.failed = started == 0 or done == 0 or not m.metrics.loaded_at_end
    if started == 0 or done == 0:
        problems.add(f"({key}) crashhp: no reload done for the burst ({dict(events)})")
    if failed:
        problems.add(f"({key}) crashhp: {failed} reload(s) failed: {_failure_notes(m)[:1]}")
    if not m.metrics.loaded_at_end:
        problems.add(f"({key}) crashhp: no crash kernel loaded after the burst")
    _check_active(g, key, problems)
    return case


def kexec_caps_case(g: Guest, problems: Problems) -> Case:
    """(a') again under a drop-in giving the unit what kexec_load's crash path needs."""
    g.vm.agent.write_file(KEXEC_DROPIN, KEXEC_DROPIN_TEXT)
    g.sh("systemctl daemon-reload")
    try:
        case = crashhp_case(
            g, "a''", "(a') + unit drop-in: CAP_SYS_RAWIO CAP_SYSLOG", "kexec", problems
        )
    finally:
        g.sh(f"rm -f {KEXEC_DROPIN} && systemctl daemon-reload")
    case.notes.append(f"drop-in {KEXEC_DROPIN}: " + "; ".join(KEXEC_DROPIN_TEXT.splitlines()[1:]))
    return case


def upgrade_case(g: Guest, problems: Problems) -> Case:
    case = Case("c", "crashhp after `crashhp upgrade` (kexec -c -p --hotplug)")
    write_config(g, "kexec")
    g.crashhp_stop()
    g.sh("rm -f /run/crashhp/state.json")
    g.load("classic")
    up = g.vm.agent.run(["crashhp", "upgrade"], 180)
    if up.rc != 0 or g.crash_hotplug() != ("1", "1"):
        problems.add(
            f"(c) crashhp upgrade exited {up.rc}, crash_hotplug {g.crash_hotplug()}: "
            f"{(up.stdout + up.stderr).strip()[-300:]}"
        )
        return case
    case.notes.append(f"crashhp upgrade: {up.stdout.strip().splitlines()[-1:]}")
    g.crashhp_start()
    g.settle(quiet_s=1.0)
    m = measure(g, crashhp=True, kernel_updates=True)
    events = m.events()
    case.metrics = m.metrics
    case.reloads = str(events["reload_started"])
    case.notes.append(f"crashhp logged {dict(sorted(events.items()))}")
    if not m.metrics.loaded_at_end:
        problems.add("(c) no crash kernel loaded after the burst")
    _check_active(g, "c", problems)
    return case


def peer_case(g: Guest, lifted: bool) -> Case:
    key = "b'" if lifted else "b"
    label = (
        "kdump-tools udev rules, udevd's syscall filter lifted"
        if lifted
        else "kdump-tools udev rules, stock udevd"
    )
    case = Case(key, label)
    g.crashhp_stop()
    prepare_kdump_tools(g)
    g.load("classic")
    if lifted:
        g.vm.agent.write_file(UDEVD_DROPIN, "[Service]\nSystemCallFilter=\n")
        g.sh("systemctl daemon-reload && systemctl restart systemd-udevd", 120)
    g.sh(f"cp {PEER_RULES_PARKED} {PEER_RULES} && udevadm control --reload")
    try:
        m = measure(g, crashhp=False, kernel_updates=False)
    finally:
        g.sh(f"rm -f {PEER_RULES} && udevadm control --reload")
        if lifted:
            g.sh(f"rm -f {UDEVD_DROPIN} && systemctl daemon-reload", 120)
            g.sh("systemctl restart systemd-udevd", 120)
    attempts = m.peer_count("unloaded kdump kernel") + m.peer_count("failed to unload kdump kernel")
    loads = m.peer_count("loaded kdump kernel")
    failed = attempts - loads
    case.metrics = m.metrics
    case.reloads = f"{attempts}" + (f" ({failed} failed)" if failed else "")
    case.notes.append(
        f"{attempts} try-reloads, {loads} loads; crash_hotplug after: "
        + "/".join(g.crash_hotplug())
    )
    case.stale_at_end = loads == 0 and bool(m.metrics.loaded_at_end)
    if failed:
        errors = {
            " ".join(str(e.get("MESSAGE")).split())
            for e in m.udevd + m.peer
            if "not permitted" in str(e.get("MESSAGE", "")).lower()
        }
        case.notes.append(
            f"{failed} of {attempts} try-reloads failed"
            + (f": {sorted(errors)[0][:120]}" if errors else "")
        )
    return case


def _check_active(g: Guest, key: str, problems: Problems) -> None:
    state = g.vm.agent.run(["systemctl", "is-active", "crashhp.service"], 30).stdout.strip()
    if state != "active":
        problems.add(f"({key}) crashhp.service is {state!r} after the burst")


def _vm(a: assets_mod.Assets, name: str, say: Say) -> Vm:
    wait_for_free_machine(say)
    say(f"booting guest {name!r} (TCG; 15-60 s)")
    return Vm(a, name=f"bench-{name}", no_reboot=True)


# Each case is its own boot: it ends with a crash, and the dump its crash kernel sees is checked.
GUESTS: dict[str, tuple[str, ...]] = {
    "crashhp": ("a'", "c"),
    "peer": ("b", "b'"),
    "auto": ("a", "a''"),
}


def _case(key: str, g: Guest, cases: dict[str, Case], problems: Problems) -> Case | None:
    if key == "a'":
        return crashhp_case(
            g, "a'", "crashhp, reload.method = kexec (classic, no --hotplug)", "kexec", problems
        )
    if key == "c":
        return upgrade_case(g, problems)
    if key in ("b", "b'"):
        return peer_case(g, lifted=key == "b'")
    if key == "a":
        prepare_kdump_tools(g)
        return crashhp_case(
            g, "a", "crashhp as packaged: reload.method = auto (kdump-config)", "auto", problems
        )
    if key == "a''" and "a'" in cases and cases["a'"].failed:
        return kexec_caps_case(g, problems)
    return None


def run(problems: Problems, say: Say, guests: tuple[str, ...] = tuple(GUESTS)) -> Table:
    cases: dict[str, Case] = {}
    kver = "?"
    try:
        a = cached_assets(say)
        kver = a.kver
        for name in guests:
            if name not in GUESTS:
                problems.add(f"part 2: no guest {name!r} (choose from {', '.join(GUESTS)})")
                continue
            for key in GUESTS[name]:
                if key == "a''" and not ("a'" in cases and cases["a'"].failed):
                    continue
                broken_before = len(problems.items)
                with _vm(a, f"{name}-{key}", say) as vm:
                    say(f"guest {name!r} up in {vm.boot_s:.0f} s")
                    g = Guest(vm, say)
                    dump.install_dumpcheck_initrd(vm)
                    case = _case(key, g, cases, problems)
                    if case is None:
                        continue
                    say(f"({case.key}) {case.label}: reloads {case.reloads}; crashing it")
                    case.vmcore = dump.crash_and_check(vm)
                    say(f"({case.key}) the dump: {case.vmcore.describe()}")
                    cases[case.key] = case
                if len(problems.items) == broken_before:
                    shutil.rmtree(vm.dir, ignore_errors=True)  # keep the serial log of a failure
                else:
                    problems.add(f"guest {name!r}: serial log and QEMU output kept in {vm.dir}")
    except (VmError, OSError, subprocess.SubprocessError, RuntimeError) as exc:
        problems.add(f"part 2 (VM): {type(exc).__name__}: {exc}"[:2000])
    return table(cases, kver)


def _dump(case: Case) -> str:
    if case.vmcore is None:
        return "-"
    if case.vmcore.complete:
        return "yes"
    return f"NO: {case.vmcore.missing_text()}"


def _restore(case: Case) -> str:
    m = case.metrics
    if m is None:
        return "-"
    if m.restore_ms is None:
        return "never (stale)" if m.loaded_at_end else "never (unloaded)"
    return num(m.restore_ms)


def table(cases: dict[str, Case], kver: str) -> Table:
    t = Table(
        f"2. Real kernel, real peer: Debian trixie {kver} in QEMU (TCG); burst {BURST}; "
        "crash kernel loaded with kexec -c -p (kexec_load, no --hotplug) before each",
        [
            "",
            "design",
            "uevents",
            "reloads",
            "ms unloaded",
            "last uevent -> valid, ms",
            "loaded at end",
            "dump complete",
        ],
    )
    order = ["a", "a'", "a''", "b", "b'", "c"]
    for key in order:
        case = cases.get(key)
        if case is None:
            continue
        m = case.metrics
        end = "-"
        if m is not None:
            end = {True: "yes", False: "NO", None: "?"}[m.loaded_at_end]
            if case.stale_at_end:
                end = "yes, stale"
        t.add(
            f"({key})",
            case.label,
            str(m.uevents) if m else "-",
            case.reloads,
            num(m.unloaded_ms) if m else "-",
            _restore(case),
            end,
            _dump(case),
        )
    t.notes += _ratios(cases)
    for key in order:
        if key in cases:
            t.notes += [f"({key}) {n}" for n in cases[key].notes]
    t.notes.append(
        "dump complete: a crash after the burst, the vmcore's PT_LOADs and CPU notes against "
        "the guest's System RAM and online CPUs just before it (tests/system/dump.py)"
    )
    t.notes.append(
        "ms unloaded: total time kexec_crash_loaded read 0 (1 ms poller, SCHED_FIFO); last "
        "uevent -> valid: until the last 0 -> 1 after the last uevent (0 when the kernel keeps "
        "the header current; never: the loaded crash kernel still describes the old machine)"
    )
    return t


def _ratios(cases: dict[str, Case]) -> list[str]:
    out = []
    peer = cases.get("b'")
    for key in ("a", "a'", "a''"):
        mine = cases.get(key)
        if not (peer and mine and peer.metrics and mine.metrics):
            continue
        pm, mm = peer.metrics, mine.metrics
        out.append(
            f"(b') vs ({key}): time unloaded {ratio(pm.unloaded_ms, mm.unloaded_ms)}, "
            f"last uevent -> valid {ratio(pm.restore_ms, mm.restore_ms)}"
        )
    return out
