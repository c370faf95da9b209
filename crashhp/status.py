"""`crashhp status`: is the crash kernel safe across hotplug? Assessment is pure."""

from __future__ import annotations

import enum
import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crashhp.config import LoadedConfig, describe_sources
from crashhp.model import KernelState, Policy, Subsystem, Verdict
from crashhp.peers import PeerRule


class Exit(enum.IntEnum):
    """Exit codes in the monitoring-plugin convention."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True, slots=True)
class Assessment:
    code: Exit
    headline: str
    advice: str = ""


UPGRADE_ADVICE = (
    "`crashhp upgrade` (or kexec.upgrade = true) would reload it hotplug-capably "
    "(kexec -s, or kexec -c --hotplug) so that the kernel keeps it current"
)


def upgrade_advice(upgrade_error: str | None) -> str:
    """Advise the upgrade only where crashhp can repeat the distribution's dump command."""
    if upgrade_error is None:
        return UPGRADE_ADVICE
    return f"no `crashhp upgrade` here: {upgrade_error}"


def assess(
    state: KernelState,
    daemon: Mapping[str, Any] | None,
    policy: Policy,
    method_error: str | None,
    peers: Sequence[PeerRule] = (),
    *,
    upgrade_error: str | None = None,
) -> Assessment:
    """The verdict for an admin, from the kernel's files, the daemon's report and the
    distribution's own hotplug rules. ``upgrade_error``: why crashhp cannot upgrade."""
    result = _assess(state, daemon, policy, method_error, upgrade_error)
    reloading = [p for p in peers if p.reloads]
    if result.code is not Exit.OK or not reloading:
        return result
    names = ", ".join(p.peer.rule for p in reloading)
    kernel_keeps = all(state.verdict(s) is Verdict.KERNEL_UPDATES for s in Subsystem)
    if daemon is not None:
        why = "each hotplug event is reloaded twice, by crashhp and by " + names
    elif kernel_keeps and not all(p.checks_crash_hotplug for p in reloading):
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


def _assess(
    state: KernelState,
    daemon: Mapping[str, Any] | None,
    policy: Policy,
    method_error: str | None,
    upgrade_error: str | None = None,
) -> Assessment:
    if state.crash_loaded is None:
        return Assessment(
            Exit.UNKNOWN,
            "this kernel has no kexec support: no crash kernel can be loaded",
            "boot a kernel built with CONFIG_KEXEC/CONFIG_KEXEC_FILE and crashkernel=",
        )
    protection = daemon.get("protection") if daemon else None
    if protection == "unprotected" or (daemon and daemon.get("owed")):
        return Assessment(
            Exit.CRITICAL,
            "UNPROTECTED: crashhp's reload left no crash kernel loaded",
            "see `journalctl -u crashhp -p err`; crashhp retries with backoff",
        )
    if not state.crash_loaded:
        return Assessment(
            Exit.CRITICAL,
            "no crash kernel is loaded: a crash now would not be dumped",
            "start the distribution's kdump service (kdump.service or kdump-tools.service)",
        )
    stale = [s for s in Subsystem if state.verdict(s) is not Verdict.KERNEL_UPDATES]
    if not stale:
        return Assessment(
            Exit.OK,
            "safe: the kernel updates the crash kernel's elfcorehdr itself on CPU and memory "
            "hotplug; no reload is ever needed",
        )
    names = " and ".join(s.value for s in stale)
    unsupported = [s for s in stale if state.verdict(s) in (Verdict.ABSENT, Verdict.UNREADABLE)]
    why = (
        f"this kernel cannot update the crash header on {names} changes"
        if unsupported
        else f"crash kernel loaded with kexec_load without --hotplug: every {names} change "
        "needs a reload"
    )
    if protection == "stale":
        return Assessment(
            Exit.WARNING,
            f"STALE: {why}, and crashhp's last reload failed",
            "see `journalctl -u crashhp -p err`",
        )
    running = daemon is not None
    if running and policy is not Policy.NEVER and method_error is None:
        advice = upgrade_advice(upgrade_error) if not unsupported else ""
        return Assessment(Exit.OK, f"safe: {why}; crashhp reloads it after each burst", advice)
    if not running:
        return Assessment(
            Exit.WARNING,
            f"at risk: {why}, and crashhp is not running",
            "systemctl enable --now crashhp"
            + ("" if unsupported else f"; or {upgrade_advice(upgrade_error)}"),
        )
    if policy is Policy.NEVER:
        return Assessment(
            Exit.WARNING, f"at risk: {why}, and policy = never", 'set policy = "auto"'
        )
    return Assessment(Exit.WARNING, f"at risk: {why}, and crashhp cannot reload: {method_error}")


def read_daemon(state_dir: Path) -> dict[str, Any] | None:
    """The running daemon's report, or None if none is running."""
    try:
        data = json.loads((state_dir / "state.json").read_text())
        pid = int(data["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if b"crashhp" not in cmdline:
        return None
    return data if isinstance(data, dict) else None


def gather(
    state: KernelState,
    daemon: Mapping[str, Any] | None,
    loaded: LoadedConfig,
    method: str,
    method_error: str | None,
    *,
    peers: Sequence[PeerRule] = (),
    upgrade_error: str | None = None,
) -> dict[str, Any]:
    result = assess(
        state, daemon, loaded.config.policy, method_error, peers, upgrade_error=upgrade_error
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
            f"{c.get('bursts', 0)} bursts, {c.get('failures', 0)} failed reloads"
        )
    else:
        daemon_line = "not running"
    method = report["reload_method"]
    if report["reload_method_error"]:
        method = f"{method}: {report['reload_method_error']}"
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
