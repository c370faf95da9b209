"""The distribution's own crash kernel command, read from its kdump tool, never guessed.

A crash kernel only saves a dump if it boots the distribution's dump path: Debian's
kdump-tools appends ``systemd.unit=kdump-tools-dump.service`` and loads its own initrd
(``/var/lib/kdump/initrd.img``); Fedora's kdumpctl builds a dracut initrd for the dump
target and edits the command line. crashhp's own loads (``reload.method = "kexec"``,
upgrades, their fallback) therefore take the command from the tool:

- **Debian, Ubuntu (kdump-tools):** ``kdump-config load`` writes the exact kexec command
  it ran to ``$KDUMP_COREDIR/kexec_cmd``. crashhp reuses it (kernel, initrd, command line,
  ``KDUMP_KEXEC_ARGS``) after checking it belongs to this boot and agrees with
  ``/etc/default/kdump-tools``; only the syscall options change (``-c --hotplug`` or
  ``-s``). A failed upgrade falls back to the recorded command itself.
- **Fedora, RHEL (kdumpctl) and openSUSE (kdump):** the tool computes the command line at
  each load (dump target, watchdog and boot-CPU parameters) and records no command.
  crashhp does not imitate that; it says which of the tool's settings makes the tool's
  own load hotplug-capable instead.

The config files are shell, but nothing here runs a shell: ``crashhp.shellfiles`` reads
plain ``NAME=value`` lines and refuses what only a shell could evaluate.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from crashhp.process import which
from crashhp.shellfiles import (
    DumpCommandUnknown,
    ShellFileError,
    parse_assignments,
    read_text,
    split_command,
)

__all__ = [
    "DumpCommandUnknown",
    "KdumpTools",
    "Recorded",
    "ShellFileError",
    "kdump_tools_command",
    "parse_assignments",
    "read_text",
    "split_command",
]

# kdump-config's defaults (kdump-tools 1.10.7, trixie), used where its settings file is
# silent. `${VAR:=default}` means an empty value gets the default too.
KDUMP_TOOLS_SETTINGS = "/etc/default/kdump-tools"
KDUMP_TOOLS_COREDIR = "/var/crash"
KDUMP_TOOLS_APPEND = (
    "reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb"
)
FEDORA_SETTINGS = "/etc/sysconfig/kdump"  # kdumpctl's, and openSUSE's

# kexec-tools options that choose the syscall or its hotplug support: crashhp chooses
# them itself for its loads; everything else of a recorded command is kept.
SYSCALL_OPTIONS = frozenset(
    {
        "-s",
        "--kexec-file-syscall",
        "-c",
        "--kexec-syscall",
        "-a",
        "--kexec-syscall-auto",
        "--hotplug",
    }
)
_PANIC = frozenset({"-p", "--load-panic"})
_CMDLINE = ("--command-line", "--append")
_INITRD = ("--initrd", "--ramdisk")
# What kdump-config's sed takes out of /proc/cmdline (`(crashkernel|hugepages|...)=`).
_SED_REMOVED = frozenset({"crashkernel", "hugepages", "hugepagesz", "abm"})
# kdump-tools loads early in boot, maybe before the clock is stepped (NTP, a drifting RTC),
# which moves /proc/stat's btime: a record this much older than btime still counts.
CLOCK_STEP_SLACK_S = 120


def under(root: Path, path: str) -> Path:
    """An absolute path of the system, inside the tree at ``root`` (tests use tmp_path)."""
    return root / path.lstrip("/")


# ---- the recorded command ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """A kexec command the distribution's tool ran, taken apart."""

    argv: tuple[str, ...]  # exactly as recorded: what restores the tool's load
    kernel: str
    initrd: str | None
    cmdline: str
    cmdline_option: str  # "--command-line" or "--append", as recorded
    extra: tuple[str, ...]  # every other option, in order (e.g. KDUMP_KEXEC_ARGS)
    source: str  # the file it came from
    lock: str | None = None  # the file the tool's own runs flock, if any

    def words(self) -> list[str]:
        return self.cmdline.split()


