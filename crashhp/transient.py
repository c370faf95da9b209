"""Reload steps as transient systemd services: the argv, never the running of it.

A reload command (``kdump-config reload``, ``kdumpctl reload``, ``kexec -p ...``) that
runs as a transient unit of its own (``systemd-run --wait``) is supervised by PID 1: its
cgroup is killed when ``RuntimeMaxSec=`` expires (no process-group reuse, no orphan when
crashhp dies), its output and its start and end lines are in the journal under its own
unit, and it has none of crashhp's sandbox in its way (an SSH or NFS dump target, an
initrd rebuild). crashhp.service itself then keeps almost no privilege.

Everything here is pure: the process runner (``crashhp.process``) runs what this builds.
As root, ``systemd-run`` and ``systemctl`` talk to PID 1 over its private socket
(``/run/systemd/private``), so no D-Bus daemon is needed.
"""

from __future__ import annotations

import math
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from crashhp.config import Runner
from crashhp.process import SAFE_PATH

SYSTEMD_RUN = "/usr/bin/systemd-run"
SYSTEMCTL = "/usr/bin/systemctl"
UNIT_PREFIX = "crashhp-reload-"

# After RuntimeMaxSec= PID 1 sends SIGTERM to the cgroup, and SIGKILL this much later.
STOP_GRACE_S = 10.0
# systemd-run --wait itself returns after the unit is gone: the caller's own timeout for it.
WAIT_MARGIN_S = 15.0
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class TransientReload:
    """One reload step as a transient unit: what to run, how long to wait, how to stop it."""

    unit: str  # crashhp-reload-<id>.service
    argv: tuple[str, ...]  # systemd-run --wait ... -- the tool's argv
    stop_argv: tuple[str, ...]  # systemctl stop --no-block UNIT: SIGTERM, SIGKILL after grace
    kill_argv: tuple[str, ...]  # systemctl kill --signal=SIGKILL UNIT: the whole cgroup now
    wait_timeout_s: float  # the caller's backstop for the systemd-run client


def unit_name(reload_id: str) -> str:
    if not _ID.fullmatch(reload_id):
        raise ValueError(f"reload id {reload_id!r}: 1-64 of A-Z a-z 0-9 _ -")
    return f"{UNIT_PREFIX}{reload_id}.service"


def _no_expansion(arg: str) -> str:
    """PID 1 expands $VAR and ${VAR} in ExecStart= (also of transient units; systemd-run's
    --expand-environment=no needs systemd 254, Debian 12 has 252); "$$" is a literal "$"."""
    if "\0" in arg:
        raise ValueError("arguments may not contain NUL bytes")
    return arg.replace("$", "$$")


def _duration(seconds: float) -> str:
    return f"{math.ceil(seconds * 1000)}ms"


def plan(
    argv: Sequence[str],
    *,
    reload_id: str,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    description: str = "crashhp: reload the crash kernel",
    systemd_run: str = SYSTEMD_RUN,
    systemctl: str = SYSTEMCTL,
) -> TransientReload:
    """The argv that runs ``argv`` as ``crashhp-reload-<reload_id>.service`` and waits.

    ``env`` is the whole environment the tool gets besides PATH (PID 1 gives a transient
    unit none of crashhp's). The exit status of ``systemd-run --wait`` is the tool's (1
    on a timeout, 255 on a signal); ``parse_summary`` of its output tells which.
    """
    if not argv or not argv[0].startswith("/"):
        raise ValueError("the program must be an absolute path")
    if not (0 < timeout_s <= 86_400):
        raise ValueError(f"timeout_s {timeout_s!r} out of range")
    if "%" in description or "\n" in description:
        raise ValueError("description may not contain % or a line break")
    unit = unit_name(reload_id)
    environment = {"PATH": SAFE_PATH, **(env or {})}
    for name, value in environment.items():
        if not _ENV_NAME.fullmatch(name) or "\0" in value or "\n" in value:
            raise ValueError(f"environment variable {name!r} cannot be passed")
    command = (
        systemd_run,
        "--wait",
        "--collect",
        "--no-ask-password",
        f"--unit={unit}",
        "--service-type=exec",
        f"--description={description}",
        "--property=KillMode=control-group",
        f"--property=RuntimeMaxSec={_duration(timeout_s)}",
        f"--property=TimeoutStopSec={_duration(STOP_GRACE_S)}",
        # journalctl CRASHHP_RELOAD=<id> finds the tool's own lines.
        f"--property=LogExtraFields=CRASHHP_RELOAD={reload_id}",
        *(f"--setenv={name}={value}" for name, value in sorted(environment.items())),
        "--",
        *(_no_expansion(arg) for arg in argv),
    )
    return TransientReload(
        unit=unit,
        argv=command,
        stop_argv=(systemctl, "stop", "--no-block", "--no-ask-password", unit),
        kill_argv=(systemctl, "kill", "--signal=SIGKILL", "--no-ask-password", unit),
        wait_timeout_s=timeout_s + STOP_GRACE_S + WAIT_MARGIN_S,
    )


@dataclass(frozen=True, slots=True)
class Summary:
    """What ``systemd-run --wait`` said about the finished unit (on standard error)."""

    result: str  # success | exit-code | signal | timeout | core-dump | watchdog | ...
    invocation_id: str | None  # systemd >= 254 prints it; journalctl _SYSTEMD_INVOCATION_ID=

    @property
    def timed_out(self) -> bool:
        return self.result == "timeout"


_RUNNING = re.compile(r"^Running as unit: (\S+?);? *(?:invocation ID: ([0-9a-f]{32}))?$", re.M)
_FINISHED = re.compile(r"^Finished with result: ([a-z-]+)$", re.M)


def parse_summary(output: str) -> Summary | None:
    """The unit's result from systemd-run's output; None if it never started the unit."""
    finished = _FINISHED.search(output)
    if finished is None:
        return None
    running = _RUNNING.search(output)
    return Summary(finished.group(1), running.group(2) if running else None)


def systemd_available(run: Path = Path("/run"), procfs: Path = Path("/proc")) -> bool:
    """systemd is PID 1 here and its private socket is there to ask it for units.

    ``/run/systemd/system`` is sd_booted()'s test; a private PID namespace (the netlink and
    fault test hosts, most containers) has another PID 1, whose comm is checked too.
    """
    try:
        booted = (run / "systemd" / "system").is_dir()
        private = stat.S_ISSOCK((run / "systemd" / "private").stat().st_mode)
        comm = (procfs / "1" / "comm").read_text().strip()
    except OSError:
        return False
    return booted and private and comm == "systemd"


def resolve_runner(setting: Runner, available: bool) -> Runner:
    """``auto`` becomes transient where systemd can run the unit, direct elsewhere."""
    if setting is Runner.AUTO:
        return Runner.TRANSIENT if available else Runner.DIRECT
    return setting
