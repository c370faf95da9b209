"""`make demo`: crashhp on real CPU and memory hotplug in a QEMU guest, with a narrative.

Builds or reuses the cached guest (first run: a kernel download and a debootstrap, a few
minutes; later runs: seconds), boots it, runs scenario A (the kernel keeps the crash kernel
current: crashhp does nothing) and scenario B (it cannot: crashhp reloads once for the whole
burst), prints the measurements and shuts the guest down.
"""

from __future__ import annotations

import sys
import time

from tests.system import assets
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
        with Vm(a, name="demo") as vm:
            say(f"guest up in {vm.boot_s:.1f} s; crashhp runs from this working tree")
            g = Guest(vm, say)

            say("A: load the crash kernel with kexec_file_load (kexec -s -p)")
            g.fresh_crashhp("file")
            cpu, mem = g.crash_hotplug()
            say(f"  crash_hotplug: cpu={cpu} memory={mem}: the kernel rewrites the header itself")
            say("  hot-adding 2 CPUs, onlining them, hot-adding a 1 GiB DIMM through QMP ...")
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
            say("shutting the guest down")
    except VmError as exc:
        print(f"demo: the guest failed: {exc}", file=sys.stderr)
        return 1
    print()
    print(table(rows))
    ok = rows[0].reloads == 0 and rows[1].reloads == 1 and rows[1].metrics.loaded_at_end
    say("done: " + ("as expected" if ok else "NOT as expected, see above"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