def parse_recorded(words: Sequence[str], source: str) -> Recorded:
    """Take a recorded ``kexec -p ...`` apart. Pure; DumpCommandUnknown if it is not one."""
    if not words or Path(words[0]).name != "kexec":
        raise DumpCommandUnknown(f"{source}: not a kexec command")
    if len(words) < 2 or words[-1].startswith("-"):
        raise DumpCommandUnknown(f"{source}: no kernel image at the end of the command")
    panic = False
    cmdline: tuple[str, str] | None = None
    initrd: str | None = None
    extra: list[str] = []
    rest = list(words[1:-1])
    while rest:
        word = rest.pop(0)
        name, eq, value = word.partition("=")
        if word in _PANIC:
            panic = True
        elif word in SYSCALL_OPTIONS:
            pass  # crashhp chooses these for its loads
        elif name in _CMDLINE or name in _INITRD:
            if not eq:
                if not rest:
                    raise DumpCommandUnknown(f"{source}: {word} without a value")
                value = rest.pop(0)
            if name in _CMDLINE:
                cmdline = (name, value)
            else:
                initrd = value
        elif re.fullmatch(r"-[A-Za-z]{2,}", word) and set(word[1:]) & set("pscau"):
            raise DumpCommandUnknown(f"{source}: combined short options {word!r}")
        elif word in ("-u", "--unload", "-e", "--exec", "-l", "--load"):
            raise DumpCommandUnknown(f"{source}: {word} is not a crash kernel load")
        else:
            extra.append(word)
    if not panic:
        raise DumpCommandUnknown(f"{source}: not a crash kernel load (no -p)")
    if cmdline is None:
        raise DumpCommandUnknown(f"{source}: no --command-line")
    return Recorded(
        argv=tuple(words),
        kernel=words[-1],
        initrd=initrd,
        cmdline=cmdline[1],
        cmdline_option=cmdline[0],
        extra=tuple(extra),
        source=source,
    )


# ---- Debian, Ubuntu: kdump-tools -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class KdumpTools:
    """kdump-config's settings, with its defaults where the file is silent."""

    settings: Mapping[str, str]

    def _get(self, key: str, default: str) -> str:
        return self.settings.get(key) or default

    @property
    def coredir(self) -> str:
        return self._get("KDUMP_COREDIR", KDUMP_TOOLS_COREDIR)

    @property
    def record(self) -> str:
        """Where kdump-config writes the kexec command it ran (``$KDUMP_COREDIR/kexec_cmd``)."""
        return f"{self.coredir.rstrip('/')}/kexec_cmd"

    @property
    def lock(self) -> str:
        """What ``kdump-config try-reload`` flocks (``$KDUMP_COREDIR/kdump_lock``)."""
        return f"{self.coredir.rstrip('/')}/kdump_lock"

    @property
    def append(self) -> str:
        return self._get("KDUMP_CMDLINE_APPEND", KDUMP_TOOLS_APPEND)


def read_kdump_tools(root: Path = Path("/")) -> KdumpTools:
    """/etc/default/kdump-tools; an absent file means kdump-config's defaults."""
    path = under(root, KDUMP_TOOLS_SETTINGS)
    if not path.exists():
        return KdumpTools({})
    text = read_text(path, KDUMP_TOOLS_SETTINGS)
    return KdumpTools(parse_assignments(text, KDUMP_TOOLS_SETTINGS))


def check_recorded(recorded: Recorded, tools: KdumpTools, proc_cmdline: str) -> None:
    """The record is what kdump-config builds in this boot from today's settings. Pure.

    kdump-config ends the command line with KDUMP_CMDLINE_APPEND (whose
    ``systemd.unit=kdump-tools-dump.service`` is what saves the dump), begins it with
    KDUMP_CMDLINE or else with this boot's /proc/cmdline less crashkernel=, hugepages=,
    hugepagesz= and abm=, and adds KDUMP_KEXEC_ARGS as they are. A record that
    disagrees was made under other settings or another boot: its dump path is not the
    admin's current one, so crashhp does not repeat it.
    """
    advice = "run `kdump-config reload` so that it records a load under today's settings"
    append = tools.append.split()
    words = recorded.words()
    if words[len(words) - len(append) :] != append:
        raise DumpCommandUnknown(
            f"{recorded.source}: its command line does not end with KDUMP_CMDLINE_APPEND "
            f"({' '.join(append)!r}) of {KDUMP_TOOLS_SETTINGS}; {advice}"
        )
    cmdline = tools.settings.get("KDUMP_CMDLINE", "")
    if cmdline and words != [*cmdline.split(), *append]:
        raise DumpCommandUnknown(
            f"{recorded.source}: its command line is not KDUMP_CMDLINE plus "
            f"KDUMP_CMDLINE_APPEND of {KDUMP_TOOLS_SETTINGS}; {advice}"
        )
    running = [
        w for w in proc_cmdline.split() if w.partition("=")[0] not in _SED_REMOVED or "=" not in w
    ]
    if not cmdline and words != [*running, *append]:
        raise DumpCommandUnknown(
            f"{recorded.source}: its command line is not this boot's /proc/cmdline (less "
            f"crashkernel= and the like) plus KDUMP_CMDLINE_APPEND; {advice}"
        )
    args = tools.settings.get("KDUMP_KEXEC_ARGS", "").split()
    kept = [a for a in args if a not in SYSCALL_OPTIONS and a not in _PANIC]
    if not _in_order(kept, recorded.extra):
        raise DumpCommandUnknown(
            f"{recorded.source}: KDUMP_KEXEC_ARGS of {KDUMP_TOOLS_SETTINGS} "
            f"({' '.join(args)!r}) are not in it; {advice}"
        )


