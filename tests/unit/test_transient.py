"""Transient reload units: the systemd-run argv, its summary, and where systemd can run one."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from crashhp.config import Runner
from crashhp.process import SAFE_PATH
from crashhp.transient import (
    Summary,
    parse_summary,
    plan,
    resolve_runner,
    systemd_available,
    unit_name,
)

KDUMP_CONFIG = ["/usr/sbin/kdump-config", "reload"]


def test_plan_for_kdump_config() -> None:
    p = plan(KDUMP_CONFIG, reload_id="7-2", timeout_s=120)
    assert p.unit == "crashhp-reload-7-2.service"
    assert p.argv == (
        "/usr/bin/systemd-run",
        "--wait",
        "--collect",
        "--no-ask-password",
        "--unit=crashhp-reload-7-2.service",
        "--service-type=exec",
        "--description=crashhp: reload the crash kernel",
        "--property=KillMode=control-group",
        "--property=RuntimeMaxSec=120000ms",
        "--property=TimeoutStopSec=10000ms",
        "--property=LogExtraFields=CRASHHP_RELOAD=7-2",
        f"--setenv=PATH={SAFE_PATH}",
        "--",
        "/usr/sbin/kdump-config",
        "reload",
    )
    assert p.stop_argv == (
        "/usr/bin/systemctl",
        "stop",
        "--no-block",
        "--no-ask-password",
        "crashhp-reload-7-2.service",
    )
    assert p.kill_argv == (
        "/usr/bin/systemctl",
        "kill",
        "--signal=SIGKILL",
        "--no-ask-password",
        "crashhp-reload-7-2.service",
    )
    # The runner's own backstop outlasts RuntimeMaxSec= plus PID 1's SIGTERM->SIGKILL grace.
    assert p.wait_timeout_s == 120 + 10 + 15


def test_the_tool_gets_an_allow_listed_environment_and_a_fixed_path() -> None:
    p = plan(KDUMP_CONFIG, reload_id="x", timeout_s=1, env={"LC_ALL": "C.UTF-8"})
    assert [a for a in p.argv if a.startswith("--setenv=")] == [
        "--setenv=LC_ALL=C.UTF-8",
        f"--setenv=PATH={SAFE_PATH}",
    ]


def test_runtime_limit_is_rounded_up_to_milliseconds() -> None:
    p = plan(KDUMP_CONFIG, reload_id="x", timeout_s=0.0004)
    assert "--property=RuntimeMaxSec=1ms" in p.argv
    p = plan(KDUMP_CONFIG, reload_id="x", timeout_s=2.5)
    assert "--property=RuntimeMaxSec=2500ms" in p.argv


def test_dollars_reach_the_tool_literally() -> None:
    # PID 1 expands $VAR and ${VAR} in ExecStart=, transient units included; $$ is a "$".
    argv = ["/usr/sbin/kexec", "--append=a=$HOME b=${PATH} c=$$"]
    p = plan(argv, reload_id="x", timeout_s=1)
    tail = p.argv[p.argv.index("--") + 1 :]
    assert tail == ("/usr/sbin/kexec", "--append=a=$$HOME b=$${PATH} c=$$$$")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"argv": ["kdump-config", "reload"]}, "absolute path"),
        ({"argv": []}, "absolute path"),
        ({"argv": ["/bin/x", "a\0b"]}, "NUL"),
        ({"reload_id": "../x"}, "reload id"),
        ({"reload_id": ""}, "reload id"),
        ({"reload_id": "a" * 65}, "reload id"),
        ({"timeout_s": 0}, "out of range"),
        ({"timeout_s": float("nan")}, "out of range"),
        ({"env": {"BAD NAME": "x"}}, "cannot be passed"),
        ({"env": {"X": "a\nb"}}, "cannot be passed"),
        ({"description": "100% sure"}, "description"),
    ],
)
def test_plan_refuses(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"argv": KDUMP_CONFIG, "reload_id": "x", "timeout_s": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        plan(**args)  # type: ignore[arg-type]


def test_unit_name() -> None:
    assert unit_name("1234-5") == "crashhp-reload-1234-5.service"
    with pytest.raises(ValueError, match="reload id"):
        unit_name("a.service")


# What systemd-run --wait printed on stderr in the trixie guest (systemd 257) for these
# very argvs: a kexec load that succeeded, /bin/sh -c "exit 3", /bin/sleep 60 killed by
# RuntimeMaxSec=2000ms, and /bin/echo (no invocation ID: systemd-run prints it only when it
# has it before the unit started).
GUEST_KEXEC = (
    (
        "Running as unit: crashhp-reload-manual-kexec.service; "
        "invocation ID: 55df5e876ac246a2a6ae5866d24333fe\n"
    )
    + """\
