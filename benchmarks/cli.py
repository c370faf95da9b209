"""``python -m benchmarks``: measure, print the tables, exit non-zero only if something broke."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import idle, pipeline, procfs
from benchmarks.report import Problems, Table, mib, num, ratio

PARTS = ("pipeline", "vm", "idle", "scaling")
DEFAULT_PARTS = ("pipeline", "idle", "scaling")
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="crashhp against the per-event reload helpers, side by side, in one run.",
    )
    p.add_argument("--vm", action="store_true", help="also run part 2 in the QEMU guest")
    p.add_argument(
        "--parts",
        default=None,
        help=f"comma-separated subset of {','.join(PARTS)} (default: all but vm, or all with --vm)",
    )
    p.add_argument(
        "--full", action="store_true", help="also run the helper on 100,000 events (minutes)"
    )
    p.add_argument("--events", type=int, default=10_000, help="part 1 burst size")
    p.add_argument("--repeats", type=int, default=3, help="crashhp bursts per size (median)")
    p.add_argument(
        "--vm-guests",
        default="crashhp,peer,auto",
        help="part 2's guests: crashhp (a, c), peer (b, b'), auto (a'); comma-separated",
    )
    p.add_argument("--idle-window", type=float, default=30.0, metavar="S")
    return p


def _pipeline_table(events: int, crashhp: pipeline.Run, helper: pipeline.Run) -> Table:
    t = Table(
        f"1. Event pipeline: {events:,} memory-block uevents (udev netlink format) in a private "
        "namespace",
        ["", "crashhp", "per-event helper", "ratio"],
    )
    t.add("events/s", num(crashhp.rate), num(helper.rate), ratio(crashhp.rate, helper.rate))
    t.add(
        "CPU s (process + children)",
        num(crashhp.cpu.total_s, 2),
        num(helper.cpu.total_s, 2),
        ratio(helper.cpu.total_s, crashhp.cpu.total_s) + " less",
    )
    t.add("CPU us per event", num(crashhp.cpu_us_per_event), num(helper.cpu_us_per_event), "")
    t.add(
        "reloads started",
        str(crashhp.reloads),
        f"{helper.reloads:,} due, not run",
        "",
    )
    t.add(
        "wall time, first event sent -> last handled",
        f"{crashhp.seconds:.2f} s",
        f"{helper.seconds:.2f} s",
        "",
    )
    each = ", ".join(f"{r:,.0f}" for r, _ in crashhp.each)
    t.notes.append(
        f"crashhp: the real daemon, packaged defaults (quiet 500 ms, max delay 5 s, settle "
        f"200 ms, 128 MiB receive buffer), the tests' reload recorder as its command; median "
        f"of {len(crashhp.each)} bursts by events/s ({each}); CPU includes its one reload "
        f"command. Last event -> reload done: {num(crashhp.restore_ms)} ms (coalescing)."
    )
    t.notes.append(
        "helper: benchmarks/dispatcher.py stands in for udevd (receives the same messages, "
        "posix_spawn per matching event, at most udevd's children_max at once, reads the "
        "helper's stdout) and runs `flock LOCK cat .../memory/crash_hotplug "
        ".../kexec_crash_loaded` per event: the lock and the reads every Debian or openSUSE "
        "helper does first. NOT modelled: udevd's own per-event work, bash start-up and config "
        "parsing of kdump-config, and the full unload+load each of those helpers then runs "
        "(0.5-2.5 s each): the real per-event design is far slower than this floor."
    )
    for run in (crashhp, helper):
        t.notes += [f"{run.design}: {n}" for n in run.notes]
    return t


def _idle_table(f: idle.Figures, peak_kib: int | None) -> Table:
    t = Table("3. Idle and start-up (crashhp)", ["", "figure", "goal"])
    spread = ", ".join(f"{s:.2f}" for s in f.ready_s)
    t.add(
        f"exec -> READY=1, median of {len(f.ready_s)}",
        f"{f.ready_median_s:.2f} s",
        "<= 0.5 s",
    )
    t.add(
        "RSS 1 s after READY=1", f"{mib(f.rss_kib)} ({f.rss_kib * 1024 / 1e6:.1f} MB)", "<= 40 MB"
    )
    if peak_kib is not None:
        t.add("peak RSS (VmHWM) after all scaling bursts", mib(peak_kib), "")
    for i in f.idle:
        t.add(
            f"wake-ups/min idle, {i.label}",
            f"{i.per_minute:.1f}",
            "0" if i.watchdog_usec is None else f"{i.pings_per_minute:.0f} (the pings)",
        )
        if i.watchdog_usec is not None:
            t.add(
                "  of which beyond the watchdog pings",
                f"{i.beyond_watchdog_per_minute:.1f}",
                "0",
            )
    t.notes.append(f"start-up runs: {spread} s (python -m crashhp daemon, from exec)")
    for i in f.idle:
        w = i.wakeups
        t.notes.append(
            f"{i.label}: {w.runs} runs on a CPU, {w.voluntary} voluntary and {w.involuntary} "
            f"involuntary context switches, {w.threads} thread(s), {i.pings} WATCHDOG=1 in "
            f"{i.window_s:.0f} s"
        )
    return t


def _scaling_table(rows: list[tuple[int, pipeline.Run, pipeline.Run | None]], full: bool) -> Table:
    t = Table(
        "4. Scaling: the same pipeline at 1k, 10k and 100k events",
        [
            "events",
            "design",
            "events/s",
            "CPU s",
            "CPU us/event",
            "reloads",
            "overflows",
            "events/s ratio",
        ],
    )
    for count, crashhp, helper in rows:
        each = "/".join(str(n) for _, n in crashhp.each) or str(crashhp.reloads)
        t.add(
            f"{count:,}",
            "crashhp",
            num(crashhp.rate),
            num(crashhp.cpu.total_s, 2),
            num(crashhp.cpu_us_per_event, 1),
            each,
            str(crashhp.overflows),
            ratio(crashhp.rate, helper.rate) if helper else "",
        )
        if helper is not None:
            t.add(
                "",
                "helper",
                num(helper.rate),
                num(helper.cpu.total_s, 2),
                num(helper.cpu_us_per_event, 1),
                f"{helper.reloads:,} due",
                str(helper.overflows),
                "",
            )
        elif not full:
            rates = [h.rate for _, _, h in rows if h is not None]
            guess = f"; ~{count / min(rates) / 60:.0f} min" if rates else ""
            t.add("", "helper", f"not run (--full{guess})", "", "", "", "", "")
    t.notes.append(
        "crashhp reloads: one figure per burst (median burst's CPU and events/s shown); "
        "CPU us/event includes the reload command, so it falls as bursts grow"
    )
    for count, crashhp, _ in rows:
        t.notes += [f"crashhp {count:,}: {n}" for n in crashhp.notes if "median" not in n]
    return t


def _header() -> str:
    return (
        f"crashhp benchmarks: {platform.node()}, Linux {platform.release()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {procfs.loadavg()} at start. One run; designs measured one after "
        "the other on this machine, so compare the ratios, not the absolute figures."
    )


def _check_environment() -> str | None:
    if os.geteuid() != 0:
        return "needs root: netlink multicast in private namespaces, unshare, bind mounts"
    for tool in ("unshare", "flock", "cat"):
        if shutil.which(tool) is None:
            return f"needs {tool}(1)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    parts = (
        tuple(p.strip() for p in args.parts.split(",") if p.strip())
        if args.parts
        else (PARTS if args.vm else DEFAULT_PARTS)
    )
    unknown = set(parts) - set(PARTS)
    if unknown:
        print(
            f"benchmarks: unknown part(s) {sorted(unknown)}; choose from {PARTS}", file=sys.stderr
        )
        return 2
    missing = _check_environment()
    if missing:
        print(f"benchmarks: {missing}", file=sys.stderr)
        return 2
    problems = Problems()
    tables: list[Table] = []
    print(_header(), flush=True)
    with tempfile.TemporaryDirectory(prefix="crashhp-bench-") as tmp:
        base = Path(tmp)
        try:
            tables = _run(parts, args, base, problems)
        except Exception as exc:  # a harness failure is a broken run, reported as such
            problems.add(f"{type(exc).__name__}: {exc}")
            if os.environ.get("CRASHHP_BENCH_DEBUG"):
                raise
    for table in tables:
        print()
        print(table.render())
    print()
    if problems:
        print("BROKEN: the figures above are incomplete or wrong:")
        for p in problems.items:
            print(f"  - {p}")
        return 1
    print(f"done in {time.monotonic() - T0:.0f} s; nothing broke.")
    return 0


def _run(
    parts: Sequence[str], args: argparse.Namespace, base: Path, problems: Problems
) -> list[Table]:
    tables: list[Table] = []
    scaling: list[tuple[int, pipeline.Run, pipeline.Run | None]] = []
    peak_kib: int | None = None
    idle_figures: idle.Figures | None = None
    if "pipeline" in parts or "scaling" in parts:
        sizes = [args.events]
        if "scaling" in parts:
            sizes = sorted({1_000, 10_000, 100_000, args.events})
        with pipeline.crashhp_host(base / "crashhp", problems) as (host, daemon):
            for size in sizes:
                runs = []
                repeats = args.repeats if size <= 10_000 else max(1, args.repeats // 2)
                for n in range(repeats):
                    say(f"crashhp: {size:,} events, burst {n + 1}/{repeats}")
                    runs.append(pipeline.crashhp_burst(host, daemon, size, problems))
                helper: pipeline.Run | None = None
                if size <= 10_000 or args.full:
                    say(f"per-event helper: {size:,} events")
                    helper = pipeline.helper_burst(base / f"helper{size}", size, problems)
                scaling.append((size, pipeline.median_run(runs), helper))
            peak_kib = procfs.memory_kib(daemon.pid).get("VmHWM")
        if "pipeline" in parts:
            _, c, h = next(r for r in scaling if r[0] == args.events)
            if h is not None:
                tables.append(_pipeline_table(args.events, c, h))
    if "vm" in parts:
        from benchmarks import guest

        say("part 2: the QEMU guest")
        guests = tuple(g.strip() for g in args.vm_guests.split(",") if g.strip())
        tables.append(guest.run(problems, say, guests))
    if "idle" in parts:
        say("idle and start-up")
        idle_figures = idle.start_up(base / "startup", problems)
        say(f"idle wake-ups over {args.idle_window:.0f} s")
        idle.idle(base / "idle", idle_figures, problems, args.idle_window)
        tables.append(_idle_table(idle_figures, peak_kib))
    if "scaling" in parts:
        tables.append(_scaling_table(scaling, args.full))
    return tables