def _in_order(needles: Sequence[str], haystack: Sequence[str]) -> bool:
    n = len(needles)
    return n == 0 or any(
        list(haystack[i : i + n]) == list(needles) for i in range(len(haystack) - n + 1)
    )


def boot_time(procfs: Path = Path("/proc")) -> float | None:
    """The wall-clock time this system booted (``btime`` of /proc/stat)."""
    try:
        for line in (procfs / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def kdump_tools_command(root: Path = Path("/"), procfs: Path = Path("/proc")) -> Recorded:
    """The command kdump-config ran for the crash kernel loaded now, checked.

    DumpCommandUnknown if there is none from this boot, or it cannot be read without a
    shell, or it disagrees with /etc/default/kdump-tools, or its files are gone.
    """
    tools = read_kdump_tools(root)
    shown = tools.record
    path = under(root, shown)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        raise DumpCommandUnknown(
            f"kdump-tools recorded no kexec command ({shown} is missing): "
            "kdump-config has not loaded a crash kernel here"
        ) from None
    except OSError as exc:
        raise DumpCommandUnknown(f"{shown}: {exc.strerror or exc}") from None
    booted = boot_time(procfs)
    if booted is None:
        raise DumpCommandUnknown("cannot read the boot time (btime of /proc/stat)")
    if mtime < booted - CLOCK_STEP_SLACK_S:
        raise DumpCommandUnknown(
            f"{shown} was written before this boot: kdump-config has not loaded "
            "a crash kernel since"
        )
    recorded = parse_recorded(split_command(read_text(path, shown), shown), shown)
    try:
        proc_cmdline = (procfs / "cmdline").read_text()
    except OSError as exc:
        raise DumpCommandUnknown(f"cannot read /proc/cmdline: {exc.strerror}") from None
    check_recorded(recorded, tools, proc_cmdline)
    recorded = dataclasses.replace(recorded, lock=tools.lock)
    for what, file in (("kernel", recorded.kernel), ("initrd", recorded.initrd)):
        if file is not None and not under(root, file).exists():
            raise DumpCommandUnknown(f"{shown}: its {what} {file} no longer exists")
    return recorded


# ---- which tool, and what the others need ---------------------------------------------


def tool(root: Path = Path("/"), path: str | None = None) -> str | None:
    """The distribution's kdump tool installed here, by name, or None."""
    if which("kdump-config", path) or under(root, KDUMP_TOOLS_SETTINGS).exists():
        return "kdump-tools"
    if which("kdumpctl", path):
        return "kdumpctl"
    if which("kdumptool", path) or under(root, "usr/lib/kdump/load.sh").exists():
        return "openSUSE kdump"
    return None


def unsupported_reason(name: str, root: Path = Path("/")) -> str:
    """Why crashhp does not load for ``name`` itself, and the tool's own way. Pure-ish."""
    key = "KEXEC_ARGS" if name == "kdumpctl" else "KEXEC_OPTIONS"
    restart = "kdumpctl restart" if name == "kdumpctl" else "systemctl restart kdump"
    current = ""
    settings = under(root, FEDORA_SETTINGS)
    if settings.exists():
        try:
            text = read_text(settings, FEDORA_SETTINGS)
            current = f" (now {parse_assignments(text, FEDORA_SETTINGS).get(key, '')!r})"
        except DumpCommandUnknown as exc:
            current = f" ({exc})"
    return (
        f"{name} builds the crash kernel's command line at each load and records no "
        "command crashhp could repeat; to make its own load hotplug-capable, add -s "
        f"(or -c --hotplug) to {key} in {FEDORA_SETTINGS}{current} and run `{restart}`"
    )
