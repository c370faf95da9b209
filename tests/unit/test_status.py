"""`crashhp status`: the assessment for every case an admin can be in."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from crashhp.arch import Arch, rules
from crashhp.config import Config, LoadedConfig
from crashhp.model import Fadump, KernelState, Layout, Policy, Subsystem, Verdict
from crashhp.peers import PEERS, PeerRule, PeerState
from crashhp.runtime import InstanceLock
from crashhp.status import Exit, assess, gather, read_daemon, render

ONE, ZERO, ABSENT = Verdict.KERNEL_UPDATES, Verdict.NEEDS_RELOAD, Verdict.ABSENT
RUNNING: dict[str, Any] = {"protection": "protected", "pid": 1, "counters": {}}


def st(loaded: bool | None, cpu: Verdict = ONE, mem: Verdict = ONE) -> KernelState:
    return KernelState(
        loaded, MappingProxyType({Subsystem.CPU: cpu, Subsystem.MEMORY: mem}), 917616, 256 << 20
    )


def test_cases() -> None:
    assert assess(st(None), None, Policy.AUTO, None).code is Exit.UNKNOWN
    assert assess(st(False), None, Policy.AUTO, None).code is Exit.CRITICAL
    assert assess(st(True), None, Policy.AUTO, None).code is Exit.OK  # kernel keeps it
    a = assess(st(True, ZERO, ZERO), None, Policy.AUTO, None)
    assert a.code is Exit.WARNING
    assert a.advice.startswith("systemctl enable --now crashhp; or `crashhp upgrade`")
    a = assess(st(True, ZERO, ZERO), RUNNING, Policy.AUTO, None)
    assert a.code is Exit.OK
    assert "kexec_load without --hotplug: every cpu and memory change" in a.headline
    assert "crashhp upgrade" in a.advice
    assert assess(st(True, ZERO, ZERO), RUNNING, Policy.NEVER, None).code is Exit.WARNING
    assert assess(st(True, ZERO, ZERO), RUNNING, Policy.AUTO, "no tool").code is Exit.WARNING
    a = assess(st(True, ABSENT, ABSENT), RUNNING, Policy.AUTO, None)
    assert (a.code, a.advice) == (Exit.OK, "")
    assert "cannot update" in a.headline
    unprotected = {**RUNNING, "protection": "unprotected", "owed": True}
    assert assess(st(False), unprotected, Policy.AUTO, None).code is Exit.CRITICAL
    stale = {**RUNNING, "protection": "stale"}
    assert assess(st(True, ZERO, ZERO), stale, Policy.AUTO, None).code is Exit.WARNING


def test_render_one_screen() -> None:
    report = gather(st(True, ZERO, ONE), RUNNING, LoadedConfig(Config(), ()), "command", None)
    text = render(report)
    assert text.startswith("OK: safe: crash kernel loaded with kexec_load without --hotplug")
    assert "reservation 256 MiB, elfcorehdr 917616 bytes" in text
    assert "cpu: 0 (reload needed), memory: 1 (kernel updates the header)" in text
    assert len(text.splitlines()) < 25
    assert report["exit_code"] == 0


def peer(state: PeerState, checks: bool = False) -> PeerRule:
    p = PEERS[0]
    return PeerRule(p, state, Path("/usr/lib/udev/rules.d") / p.rule, checks_crash_hotplug=checks)


def test_a_distro_rule_reloading_as_well_is_a_warning() -> None:
    active = peer(PeerState.ACTIVE)
    a = assess(st(True, ZERO, ZERO), RUNNING, Policy.AUTO, None, [active])
    assert a.code is Exit.WARNING
    assert "reloaded twice, by crashhp and by 50-kdump-tools.rules" in a.headline
    assert a.advice == f"let crashhp take over: ln -s {PEERS[0].takeover} /etc/udev/rules.d/"
    # Taken over: no warning.
    taken = peer(PeerState.TAKEN_OVER)
    assert assess(st(True, ZERO, ZERO), RUNNING, Policy.AUTO, None, [taken]).code is Exit.OK
    # crashhp not running, the kernel keeps it current, and the rule reloads blindly.
    a = assess(st(True), None, Policy.AUTO, None, [active])
    assert (a.code, "needless" in a.headline) == (Exit.WARNING, True)
    # A rule that checks crash_hotplug itself is harmless then.
    assert assess(st(True), None, Policy.AUTO, None, [peer(PeerState.ACTIVE, True)]).code is Exit.OK


def test_render_lists_distro_rules() -> None:
    report = gather(
        st(True), None, LoadedConfig(Config(), ()), "command", None, peers=[peer(PeerState.ACTIVE)]
    )
    assert "  distro rule   50-kdump-tools.rules (kdump-tools, Debian, Ubuntu)" in render(report)
    assert report["peer_rules"][0]["reloads"] is True


def test_upgrade_advised_only_where_crashhp_can_repeat_the_distros_command() -> None:
    why = "cannot establish kdump-tools' dump command: /var/crash/kexec_cmd is missing"
    for daemon in (None, RUNNING):
        a = assess(st(True, ZERO, ZERO), daemon, Policy.AUTO, None, upgrade_error=why)
        assert "would reload it hotplug-capably" not in a.advice
        assert a.advice.endswith(f"no `crashhp upgrade` here: {why}")
        assert (
            "would reload it hotplug-capably"
            in assess(st(True, ZERO, ZERO), daemon, Policy.AUTO, None).advice
        )


def test_render_names_the_kexec_layout() -> None:
    new = KernelState(
        True, MappingProxyType({Subsystem.CPU: ONE, Subsystem.MEMORY: ONE}), layout=Layout.KEXEC_DIR
    )
    report = gather(new, None, LoadedConfig(Config(), ()), "command", None)
    assert report["kernel"]["kexec_layout"] == "kexec-dir"
    assert "  kexec sysfs   /sys/kernel/kexec/ (Linux 6.19 and later)" in render(report)
    old = gather(st(True), None, LoadedConfig(Config(), ()), "command", None)
    assert "kexec_crash_loaded and siblings" in render(old)


def fadump_state(registered: bool, ready: bool) -> KernelState:
    return KernelState(
        False,
        MappingProxyType({Subsystem.CPU: ZERO, Subsystem.MEMORY: ZERO}),
        fadump=Fadump(True, registered, ready),
    )


def test_fadump_is_not_critical() -> None:
    """kexec_crash_loaded reads 0 while fadump protects the machine."""
    a = assess(fadump_state(True, False), RUNNING, Policy.AUTO, None)
    assert a.code is Exit.OK
    assert "re-registers it" in a.headline
    assert assess(fadump_state(True, True), None, Policy.AUTO, None).code is Exit.OK
    assert assess(fadump_state(False, True), None, Policy.AUTO, None).code is Exit.CRITICAL


def test_s390x_says_why_nothing_is_reloaded() -> None:
    a = assess(st(True, ZERO, ZERO), None, Policy.AUTO, None, rules=rules(Arch.S390X))
    assert a.code is Exit.OK
    assert "kdump kernel itself" in a.headline
    assert assess(st(False), None, Policy.AUTO, None, rules=rules(Arch.S390X)).code is Exit.CRITICAL


def test_read_daemon_needs_a_live_daemon(tmp_path: Path) -> None:
    """state.json alone is no daemon: the instance lock says whether one is alive."""
    (tmp_path / "state.json").write_text('{"version": 2, "protection": "protected", "pid": 1}')
    assert read_daemon(tmp_path) is None
    lock = InstanceLock(tmp_path)
    lock.acquire()
    try:
        daemon = read_daemon(tmp_path)
        assert daemon is not None
        assert daemon["protection"] == "protected"
    finally:
        lock.release()
