"""Issue 10 part A on the real 6.12 kernel: each scenario ends with a crash, and the vmcore its
crash kernel sees must be complete (every System RAM range above 1 MiB outside the crash
reservation covered by a PT_LOAD, one NT_PRSTATUS note per online CPU; tests/system/dump.py).

Each scenario is its own boot (the crash ends the guest): boot, load a crash kernel whose initrd
is the dump check, run the burst (+2 CPUs online, +1 GiB DIMM), settle until crashhp says its
reload ended, crash, read the vmcore's head from the serial console. The table at the end has
scenario | load | reloads | ms without a crash kernel | dump complete | missing MiB | notes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.system import dump, flavours
from tests.system.assets import ensure_tools
from tests.system.conftest import GuestPool
from tests.system.scenarios import (
    CONFIG_PATH,
    CRASH_APPEND,
    CRASH_INITRD,
    QUIET_MS,
    RELOAD_LOG,
    Guest,
    Outcome,
)
from tests.system.vm import Vm, VmError

pytestmark = pytest.mark.system

BURST = "+2 CPUs, online, +1 GiB"
# The race: crashhp's reload is a `kexec -c -p --hotplug` held in its kexec_load syscall (strace
# delays the syscall after kexec-tools read the topology) while a DIMM comes online.
RACE_HOLD_US = 8_000_000
RACE_HELD = "/run/crashhp-test/race.held"
RACE_SCRIPT_PATH = "/usr/local/sbin/crashhp-test-race-reload"
RACE_SCRIPT = f"""#!/bin/sh
# crashhp system test: a reload whose kexec_load syscall waits {RACE_HOLD_US // 1000} ms.
log={RELOAD_LOG}
echo "start $$ $(cut -d' ' -f1 /proc/uptime)" >>"$log"
rm -f {RACE_HELD} /run/crashhp-test/race.pid
/usr/bin/strace -f -o /run/crashhp-test/race.strace -e trace=kexec_load \\
    -e inject=kexec_load:delay_enter={RACE_HOLD_US} \\
    /bin/sh -c 'echo $$ >/run/crashhp-test/race.pid; exec /usr/sbin/kexec -c -p --hotplug \\
        --initrd={CRASH_INITRD} --append="{CRASH_APPEND}" "/boot/vmlinuz-$(uname -r)"' &
tracer=$!
# Tell the host once kexec sits in kexec_load (x86_64 syscall 246): the topology is read.
while kill -0 "$tracer" 2>/dev/null; do
    pid=$(cat /run/crashhp-test/race.pid 2>/dev/null || true)
    if [ -n "$pid" ] && grep -q '^246 ' "/proc/$pid/syscall" 2>/dev/null; then
        : >{RACE_HELD}
        break
    fi
    sleep 0.01
done
wait "$tracer"
rc=$?
echo "done $$ $rc" >>"$log"
exit $rc
"""

_TABLE: list[tuple[str, str, str, str, dump.DumpReport]] = []
_TIMES: list[str] = []


@dataclass
class CrashGuest:
    guest: Guest
    booted_at: float


@pytest.fixture
def crash_guest(pool: GuestPool) -> Iterator[CrashGuest]:
    """A guest of its own (the crash ends it), its crash initrd the dump check."""
    pool.close()  # one guest at a time: qemu.lock
    # assets_for: found again should another checkout's run have pruned a shared build.
    with Vm(pool.assets_for(flavours.DEFAULT), name="dump", no_reboot=True) as vm:
        # Counted from QEMU's start, not from the wait for another user's guest.
        started = time.monotonic() - vm.boot_s
        dump.install_dumpcheck_initrd(vm)
        yield CrashGuest(Guest(vm), started)


@pytest.fixture(scope="module", autouse=True)
def _print_table(summary: list[str]) -> Iterator[None]:
    yield
    if _TABLE:
        summary.append("issue 10: the dump after each scenario (crash after the burst)")
        summary += dump.table(_TABLE).splitlines()
        summary += _TIMES


def _crash(c: CrashGuest, name: str, out: Outcome, note: str = "") -> dump.DumpReport:
    """Crash after the scenario's outcome was measured; record the row and the time spent."""
    g = c.guest
    report = dump.crash_and_check(g.vm)
    _TABLE.append(
        (
            name,
            out.row.load,
            str(out.row.reloads),
            f"{out.metrics.unloaded_ms:.0f}",
            report,
        )
    )
    spent = time.monotonic() - c.booted_at
    _TIMES.append(
        f"  {name}: {spent:.0f} s in all (boot {g.vm.boot_s:.0f} s, crash to power-off "
        f"{report.extra.get('crash_to_off_s', '?')} s); dump {report.describe()}"
        + (f"; {note}" if note else "")
    )
    print(_TIMES[-1])
    return report


