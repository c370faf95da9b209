"""One assessment of protection, for STATUS= and for `crashhp status`. Pure."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from crashhp.arch import Rules
from crashhp.model import KernelState, Policy, Protection, Subsystem, Verdict


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
    protection: Protection | None,
    *,
    policy: Policy,
    method_error: str | None,
    running: bool,
    rules: Rules | None = None,
    upgrade_error: str | None = None,
) -> Assessment:
    """Would a crash now be dumped completely, and will it stay so across hotplug?

    ``protection``: the daemon's own verdict (None: no daemon); ``running``: a daemon is
    running (the daemon itself passes True); ``upgrade_error``: why crashhp cannot upgrade
    here faithfully (None: it can).
    """
    fadump = state.fadump
    if fadump is not None and fadump.enabled:
        return _fadump(fadump.registered, fadump.hotplug_ready, protection)
    if state.crash_loaded is None:
        return Assessment(
            Exit.UNKNOWN,
            "this kernel has no kexec support: no crash kernel can be loaded",
            "boot a kernel built with CONFIG_KEXEC/CONFIG_KEXEC_FILE and crashkernel=",
        )
    if protection is Protection.UNPROTECTED:
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
    if rules is not None and rules.never_reload:
        return Assessment(Exit.OK, f"safe: {rules.never_reload}")
    stale = [s for s in Subsystem if state.verdict(s) is not Verdict.KERNEL_UPDATES]
    if protection is Protection.STALE:
        return Assessment(
            Exit.WARNING,
            "STALE: the crash kernel describes an older topology, and crashhp's reload failed",
            "see `journalctl -u crashhp -p err`",
        )
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


def _fadump(registered: bool, hotplug_ready: bool, protection: Protection | None) -> Assessment:
    if not registered:
        return Assessment(
            Exit.CRITICAL,
            "firmware-assisted dump is enabled but not registered: a crash now would not be dumped",
            "restart the distribution's kdump service to register fadump",
        )
    if hotplug_ready:
        return Assessment(
            Exit.OK,
            "safe: firmware-assisted dump is registered and the kernel keeps it current "
            "across hotplug (hotplug_ready = 1)",
        )
    if protection is Protection.STALE:
        return Assessment(
            Exit.WARNING,
            "STALE: fadump's registration describes an older topology, and its "
            "re-registration failed",
            "see `journalctl -u crashhp -p err`",
        )
    return Assessment(
        Exit.OK,
        "safe: firmware-assisted dump is registered; a memory change re-registers it through "
        "the distribution's kdump tool (hotplug_ready = 0)",
    )


def status_line(
    assessment: Assessment,
    *,
    policy: Policy,
    reloads: int,
    reloading: str | None = None,
    retry_in_s: float | None = None,
) -> str:
    """The daemon's STATUS= line: the assessment's headline and what the daemon does."""
    if reloading is not None:
        return f"reloading the crash kernel ({reloading})"
    prefix = "policy never (observing only); " if policy is Policy.NEVER else ""
    count = f"{reloads} reload{'s' if reloads != 1 else ''}"
    retry = "" if retry_in_s is None else f"; retry in {max(0.0, retry_in_s):.0f} s"
    return f"{prefix}{assessment.headline}{retry}; {count}"
