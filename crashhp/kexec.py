"""Loading the crash kernel with kexec-tools, hotplug-capably where the system allows.

A load over a loaded crash kernel frees the old image inside the syscall, so crashhp
loads without a separate ``kexec -p -u`` first: the window without a crash kernel is
then the syscall's, not the whole kexec-tools run's (see docs/design.md for figures).
Building the argv is pure; gathering the facts it needs is the thin I/O part.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from crashhp import distro, process
from crashhp.config import Kexec, KexecSyscall

# Parameters of the running kernel that must not reach the crash kernel: its own
# reservation, CPU and memory sizing that the small crash environment cannot honour,
# and parameters crashhp appends itself.
DROPPED_PARAMS = frozenset(
    {
        "crashkernel",
        "BOOT_IMAGE",
        "initrd",
        "nr_cpus",
        "maxcpus",
        "possible_cpus",
        "hugepages",
        "hugepagesz",
        "default_hugepagesz",
        "hugetlb_cma",
        "cma",
        "kfence.sample_interval",
        "memhp_default_state",
        "movable_node",
        "mem",
        "memmap",
        "swiotlb",
        "log_buf_len",
        "quiet",
        "splash",
    }
)

KERNEL_CANDIDATES = ("/boot/vmlinuz-{release}", "/boot/vmlinux-{release}", "/boot/Image-{release}")

FLAG_OPTIONS = {
    "file": "--kexec-file-syscall",
    "classic": "--kexec-syscall",
    "auto": "--kexec-syscall-auto",
    "hotplug": "--hotplug",
}


class KexecUnavailable(Exception):
    """crashhp cannot load a crash kernel itself here; the message says why."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the installed kexec-tools and the running kernel offer."""

    program: str
    options: frozenset[str]  # of FLAG_OPTIONS' keys that `kexec --help` lists
    elfcorehdr_size: bool  # /sys/kernel/crash_elfcorehdr_size exists
    lockdown: bool = False  # kernel lockdown (secure boot): kexec_load is refused

    @property
    def classic_hotplug(self) -> bool:
        """kexec_load can be made hotplug-capable (kexec --hotplug)."""
        return self.elfcorehdr_size and "hotplug" in self.options


def effective_syscall(setting: KexecSyscall, caps: Capabilities) -> KexecSyscall:
    """What ``syscall = "auto"`` means here. Pure.

    Both hotplug-capable loads leave the kernel keeping the image current, but
    kexec_load does its work in user space before the syscall frees the old image
    (about 55 ms without a crash kernel in the TCG guest) where kexec_file_load does it
    all after (about 1.1 s). So auto prefers kexec_load with --hotplug, unless lockdown
    refuses kexec_load; without --hotplug support it leaves the choice to kexec -a.
    """
    if setting is not KexecSyscall.AUTO:
        return setting
    if caps.classic_hotplug and not caps.lockdown:
        return KexecSyscall.CLASSIC
    return KexecSyscall.AUTO


def read_lockdown(sysfs: Path = Path("/sys")) -> bool:
    """True when kernel lockdown is active ("[integrity]" or "[confidentiality]")."""
    try:
        text = (sysfs / "kernel" / "security" / "lockdown").read_text()
    except OSError:
        return False  # no securityfs or no lockdown LSM: kexec_load is not refused by it
    return "[" in text and "[none]" not in text


def parse_help(text: str) -> frozenset[str]:
    """The options of FLAG_OPTIONS that a `kexec --help` output offers. Pure."""
    return frozenset(k for k, opt in FLAG_OPTIONS.items() if re.search(rf"{opt}\b", text))


def crash_cmdline(proc_cmdline: str, append: str) -> str:
    """The crash kernel's command line from the running one. Pure."""
    appended = append.split()
    appended_keys = {word.partition("=")[0] for word in appended}
    kept = [
        word
        for word in proc_cmdline.split()
        if word.partition("=")[0] not in DROPPED_PARAMS
        and word.partition("=")[0] not in appended_keys
    ]
    return " ".join([*kept, *appended])


def load_argv(
    caps: Capabilities,
    kernel: str,
    initrd: str | None,
    cmdline: str,
    syscall: KexecSyscall,
    *,
    hotplug: bool,
    program: str | None = None,
    extra: Sequence[str] = (),
    cmdline_option: str = "--append",
) -> tuple[str, ...]:
    """`kexec -p ...` for one load. Pure.

    ``--hotplug`` is passed only for kexec_load, only when both the kernel
    (crash_elfcorehdr_size) and kexec-tools support it: kexec aborts otherwise.
    ``program``, ``extra`` and ``cmdline_option`` come from a distribution's recorded
    command (its kexec path, its other options, its spelling of the command line).
    """
    argv = [program or caps.program, "-p"]
    if syscall is KexecSyscall.FILE:
        argv.append("-s")
    elif syscall is KexecSyscall.CLASSIC:
        argv.append("-c")
    elif "auto" in caps.options:
        argv.append("-a")
    if hotplug and syscall is not KexecSyscall.FILE and caps.classic_hotplug:
        argv.append("--hotplug")
    argv.extend(extra)
    argv.append(f"{cmdline_option}={cmdline}")  # in kdump-config's order
    if initrd:
        argv.append(f"--initrd={initrd}")
    argv.append(kernel)
    return tuple(argv)


def unload_argv(caps: Capabilities) -> tuple[str, ...]:
    return (caps.program, "-p", "-u")  # in this order: `-u -p` would also load


def first_existing(candidates: Iterable[str], release: str) -> str | None:
    for pattern in candidates:
        path = pattern.format(release=release)
        if os.path.exists(path):
            return path
    return None


