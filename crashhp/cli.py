"""The command line: ``main(argv) -> int``, the one place exceptions become exit codes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from crashhp import __version__, kernel, logs, process, reload, status
from crashhp.config import Config, ConfigError, LoadedConfig, load_config
from crashhp.decision import Action, Decision, Reason, decide
from crashhp.lock import ReloadLock
from crashhp.model import KernelState, Policy, Subsystem, Verdict

EX_SOFTWARE = 70


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crashhp",
        description="Keep the kdump crash kernel valid across CPU and memory hotplug.",
    )
    parser.add_argument("--version", action="version", version=f"crashhp {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="use FILE alone instead of /etc/crashhp/crashhp.toml and crashhp.d/*.toml",
        )

    daemon = sub.add_parser("daemon", help="run the service in the foreground")
    with_config(daemon)
    st = sub.add_parser("status", help="is the crash kernel safe across hotplug?")
    with_config(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    check = sub.add_parser("check-config", help="validate the config and show it")
    check.add_argument("file", nargs="?", type=Path, metavar="FILE")
    rel = sub.add_parser("reload", help="decide once as the daemon would, and reload if needed")
    with_config(rel)
    rel.add_argument("--dry-run", action="store_true", help="only say what would be done")
    up = sub.add_parser(
        "upgrade", help="reload a crash kernel hotplug-capably so the kernel keeps it current"
    )
    with_config(up)
    up.add_argument("--dry-run", action="store_true", help="only say what would be done")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "daemon":
            return _daemon(args.config)
        if args.verb == "status":
            return _status(args.config, as_json=args.json)
        if args.verb == "check-config":
            return _check_config(args.file)
        if args.verb == "upgrade":
            return _upgrade(args.config, dry_run=args.dry_run)
        return _reload(args.config, dry_run=args.dry_run)
    except ConfigError as exc:
        print(f"crashhp: {exc}", file=sys.stderr)
        return 1 if args.verb != "status" else int(status.Exit.UNKNOWN)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `crashhp status | head`
        sys.stderr.close()
        return 0


def _daemon(config_file: Path | None) -> int:
    from crashhp.daemon import Daemon
    from crashhp.notify import SystemdNotifier

    loaded = load_config(config_file)  # a ConfigError is exit 1: restarting cannot fix it
    try:
        logs.configure(loaded.config.log.format, loaded.config.log.level.value)
        return Daemon(lambda: load_config(config_file), SystemdNotifier()).run()
    except ConfigError:
        raise
    except Exception:
        # Not a config problem: exit with EX_SOFTWARE so that systemd restarts us
        # (the unit's RestartPreventExitStatus=1 is for bad configs only).
        logs.get_logger().exception("daemon_crashed")
        return EX_SOFTWARE


def _method(loaded: LoadedConfig) -> tuple[str, str | None]:
    try:
        plan = reload.plan(loaded.config)
    except reload.NoReloadMethod as exc:
        return loaded.config.reload.method.value, str(exc)
    return f"{plan.method.value} ({plan.describe()})", None


def _status(config_file: Path | None, *, as_json: bool) -> int:
    from crashhp.daemon import runtime_dir

    loaded = load_config(config_file)
    method, error = _method(loaded)
    from crashhp.peers import default_rule_dirs, find_peer_rules

    report = status.gather(
        kernel.read_state(),
        status.read_daemon(runtime_dir()),
        loaded,
        method,
        error,
        peers=find_peer_rules(default_rule_dirs()),
        upgrade_error=reload.upgrade_unavailable(loaded.config),
    )
    print(json.dumps(report, indent=2) if as_json else status.render(report))
    return int(report["exit_code"])


def _check_config(file: Path | None) -> int:
    loaded = load_config(file)
    from crashhp.config import describe_sources

    print(f"{', '.join(map(str, loaded.files)) or 'no config files'}: valid")
    for key, value, source in describe_sources(loaded):
        print(f"  {key} = {json.dumps(value)}  # {source}")
    _, error = _method(loaded)
    if error:
        print(f"  note: {error}")
    return 0


def _decide_once(config: Config) -> tuple[KernelState, Decision]:
    """The daemon's decision for "everything may have changed", a 0 confirmed."""
    state = kernel.read_state()
    decision = decide(Subsystem, state, config.policy)
    if decision.action is Action.CONFIRM:
        # As the daemon does: re-read the 0s over the settle time; any 1 is the truth.
        seen: set[Subsystem] = set()
        until = time.monotonic() + config.coalesce.settle_ms / 1000
        while time.monotonic() < until:
            time.sleep(kernel.SETTLE_READ_INTERVAL_S)
            seen.update(
                s for s in decision.stale if kernel.read_verdict(s) is Verdict.KERNEL_UPDATES
            )
        state = kernel.read_state().seen_updating(seen)
        decision = decide(Subsystem, state, config.policy, confirmed=True)
    return state, decision