def _crashhp(g: Guest, mode: str) -> None:
    g.fresh_crashhp(mode)


# ---- crashhp -----------------------------------------------------------------------------------


def test_dump_a_file_load_needs_no_reload(crash_guest: CrashGuest) -> None:
    g = crash_guest.guest
    _crashhp(g, "file")
    out = g.measure("A", BURST, "file", g.add_cpus_and_dimm)
    assert out.row.reloads == 0, out.reload_log
    report = _crash(crash_guest, "A (crashhp)", out)
    assert report.complete, report.describe()
    assert report.online_cpus == 4


def test_dump_b_kexec_load_and_crashhp_reload(crash_guest: CrashGuest) -> None:
    g = crash_guest.guest
    _crashhp(g, "classic")
    out = g.measure("B", BURST, "classic", g.add_cpus_and_dimm)
    out.assert_one_reload_per_burst(out.row.reloads)
    report = _crash(crash_guest, "B (crashhp)", out)
    assert report.complete, report.describe()
    assert report.online_cpus == 4


def test_dump_kexec_load_without_crashhp_is_incomplete(crash_guest: CrashGuest) -> None:
    """The check can fail: a kexec_load image nobody reloads misses the DIMM and both CPUs."""
    g = crash_guest.guest
    g.crashhp_stop()
    g.load("classic")
    out = g.measure("B0", BURST, "classic", g.add_cpus_and_dimm)
    report = _crash(crash_guest, "B0 (no crashhp)", out)
    assert not report.complete, report.describe()
    assert report.error is None, report.describe()
    assert round(report.missing_mib) == 1024, report.describe()
    assert (report.notes, report.online_cpus) == (2, 4), report.describe()


def test_dump_after_crashhp_upgrade(crash_guest: CrashGuest) -> None:
    """`crashhp upgrade` makes the classic load hotplug-capable; the burst needs no reload."""
    g = crash_guest.guest
    g.vm.agent.write_file(
        "/etc/crashhp/crashhp.d/40-dump-test.toml", f'[kexec]\ninitrd = "{CRASH_INITRD}"\n'
    )
    g.crashhp_stop()
    g.load("classic")
    g.upgrade_then_start()
    out = g.measure("U", BURST, "upgraded", g.add_cpus_and_dimm)
    report = _crash(crash_guest, "U (crashhp upgrade)", out)
    assert report.complete, report.describe()


def test_dump_crashhp_reload_method_kdump_config(crash_guest: CrashGuest) -> None:
    """crashhp's default method on Debian: `kdump-config reload` once per burst, over a
    kexec_load image kdump-tools loaded (KDUMP_KEXEC_ARGS="-c")."""
    g = crash_guest.guest
    g.seed_kdump_tools("-c")
    g.vm.agent.write_file(
        CONFIG_PATH,
        f"[coalesce]\nquiet_ms = {QUIET_MS}\nmax_delay_ms = 10000\n\n"
        '[reload]\nmethod = "kdump-config"\ntimeout_s = 120\nretries = 2\n',
    )
    g.crashhp_stop()
    g.sh("rm -f /run/crashhp/state.json")
    g.kdump_config_load()
    assert g.crash_hotplug() == ("0", "0")
    g.crashhp_start()
    g.settle(quiet_s=1.0)
    out = g.measure("K", BURST, "peer", g.add_cpus_and_dimm)
    out.row.reloads = out.events["reload_started"]
    out.assert_one_reload_per_burst(out.events["reload_done"])
    report = _crash(crash_guest, "K (crashhp, kdump-config)", out)
    assert report.complete, report.describe()


# ---- the race ----------------------------------------------------------------------------------


