"""`make demo`: crashhp on real CPU and memory hotplug in a QEMU guest, with a narrative.

Builds or reuses the cached guest (first run: a kernel download and a debootstrap, a few
minutes; later runs: seconds), boots it, runs scenario A (the kernel keeps the crash kernel
current: crashhp does nothing) and scenario B (it cannot: crashhp reloads once for the whole
burst), prints the measurements, then crashes the guest and checks the dump its crash kernel
sees. A second guest does the same burst with the peer as Debian ships it (kdump-tools' udev
rules, stock udevd) over the same kind of crash kernel (kexec_load), and crashes too: the two
dumps side by side are what crashhp is for.
"""

from __future__ import annotations

import sys
import time

from tests.system import assets, dump
from tests.system.measure import Row, table
from tests.system.scenarios import Guest, Outcome
from tests.system.vm import Vm, VmError

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


def _report(out: Outcome) -> None:
    m = out.metrics
    events = ", ".join(f"{k} x{v}" for k, v in sorted(out.events.items())) or "nothing"
    say(f"  the guest saw {m.uevents} cpu/memory uevents; crashhp logged: {events}")
    say(
        f"  reloads: {out.row.reloads}; time with no crash kernel loaded: {m.unloaded_ms:.0f} ms; "
        f"crash kernel loaded at the end: {'yes' if m.loaded_at_end else 'NO'}"
    )


def main() -> int:
    say("guest assets: building or reusing the cache")
    try:
        a = assets.ensure()
    except (RuntimeError, OSError) as exc:
        print(f"demo: cannot build the guest assets: {exc}", file=sys.stderr)
        return 1
    rows: list[Row] = []
    try:
        say("booting Debian trixie's 6.12 kernel in QEMU (TCG, 2 CPUs, 2 GiB, up to 12 CPUs)")
        with Vm(a, name="demo", no_reboot=True) as vm:
            say(f"guest up in {vm.boot_s:.1f} s; crashhp runs from this working tree")
            g = Guest(vm, say)
            dump.install_dumpcheck_initrd(vm)

            say("A: load the crash kernel with kexec_file_load (kexec -s -p)")
            g.fresh_crashhp("file")
            cpu, mem = g.crash_hotplug()
            say(f"  crash_hotplug: cpu={cpu} memory={mem}: the kernel rewrites the header itself")
            say("  hot-adding 2 CPUs and a 1 GiB DIMM through QMP, then onlining the CPUs ...")
            out = g.measure("A", "+2 CPUs, online, +1 GiB", "file", g.add_cpus_and_dimm)
            _report(out)
            rows.append(out.row)

            say("B: load the crash kernel with kexec_load without the hotplug flag (kexec -c -p)")
            g.fresh_crashhp("classic")
            cpu, mem = g.crash_hotplug()
            say(f"  crash_hotplug: cpu={cpu} memory={mem}: every change needs a reload")
            say("  the same burst: 2 CPUs + online + 1 GiB DIMM (about 20 uevents) ...")
            out = g.measure("B", "+2 CPUs, online, +1 GiB", "classic", g.add_cpus_and_dimm)
            _report(out)
            for line in out.reload_log:
                say(f"  reload command log: {line}")
            rows.append(out.row)
            status = vm.agent.run(["crashhp", "status"], 60)
            say(f"crashhp status (exit {status.rc}):")
            for line in status.stdout.splitlines():
                print(f"    {line}")
            with_crashhp = _crash(vm)
        peer_row, without = _peer(a)
        rows.append(peer_row)
    except VmError as exc:
        print(f"demo: the guest failed: {exc}", file=sys.stderr)
        return 1
    print()
    print(table(rows))
    print()
    print(
        dump.table(
            [
                (
                    "B (crashhp)",
                    rows[1].load,
                    str(rows[1].reloads),
                    f"{rows[1].metrics.unloaded_ms:.0f}",
                    with_crashhp,
                ),
                (
                    "peer as shipped",
                    peer_row.load,
                    str(peer_row.reloads),
                    f"{peer_row.metrics.unloaded_ms:.0f}",
                    without,
                ),
            ]
        )
    )
    say(
        f"without crashhp the dump {without.missing_text()}; "
        f"with crashhp it {with_crashhp.missing_text()}"
    )
    ok = (
        rows[0].reloads == 0
        and rows[1].reloads == 1
        and bool(rows[1].metrics.loaded_at_end)
        and with_crashhp.complete
        and not without.complete
    )
    say("done: " + ("as expected" if ok else "NOT as expected, see above"))
    return 0 if ok else 1


def _crash(vm: Vm) -> dump.DumpReport:
    say("crash (echo c > /proc/sysrq-trigger): the crash kernel boots, reads /proc/vmcore ...")
    report = dump.crash_and_check(vm)
    say(f"  the dump: {report.describe()}")
    return report


def _peer(a: assets.Assets) -> tuple[Row, dump.DumpReport]:
    say("the peer: a second guest, kdump-tools as Debian ships it (its udev rules, stock udevd)")
    with Vm(a, name="demo-peer", no_reboot=True) as vm:
        g = Guest(vm, say)
        dump.install_dumpcheck_initrd(vm)
        g.crashhp_stop()
        g.seed_kdump_tools("-c")
        g.kdump_config_load()
        g.peer_rules_on()
        cpu, mem = g.crash_hotplug()
        say(f"  kdump-config load with KDUMP_KEXEC_ARGS=-c (kexec_load): crash_hotplug {cpu}/{mem}")
        say("  the same burst; kdump-tools runs kdump-config try-reload for every uevent ...")
        out = g.measure(
            "peer",
            "+2 CPUs, online, +1 GiB",
            "peer",
            g.add_cpus_and_dimm,
            reloads_from="kdump-config",
        )
        failed = sum(1 for e in out.journal if e.get("MESSAGE") == "failed to unload kdump kernel")
        say(f"  kdump-config try-reload ran {out.row.reloads} times, {failed} failed")
        _report(out)
        report = _crash(vm)
    return out.row, report


if __name__ == "__main__":
    sys.exit(main())