def _run_plan(plan: reload.Plan, config: Config) -> process.Result | None:
    """Run every step under the reload lock; the failing step's result, or None."""
    from crashhp.daemon import runtime_dir

    lock = ReloadLock(runtime_dir())
    if not lock.acquire(timeout_s=config.reload.timeout_s):
        return process.Result(plan.steps[0], None, 0.0, error=f"{lock.path} stays locked")
    try:
        for step in plan.steps:
            result = process.run(step, config.reload.timeout_s)
            if not result.ok:
                return result
        return None
    finally:
        lock.release()


def _reload(config_file: Path | None, *, dry_run: bool) -> int:
    config = load_config(config_file).config
    _, decision = _decide_once(config)
    print(f"decision: {decision.action.value}: {decision.text}")
    if decision.action is not Action.RELOAD:
        return 0
    try:
        plan = reload.plan(config)
    except reload.NoReloadMethod as exc:
        print(f"crashhp: {exc}", file=sys.stderr)
        return 1
    if dry_run:
        print(f"would run: {plan.describe()}")
        return 0
    failed = _run_plan(plan, config)
    if failed is not None:
        print(f"crashhp: reload failed: {failed.describe()}\n{failed.output}", file=sys.stderr)
        return 1
    if not kernel.read_crash_loaded():
        print("crashhp: reload ran but no crash kernel is loaded afterwards", file=sys.stderr)
        return 1
    print(f"reloaded with {plan.describe()}")
    return 0


def _upgrade(config_file: Path | None, *, dry_run: bool) -> int:
    """Reload a crash kernel loaded without hotplug support, hotplug-capably, once."""
    config = load_config(config_file).config
    state, decision = _decide_once(config.model_copy(update={"policy": Policy.AUTO}))
    if not state.crash_loaded:
        print("crashhp: no crash kernel is loaded: nothing to upgrade", file=sys.stderr)
        return 1
    if decision.reason is Reason.KERNEL_UPDATES:
        print("nothing to do: the kernel already keeps the crash kernel current")
        return 0
    if decision.reason is not Reason.KERNEL_SAYS_RELOAD:
        print(f"crashhp: cannot upgrade: {decision.text}", file=sys.stderr)
        return 1
    try:
        plan = reload.upgrade_plan(config)
    except reload.NoReloadMethod as exc:
        print(f"crashhp: cannot upgrade: {exc}", file=sys.stderr)
        return 1
    fallback = plan.fallback.describe() if plan.fallback else "none"
    if dry_run:
        print(f"would run: {plan.describe()}\nif that fails: {fallback}")
        return 0
    failed = _run_plan(plan, config)
    after = kernel.read_state()
    if failed is None and after.crash_loaded:
        current = all(after.verdict(s) is Verdict.KERNEL_UPDATES for s in Subsystem)
        if current:
            print(f"upgraded with {plan.describe()}: the kernel now keeps it current")
            return 0
        print(f"loaded with {plan.describe()}, but crash_hotplug still reads 0", file=sys.stderr)
        return 1
    why = failed.describe() if failed else "no crash kernel loaded afterwards"
    print(f"crashhp: hotplug-capable load failed ({why}); loading it the previous way: {fallback}")
    if plan.fallback is not None:
        _run_plan(plan.fallback, config)  # judged by what the kernel says next
    if kernel.read_crash_loaded():
        print("crash kernel loaded the previous way; hotplug still needs reloads", file=sys.stderr)
        return 1
    print("crashhp: UNPROTECTED: no crash kernel is loaded", file=sys.stderr)
    return 2
