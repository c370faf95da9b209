"""How a reload is done: the configured method as argv steps, and the retry policy.

crashhp's own loads (method "kexec", upgrades) take the crash kernel's command from the
distribution's kdump tool or from explicit [kexec] keys (see kexec.resolve, distro.py);
on Debian they, and `kdump-config reload`, run under kdump-tools' own lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crashhp import distro, kexec
from crashhp.config import Config, KexecSyscall, Reload, ReloadMethod
from crashhp.process import which

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
    root: Path = Path("/"),
) -> Plan:
    """The configured reload. ``root``: where /etc and the tools' records are (tests)."""
    method = resolve_method(config.reload, path)
    if method is ReloadMethod.COMMAND:
        return Plan(method, (config.reload.command,))
    if method is ReloadMethod.KEXEC:
        caps, spec = _kexec_facts(config, sysfs, procfs, root, path)
        steps = kexec.plan_steps(config.kexec, caps, spec)
        return Plan(method, tuple(_locked(step, spec.lock, config, path) for step in steps))
    tool, *args = TOOL_STEPS[method]
    found = which(tool, path)
    if found is None:
        raise NoReloadMethod(f"reload.method = {method.value!r} but {tool} is not installed")
    step = (found, *args)
    if method is ReloadMethod.KDUMP_CONFIG:
        # `kdump-config reload` takes no lock of its own, but its udev rule's
        # `try-reload` flocks $KDUMP_COREDIR/kdump_lock: hold that one too, so that the
        # two never interleave their unloads and loads.
        step = _locked(step, _kdump_tools_lock(root), config, path)
    return Plan(method, (step,))


def _kdump_tools_lock(root: Path) -> str:
    try:
        return distro.read_kdump_tools(root).lock
    except distro.DumpCommandUnknown:
        # kdump-config (a shell) still reads the file; its default is the best we know.
        return distro.KdumpTools({}).lock


def _locked(
    step: tuple[str, ...], lock: str | None, config: Config, path: str | None
) -> tuple[str, ...]:
    """``step`` under the distribution tool's lock file (flock(1), util-linux)."""
    flock = which("flock", path) if lock else None
    if lock is None or flock is None:
        return step
    return (flock, "-w", f"{config.reload.timeout_s:g}", lock, *step)


def upgrade_plan(
    config: Config,
    *,
    path: str | None = None,
    sysfs: Path = Path("/sys"),
    procfs: Path = Path("/proc"),
    root: Path = Path("/"),
) -> Plan:
    """A hotplug-capable load, falling back to the previous load if it fails.

    kexec_file_load images and kexec_load images with --hotplug are kept current by
    the kernel. kexec_load with --hotplug needs kexec-tools' --hotplug and the kernel's
    crash_elfcorehdr_size, and is what ``syscall = "auto"`` picks where lockdown allows
    (its window without a crash kernel is the shorter); otherwise kexec_file_load (-s).

    The load is the distribution tool's own command with only those options changed
    (or the admin's [kexec] keys); NoReloadMethod where neither can be established.
    The fallback is the tool's recorded command exactly as it ran, else the configured
    reload by the tool, else the [kexec] keys' load without --hotplug.
    """
    caps, spec = _kexec_facts(config, sysfs, procfs, root, path)
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
    steps = (_locked(spec.argv(caps, syscall, hotplug=True), spec.lock, config, path),)
    previous: Plan | None
    if spec.recorded is not None:
        # Exactly the load the distribution's tool made, as it recorded it.
        previous = Plan(ReloadMethod.KEXEC, (_locked(spec.recorded, spec.lock, config, path),))
    else:
        try:
            previous = plan(config, path=path, sysfs=sysfs, procfs=procfs, root=root)
        except NoReloadMethod:
            previous = None
        if previous is None or previous.method is ReloadMethod.KEXEC:
            # The admin's [kexec] keys, loaded the way that left crash_hotplug at 0.
            previous = Plan(
                ReloadMethod.KEXEC, (spec.argv(caps, KexecSyscall.CLASSIC, hotplug=False),)
            )
    return Plan(ReloadMethod.KEXEC, steps, purpose="upgrade", fallback=previous)


def upgrade_unavailable(
    config: Config,
    *,
    path: str | None = None,
    sysfs: Path = Path("/sys"),
    procfs: Path = Path("/proc"),
    root: Path = Path("/"),
) -> str | None:
    """Why crashhp cannot upgrade faithfully here, or None if it can."""
    try:
        upgrade_plan(config, path=path, sysfs=sysfs, procfs=procfs, root=root)
    except NoReloadMethod as exc:
        return str(exc)
    return None


def _kexec_facts(
    config: Config, sysfs: Path, procfs: Path, root: Path, path: str | None
) -> tuple[kexec.Capabilities, kexec.LoadSpec]:
    try:
        spec = kexec.resolve(config.kexec, procfs, root=root, path=path)
        program = str(distro.under(root, spec.program)) if spec.program else None
        return kexec.detect(config.kexec, sysfs, program=program), spec
    except kexec.KexecUnavailable as exc:
        raise NoReloadMethod(str(exc)) from None


def backoff_s(reload: Reload, attempt: int) -> float:
    """Delay before retry number ``attempt`` (1-based): doubling, capped."""
    delay: float = reload.backoff_initial_s * 2.0 ** max(0, attempt - 1)
    return min(delay, reload.backoff_max_s)