Finished with result: success
Main processes terminated with: code=exited, status=0/SUCCESS
Service runtime: 984ms
CPU time consumed: 893ms
Memory peak: 14.7M (swap: 0B)
"""
)
GUEST_EXIT3 = """\
Running as unit: crashhp-reload-exit3.service; invocation ID: 8f297fd91180443aa99659005da87c90
Finished with result: exit-code
Main processes terminated with: code=exited, status=3/NOTIMPLEMENTED
Service runtime: 202ms
CPU time consumed: 138ms
Memory peak: 1.7M (swap: 0B)
"""
GUEST_TIMEOUT = """\
Running as unit: crashhp-reload-timeout.service
Finished with result: timeout
Main processes terminated with: code=killed, status=15/TERM
Service runtime: 2.434s
CPU time consumed: 160ms
Memory peak: 2M (swap: 0B)
"""
GUEST_ECHO = """\
Running as unit: crashhp-reload-echo.service
Finished with result: success
Main processes terminated with: code=exited, status=0/SUCCESS
Service runtime: 230ms
CPU time consumed: 166ms
Memory peak: 1.7M (swap: 0B)
"""


def test_parse_summary() -> None:
    assert parse_summary(GUEST_KEXEC) == Summary("success", "55df5e876ac246a2a6ae5866d24333fe")
    exit3 = parse_summary(GUEST_EXIT3)
    assert exit3 is not None
    assert exit3.result == "exit-code"
    assert not exit3.timed_out
    assert exit3.invocation_id == "8f297fd91180443aa99659005da87c90"
    timeout = parse_summary(GUEST_TIMEOUT)
    assert timeout == Summary("timeout", None)
    assert timeout.timed_out
    assert parse_summary(GUEST_ECHO) == Summary("success", None)
    # systemd-run could not even ask PID 1 (no bus, no permission): no unit ran.
    assert parse_summary("Failed to connect to bus: No such file or directory\n") is None


# ---- where a transient unit can run -----------------------------------------------------


@pytest.fixture
def booted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    run, proc = tmp_path / "run", tmp_path / "proc"
    (run / "systemd" / "system").mkdir(parents=True)
    (proc / "1").mkdir(parents=True)
    (proc / "1" / "comm").write_text("systemd\n")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(run / "systemd" / "private"))
    try:
        yield run, proc
    finally:
        sock.close()


def test_systemd_available(booted: tuple[Path, Path]) -> None:
    run, proc = booted
    assert systemd_available(run, proc)


def test_a_pid_namespace_with_another_init_is_not_systemd(booted: tuple[Path, Path]) -> None:
    run, proc = booted
    (proc / "1" / "comm").write_text("nsinit.py\n")
    assert not systemd_available(run, proc)


def test_no_private_socket_or_not_booted_with_systemd(booted: tuple[Path, Path]) -> None:
    run, proc = booted
    (run / "systemd" / "private").unlink()
    (run / "systemd" / "private").write_text("")  # a regular file is not PID 1's socket
    assert not systemd_available(run, proc)
    (run / "systemd" / "private").unlink()
    assert not systemd_available(run, proc)


def test_not_booted_with_systemd(booted: tuple[Path, Path]) -> None:
    run, proc = booted
    (run / "systemd" / "system").rmdir()
    assert not systemd_available(run, proc)


def test_resolve_runner() -> None:
    assert resolve_runner(Runner.AUTO, True) is Runner.TRANSIENT
    assert resolve_runner(Runner.AUTO, False) is Runner.DIRECT
    assert resolve_runner(Runner.DIRECT, True) is Runner.DIRECT
    assert resolve_runner(Runner.TRANSIENT, False) is Runner.TRANSIENT


# ---- the options exist in the oldest systemd crashhp targets (Debian 12: 252) -------------


def _help(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} not installed (make setup installs systemd's tools)")
    return subprocess.run(
        [path, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    ).stdout


def test_this_hosts_systemd_run_knows_every_option_used() -> None:
    p = plan(KDUMP_CONFIG, reload_id="x", timeout_s=1)
    options = {re.sub(r"=.*", "", a) for a in p.argv[1 : p.argv.index("--")]}
    known = set(re.findall(r"(--[a-z-]+)", _help("systemd-run")))
    assert options <= known, options - known
    stop = {a for a in (*p.stop_argv, *p.kill_argv) if a.startswith("--")}
    known = set(re.findall(r"(--[a-z-]+)", _help("systemctl")))
    assert {re.sub(r"=.*", "", a) for a in stop} <= known
