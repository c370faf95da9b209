"""The command line: ``main(argv) -> int``, the one place exceptions become exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from crashhp import __version__, kernel, logs, reload, status
from crashhp.config import ConfigError, LoadedConfig, load_config

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
    from crashhp.notify import SystemdNotifier
    from crashhp.runtime import AlreadyRunning
    from crashhp.service import Service

    loaded = load_config(config_file)  # a ConfigError is exit 1: restarting cannot fix it
    try:
        logs.configure(loaded.config.log.format, loaded.config.log.level.value)
        return Service(lambda: load_config(config_file), SystemdNotifier()).run()
    except ConfigError:
        raise
    except AlreadyRunning as exc:
        print(f"crashhp: {exc}; not starting a second one", file=sys.stderr)
        return 1
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
    from crashhp.arch import rules as arch_rules
    from crashhp.peers import default_rule_dirs, find_peer_rules
    from crashhp.runtime import runtime_dir

    loaded = load_config(config_file)
    method, error = _method(loaded)
    report = status.gather(
        kernel.read_state(),
        status.read_daemon(runtime_dir()),
        loaded,
        method,
        error,
        peers=find_peer_rules(default_rule_dirs()),
        upgrade_error=reload.upgrade_unavailable(loaded.config),
        rules=arch_rules(kernel.host_arch()),
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


def _reload(config_file: Path | None, *, dry_run: bool) -> int:
    from crashhp.oneshot import OneShot

    outcome = OneShot(load_config(config_file).config, dry_run=dry_run).run()
    if outcome.action == "none" or (not outcome.plans and not outcome.action):
        print(f"decision: skip: {outcome.text or outcome.decision}")
        return 0
    if dry_run and outcome.plans:
        print(f"decision: reload\nwould run: {outcome.plans[-1].describe()}")
        return 0
    if outcome.action == "reload":
        print(f"reloaded with {outcome.plans[-1].describe()}")
        return 0
    print(f"crashhp: reload failed: {outcome.text}", file=sys.stderr)
    return 1


def _upgrade(config_file: Path | None, *, dry_run: bool) -> int:
    """Reload a crash kernel loaded without hotplug support, hotplug-capably, once."""
    from crashhp.oneshot import OneShot

    if not kernel.read_state().crash_loaded:
        print("crashhp: no crash kernel is loaded: nothing to upgrade", file=sys.stderr)
        return 1
    outcome = OneShot(load_config(config_file).config, upgrade=True, dry_run=dry_run).run()
    if outcome.cannot_upgrade is not None:
        print(f"crashhp: cannot upgrade: {outcome.cannot_upgrade}", file=sys.stderr)
        return 1
    if outcome.action == "none":
        if outcome.decision == "kernel_handles":
            print("nothing to do: the kernel already keeps the crash kernel current")
            return 0
        print(f"crashhp: cannot upgrade: {outcome.text}", file=sys.stderr)
        return 1
    plan = outcome.plans[0]
    fallback = plan.fallback.describe() if plan.fallback else "none"
    if dry_run:
        print(f"would run: {plan.describe()}\nif that fails: {fallback}")
        return 0
    upgraded = outcome.action == "reload" and len(outcome.plans) == 1
    if upgraded and outcome.keeps_current:
        print(f"upgraded with {plan.describe()}: the kernel now keeps it current")
        return 0
    if upgraded:
        print(f"loaded with {plan.describe()}, but crash_hotplug still reads 0", file=sys.stderr)
        return 1
    if outcome.crash_loaded:
        failed = [e for e in outcome.events if e.event == "upgrade_failed"]
        why = failed[-1].fields.get("text") if failed else None
        print(f"crashhp: {why or 'hotplug-capable load failed'}: {fallback}")
        print("crash kernel loaded the previous way; hotplug still needs reloads", file=sys.stderr)
        return 1
    print("crashhp: UNPROTECTED: no crash kernel is loaded", file=sys.stderr)
    return 2
