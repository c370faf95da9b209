"""How a reload is done: the configured method as argv steps, and the retry policy."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from crashhp import kexec
from crashhp.config import Config, KexecSyscall, Reload, ReloadMethod
from crashhp.process import SAFE_PATH

# What each distribution's tool calls its own unload-then-load.
TOOL_STEPS: dict[ReloadMethod, tuple[str, ...]] = {
    ReloadMethod.KDUMPCTL: ("kdumpctl", "reload"),  # Fedora, RHEL, CentOS (kdump-utils)
    ReloadMethod.KDUMP_CONFIG: ("kdump-config", "reload"),  # Debian, Ubuntu (kdump-tools)
}


class NoReloadMethod(Exception):
    """No way to reload was configured or found."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The commands one reload runs, in order; each must succeed.

    ``fallback``: what to run at once if this plan fails (an upgrade falls back to
    the way the crash kernel was loaded before, so the machine is never left without).
    """

    method: ReloadMethod
    steps: tuple[tuple[str, ...], ...]
    purpose: str = "reload"  # or "upgrade"
    fallback: Plan | None = None

    def describe(self) -> str:
        return " && ".join(" ".join(step) for step in self.steps)


def which(program: str, path: str | None = None) -> str | None:
    return shutil.which(program, path=path or SAFE_PATH)


def resolve_method(reload: Reload, path: str | None = None) -> ReloadMethod:
    """The method ``auto`` stands for here: the distro tool that is installed."""
    if reload.method is not ReloadMethod.AUTO:
        return reload.method
    for method, (tool, *_) in TOOL_STEPS.items():
        if which(tool, path):
            return method
    raise NoReloadMethod(
        "no kdumpctl or kdump-config found; set reload.method "
        '(for example method = "kexec", or "command" with command = [...])'
    )


def plan(
    config: Config,
    *,
    path: str | None = None,
    sysfs: Path = Path("/sys"),
    procfs: Path = Path("/proc"),
) -> Plan:
    """The configured reload."""
    method = resolve_method(config.reload, path)
    if method is ReloadMethod.COMMAND:
        return Plan(method, (config.reload.command,))
    if method is ReloadMethod.KEXEC:
        caps, spec = _kexec_facts(config, sysfs, procfs)
        return Plan(method, tuple(kexec.plan_steps(config.kexec, caps, spec)))
    tool, *args = TOOL_STEPS[method]
    found = which(tool, path)
    if found is None:
        raise NoReloadMethod(f"reload.method = {method.value!r} but {tool} is not installed")
    return Plan(method, ((found, *args),))


def upgrade_plan(
    config: Config,
    *,
    path: str | None = None,
    sysfs: Path = Path("/sys"),
    procfs: Path = Path("/proc"),
) -> Plan:
    """A hotplug-capable load, falling back to the configured reload if it fails.

    kexec_file_load images and kexec_load images with --hotplug are kept current by
    the kernel. kexec_load with --hotplug needs kexec-tools' --hotplug and the kernel's
    crash_elfcorehdr_size, and is what ``syscall = "auto"`` picks where lockdown allows
    (its window without a crash kernel is the shorter); otherwise kexec_file_load (-s).
    """
    caps, spec = _kexec_facts(config, sysfs, procfs)
    settings = config.kexec
    if settings.syscall is KexecSyscall.CLASSIC and not caps.classic_hotplug:
        missing = (
            "kexec-tools without --hotplug"
            if caps.elfcorehdr_size
            else ("no /sys/kernel/crash_elfcorehdr_size")
        )
        raise NoReloadMethod(f"kexec_load cannot be made hotplug-capable here ({missing})")
    syscall = kexec.effective_syscall(settings.syscall, caps)
    if syscall is KexecSyscall.AUTO:
        syscall = KexecSyscall.FILE  # -a could fall back to a kexec_load without the flag
    steps = (kexec.load_argv(caps, spec.kernel, spec.initrd, spec.cmdline, syscall, hotplug=True),)
    try:
        previous = plan(config, path=path, sysfs=sysfs, procfs=procfs)
    except NoReloadMethod:
        previous = None
    if previous is None or previous.method is ReloadMethod.KEXEC:
        # The way it was loaded before: kexec_load without the flag.
        previous = Plan(
            ReloadMethod.KEXEC,
            (
                kexec.load_argv(
                    caps,
                    spec.kernel,
                    spec.initrd,
                    spec.cmdline,
                    KexecSyscall.CLASSIC,
                    hotplug=False,
                ),
            ),
        )
    return Plan(ReloadMethod.KEXEC, steps, purpose="upgrade", fallback=previous)


def _kexec_facts(
    config: Config, sysfs: Path, procfs: Path
) -> tuple[kexec.Capabilities, kexec.LoadSpec]:
    try:
        return kexec.detect(config.kexec, sysfs), kexec.resolve(config.kexec, procfs)
    except kexec.KexecUnavailable as exc:
        raise NoReloadMethod(str(exc)) from None


def backoff_s(reload: Reload, attempt: int) -> float:
    """Delay before retry number ``attempt`` (1-based): doubling, capped."""
    delay: float = reload.backoff_initial_s * 2.0 ** max(0, attempt - 1)
    return min(delay, reload.backoff_max_s)