def test_dump_race_dimm_during_a_held_reload(crash_guest: CrashGuest) -> None:
    """crashhp's reload (`kexec -c -p --hotplug`) sits in kexec_load after kexec-tools read
    the topology while a 1 GiB DIMM comes online. The image it installs says nothing of the
    DIMM and crash_hotplug reads 1/1 afterwards: the dump is complete only if crashhp reloads
    once more for the events that raced its load."""
    g = crash_guest.guest
    dump.install_tree(g.vm, ensure_tools())
    # strace in the reload command needs ptrace: no drop-in on crashhp's system call filter,
    # the reload runs as a transient unit of its own (reload.runner auto), outside it.
    g.vm.agent.write_file(RACE_SCRIPT_PATH, RACE_SCRIPT, 0o755)
    text = g.vm.agent.read_text(CONFIG_PATH).replace(
        'command = ["/usr/local/sbin/crashhp-test-reload"]', f'command = ["{RACE_SCRIPT_PATH}"]'
    )
    assert RACE_SCRIPT_PATH in text, text
    g.vm.agent.write_file(CONFIG_PATH, text)
    _crashhp(g, "classic")

    def race() -> None:
        g.add_cpus_and_dimm(cpus=1, dimm=False)  # makes crashhp reload (kexec_load image: 0/0)
        if not g.vm.agent.wait_path(RACE_HELD, 60):
            why = g.sh("journalctl -u crashhp.service -n 5 -o cat --no-pager; true")
            raise VmError(f"crashhp's reload never reached kexec_load: {g.reload_log()}\n{why}")
        g.vm.dimm_add(g.new_dimm())

    out = g.measure("R", "+1 CPU; +1 GiB during the held load", "hotplug", race)
    out.row.notes.append(f"kexec_load held {RACE_HOLD_US // 1000} ms by strace")
    held = g.vm.agent.read_text("/run/crashhp-test/race.strace")
    assert "kexec_load" in held, held
    hotplug = "/".join(g.crash_hotplug())
    report = _crash(
        crash_guest,
        "R (race)",
        out,
        f"crashhp reloads: {out.row.reloads}; crash_hotplug before the crash {hotplug}",
    )
    assert report.complete, report.describe()


# ---- the peer: Debian's kdump-tools with its udev rules, crashhp stopped -------------------------


def _peer(
    c: CrashGuest, name: str, kexec_args: str | None, lifted: bool
) -> tuple[Outcome, dump.DumpReport]:
    g = c.guest
    g.crashhp_stop()
    g.seed_kdump_tools(kexec_args)
    g.kdump_config_load()
    g.peer_rules_on(lifted=lifted)
    out = g.measure(name, BURST, "peer", g.add_cpus_and_dimm, reloads_from="kdump-config")
    failed = sum(1 for e in out.journal if e.get("MESSAGE") == "failed to unload kdump kernel")
    note = f"kdump-config try-reload per event: {out.row.reloads} runs, {failed} failed"
    return out, _crash(c, name, out, note)


@pytest.mark.system_full  # CI time: B0 and G-c show the incomplete dumps
def test_dump_peer_as_shipped_file_load(crash_guest: CrashGuest) -> None:
    """kdump-tools as Debian ships it: `kexec -p` is a file load with kexec-tools 2.0.29, so
    the kernel keeps the image current whatever its (failing) udev reloads do."""
    out, report = _peer(crash_guest, "G (peer, kexec -p)", None, lifted=False)
    assert out.row.crash_hotplug == "1/1", out.row
    assert report.complete, report.describe()


def test_dump_peer_kexec_load_stock_udevd(crash_guest: CrashGuest) -> None:
    """kdump-tools with a kexec_load image (KDUMP_KEXEC_ARGS="-c"): its reloads from udev fail
    in udevd's system call filter, the image keeps the old machine: the real outcome is an
    incomplete dump."""
    out, report = _peer(crash_guest, "G-c (peer, kexec -c -p)", "-c", lifted=False)
    assert out.row.crash_hotplug == "0/0", out.row
    assert not report.complete, report.describe()
    assert report.error is None, report.describe()


@pytest.mark.system_full  # CI time: B0 and G-c show the incomplete dumps
def test_dump_peer_kexec_load_filter_lifted(crash_guest: CrashGuest) -> None:
    """The same with udevd's filter lifted: one full reload per event, then a complete dump."""
    out, report = _peer(crash_guest, "G'-c (peer, filter lifted)", "-c", lifted=True)
    assert out.row.reloads >= 1, out.row
    assert report.complete, report.describe()
