"""`crashhp status`: is the crash kernel safe across hotplug? Assessment is pure."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crashhp import persist, report
from crashhp.arch import Rules
from crashhp.config import LoadedConfig, describe_sources
from crashhp.model import KernelState, Layout, Policy, Protection, Subsystem, Verdict
from crashhp.peers import PeerRule
from crashhp.report import UPGRADE_ADVICE, Assessment, Exit
from crashhp.runtime import daemon_alive

__all__ = ["UPGRADE_ADVICE", "Assessment", "Exit", "assess", "gather", "read_daemon", "render"]

LAYOUT_WORDS = {
    Layout.KEXEC_DIR.value: "/sys/kernel/kexec/ (Linux 6.19 and later)",
    Layout.LEGACY.value: "/sys/kernel/kexec_crash_loaded and siblings (before 6.19)",
    Layout.NONE.value: "none (no kexec support)",
}


def assess(
    state: KernelState,
    daemon: Mapping[str, Any] | None,
    policy: Policy,
    method_error: str | None,
    peers: Sequence[PeerRule] = (),
    *,
    rules: Rules | None = None,
    upgrade_error: str | None = None,
) -> Assessment:
    """The verdict for an admin, from the kernel's files, the daemon's report and the
    distribution's own hotplug rules: crashhp.report's assessment, the daemon's too."""
    result = report.assess(
        state,
        _protection(daemon),
        policy=policy,
        method_error=method_error,
        running=daemon is not None,
        rules=rules,
        upgrade_error=upgrade_error,
    )
    reloading = [p for p in peers if p.reloads]
    if result.code is not Exit.OK or not reloading:
        return result
    names = ", ".join(p.peer.rule for p in reloading)
    if daemon is not None:
        why = "each hotplug event is reloaded twice, by crashhp and by " + names
    elif state.kernel_keeps_current and not all(p.checks_crash_hotplug for p in reloading):
        why = f"{names} still reloads on every hotplug event, leaving needless windows"
    else:
        return result
    return Assessment(
        Exit.WARNING,
        f"{result.headline}; but {why}",
        "let crashhp take over: ln -s "
        + " ".join(str(p.peer.takeover) for p in reloading)
        + " /etc/udev/rules.d/",
    )


def _protection(daemon: Mapping[str, Any] | None) -> Protection | None:
    if daemon is None:
        return None
    if daemon.get("owed"):
        return Protection.UNPROTECTED
    try:
        return Protection(str(daemon.get("protection")))
    except ValueError:
        return None


def read_daemon(state_dir: Path) -> dict[str, Any] | None:
    """The running daemon's report, or None if none is running (it holds its lock)."""
    if not daemon_alive(state_dir):
        return None
    return persist.read_report(state_dir)


def gather(
    state: KernelState,
    daemon: Mapping[str, Any] | None,
    loaded: LoadedConfig,
    method: str,
    method_error: str | None,
    *,
    peers: Sequence[PeerRule] = (),
    rules: Rules | None = None,
    upgrade_error: str | None = None,
) -> dict[str, Any]:
    # The daemon's own finding: its runner cannot reload under its unit (crashhp.runners).
    runner_error = str(daemon["runner_error"]) if daemon and daemon.get("runner_error") else None
    result = assess(
        state,
        daemon,
        loaded.config.policy,
        method_error or runner_error,
        peers,
        rules=rules,
        upgrade_error=upgrade_error,
    )
    return {
        "verdict": result.code.name,
        "exit_code": int(result.code),
        "headline": result.headline,
        "advice": result.advice,
        "kernel": {
            "release": platform.release(),
            "crash_loaded": state.crash_loaded,
            "crash_hotplug": {s.value: state.verdict(s).value for s in Subsystem},
            "elfcorehdr_size": state.elfcorehdr_size,
            "crash_size": state.crash_size,
            "kexec_layout": state.layout.value,
            "fadump": None
            if state.fadump is None
            else {
                "enabled": state.fadump.enabled,
                "registered": state.fadump.registered,
                "hotplug_ready": state.fadump.hotplug_ready,
            },
            "arch": None if rules is None else rules.arch.value,
        },
        "daemon": dict(daemon) if daemon else None,
        "peer_rules": [
            {
                "rule": p.peer.rule,
                "package": p.peer.package,
                "state": p.state.value,
                "file": str(p.effective),
                "reloads": p.reloads,
                "checks_crash_hotplug": p.checks_crash_hotplug,
                "describe": p.describe(),
            }
            for p in peers
        ],
        "reload_method": method,
        "reload_method_error": method_error,
        "runner_error": runner_error,
        "upgrade_error": upgrade_error,
        "config": {
            "files": [str(f) for f in loaded.files],
            "values": {k: {"value": v, "from": src} for k, v, src in describe_sources(loaded)},
        },
    }


def render(report: Mapping[str, Any]) -> str:
    k = report["kernel"]
    loaded = {True: "loaded", False: "NOT loaded", None: "unsupported (no kexec)"}[
        k["crash_loaded"]
    ]
    size = k["crash_size"]
    details = []
    if size:
        details.append(f"reservation {size // (1 << 20)} MiB")
    if k["elfcorehdr_size"]:
        details.append(f"elfcorehdr {k['elfcorehdr_size']} bytes")
    hotplug = ", ".join(f"{s}: {_verdict_words(v)}" for s, v in k["crash_hotplug"].items())
    daemon = report["daemon"]
    if daemon:
        c = daemon.get("counters", {})
        daemon_line = (
            f"running (pid {daemon.get('pid')}): {daemon.get('status', '?')}; "
            f"{sum(c.get('bursts', {}).values())} bursts, "
            f"{c.get('failed_reloads', 0)} failed reloads"
        )
    else:
        daemon_line = "not running"
    method = report["reload_method"]
    if report["reload_method_error"]:
        method = f"{method}: {report['reload_method_error']}"
    if report.get("runner_error"):
        method = f"{method}; but {report['runner_error']}"
    values = report["config"]["values"]
    changed = [
        f"{key}={v['value']!r} ({v['from']})"
        for key, v in values.items()
        if v["from"] != "(defaults)"
    ]
    lines = [
        f"{report['verdict']}: {report['headline']}",
        f"  kernel        {k['release']}",
        f"  crash kernel  {loaded}" + (f" ({', '.join(details)})" if details else ""),
        f"  crash_hotplug {hotplug}",
        f"  kexec sysfs   {LAYOUT_WORDS.get(k.get('kexec_layout', ''), k.get('kexec_layout'))}",
        f"  crashhp       {daemon_line}",
        f"  reload        {method}",
        f"  policy        {values['policy']['value']}",
        "  config        " + (", ".join(report["config"]["files"]) or "defaults only"),
    ]
    lines += [f"                {item}" for item in changed]
    lines += [f"  distro rule   {p['describe']}" for p in report.get("peer_rules", [])]
    if report["advice"]:
        lines.append(f"  advice        {report['advice']}")
    return "\n".join(lines)


def _verdict_words(value: str) -> str:
    return {
        Verdict.KERNEL_UPDATES.value: "1 (kernel updates the header)",
        Verdict.NEEDS_RELOAD.value: "0 (reload needed)",
        Verdict.ABSENT.value: "absent (kernel without crash hotplug)",
        Verdict.UNREADABLE.value: "unreadable" + ("" if os.geteuid() == 0 else " (run as root)"),
    }.get(value, value)