# ---- the I/O side ------------------------------------------------------------------


def find_program(settings: Kexec) -> str:
    if settings.program.startswith("/"):
        if not os.access(settings.program, os.X_OK):
            raise KexecUnavailable(f"kexec.program {settings.program} is not executable")
        return settings.program
    found = process.which(settings.program)
    if found is None:
        raise KexecUnavailable(f"{settings.program} not found: install kexec-tools")
    return found


def detect(
    settings: Kexec,
    sysfs: Path = Path("/sys"),
    timeout_s: float = 10,
    *,
    program: str | None = None,
) -> Capabilities:
    """Ask kexec-tools what it supports (`kexec --help`) and the kernel what it offers.

    ``program``: the kexec of a recorded command, instead of ``kexec.program``.
    """
    if program is not None:
        settings = settings.model_copy(update={"program": program})
    program = find_program(settings)
    result = process.run([program, "--help"], timeout_s, tail_bytes=1 << 16)
    if result.error is not None or result.timed_out:
        raise KexecUnavailable(f"cannot run {program} --help: {result.describe()}")
    return Capabilities(
        program=program,
        options=parse_help(result.output),
        elfcorehdr_size=(sysfs / "kernel" / "crash_elfcorehdr_size").exists(),
        lockdown=read_lockdown(sysfs),
    )


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """Everything one crash kernel load needs, from the distribution's tool or the config."""

    kernel: str
    initrd: str | None
    cmdline: str
    source: str = "the [kexec] settings"
    program: str | None = None  # the recorded kexec; None = kexec.program
    extra: tuple[str, ...] = ()  # the recorded command's other options
    cmdline_option: str = "--append"
    recorded: tuple[str, ...] | None = None  # the tool's exact command: restores its load
    lock: str | None = None  # the tool's own lock file, held around crashhp's loads

    def argv(self, caps: Capabilities, syscall: KexecSyscall, *, hotplug: bool) -> tuple[str, ...]:
        return load_argv(
            caps,
            self.kernel,
            self.initrd,
            self.cmdline,
            syscall,
            hotplug=hotplug,
            program=self.program,
            extra=self.extra,
            cmdline_option=self.cmdline_option,
        )


def has_own_settings(settings: Kexec) -> bool:
    """The admin named the crash kernel in [kexec]: crashhp loads from those keys alone."""
    return bool(settings.kernel or settings.initrd or settings.cmdline)


def resolve(
    settings: Kexec,
    procfs: Path = Path("/proc"),
    release: str | None = None,
    *,
    root: Path = Path("/"),
    path: str | None = None,
) -> LoadSpec:
    """The crash kernel crashhp loads: the [kexec] keys if the admin set any, else the
    command the distribution's kdump tool ran. Never a guessed initrd or command line.
    """
    if has_own_settings(settings):
        return _from_settings(settings, procfs, release)
    name = distro.tool(root, path)
    if name is None:
        raise KexecUnavailable(
            "no distribution kdump tool (kdump-tools, kdumpctl, kdump) to take the crash "
            "kernel's command from: set kexec.initrd and kexec.cmdline (or kexec.append) "
            "for crashhp's own loads"
        )
    if name != "kdump-tools":
        raise KexecUnavailable(distro.unsupported_reason(name, root))
    try:
        recorded = distro.kdump_tools_command(root, procfs)
    except distro.DumpCommandUnknown as exc:
        raise KexecUnavailable(f"cannot establish kdump-tools' dump command: {exc}") from None
    return LoadSpec(
        kernel=recorded.kernel,
        initrd=recorded.initrd,
        cmdline=recorded.cmdline,
        source=recorded.source,
        # The recorded kexec, unless the admin named another in kexec.program.
        program=recorded.argv[0] if settings.program == Kexec().program else None,
        extra=recorded.extra,
        cmdline_option=recorded.cmdline_option,
        recorded=recorded.argv,
        lock=recorded.lock,
    )


def _from_settings(settings: Kexec, procfs: Path, release: str | None) -> LoadSpec:
    release = release or platform.release()
    kernel = settings.kernel or first_existing(KERNEL_CANDIDATES, release)
    if not kernel or not os.path.exists(kernel):
        raise KexecUnavailable(
            f"no crash kernel image ({settings.kernel or '/boot/vmlinuz-' + release}); "
            "set kexec.kernel"
        )
    if not settings.initrd:
        raise KexecUnavailable(
            "kexec.kernel or kexec.cmdline is set but kexec.initrd is not: crashhp does not "
            "guess the crash kernel's initrd (the ordinary one saves no dump)"
        )
    if not os.path.exists(settings.initrd):
        raise KexecUnavailable(f"kexec.initrd {settings.initrd} does not exist")
    cmdline = settings.cmdline
    if not cmdline:
        try:
            running = (procfs / "cmdline").read_text()
        except OSError as exc:
            raise KexecUnavailable(f"cannot read /proc/cmdline: {exc.strerror}") from None
        cmdline = crash_cmdline(running, settings.append)
    return LoadSpec(kernel=kernel, initrd=settings.initrd, cmdline=cmdline)


def plan_steps(
    settings: Kexec, caps: Capabilities, spec: LoadSpec, *, hotplug: bool | None = None
) -> Sequence[tuple[str, ...]]:
    """The one step of a crashhp load: `kexec -p` straight over the loaded image."""
    use_hotplug = settings.hotplug if hotplug is None else hotplug
    syscall = effective_syscall(settings.syscall, caps) if use_hotplug else settings.syscall
    return (spec.argv(caps, syscall, hotplug=use_hotplug),)
