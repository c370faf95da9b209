"""The transient runner on real processes: a stand-in systemd-run and systemctl that behave
as PID 1's do (start the unit's command, print the summary lines systemd-run prints)."""

from __future__ import annotations

import select
import sys
import textwrap
from pathlib import Path

import pytest

from crashhp import process, runners, transient
from crashhp.config import Config, Runner
from crashhp.process import DirectRunner, Result

FAKE_SYSTEMD_RUN = textwrap.dedent(
    """\
    import os, subprocess, sys
    args = sys.argv[1:]
    cut = args.index("--")
    options, command = args[:cut], [a.replace("$$", "$") for a in args[cut + 1:]]
    unit = next(o.split("=", 1)[1] for o in options if o.startswith("--unit="))
    env = dict(o.split("=", 1)[1].split("=", 1) for o in options if o.startswith("--setenv="))
    if os.path.exists(sys.argv[0] + ".refuse"):
        print("Failed to start transient service unit: Access denied", file=sys.stderr)
        sys.exit(1)
    print(f"Running as unit: {unit}; invocation ID: {'a' * 32}", file=sys.stderr)
    code = subprocess.run(command, env=env).returncode
    result = "success" if code == 0 else "exit-code"
    print(f"Finished with result: {result}", file=sys.stderr)
    sys.exit(code)
    """
)
FAKE_SYSTEMCTL = (
    'import sys\nopen(sys.argv[0] + ".log", "a").write(" ".join(sys.argv[1:]) + "\\n")\n'
)


def stand_in(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def runner(tmp_path: Path) -> runners.TransientRunner:
    return runners.TransientRunner(
        systemd_run=stand_in(tmp_path, "systemd-run", FAKE_SYSTEMD_RUN),
        systemctl=stand_in(tmp_path, "systemctl", FAKE_SYSTEMCTL),
    )


def finish(started: process.Process | Result, timeout_s: float = 10.0) -> Result:
    """Wait on the process' fd as the service's loop does, then reap it."""
    assert not isinstance(started, Result), started
    poller = select.poll()
    poller.register(started.fileno(), select.POLLIN)
    assert poller.poll(timeout_s * 1000), "still running"
    return started.finish()


def test_a_step_runs_as_its_unit_and_reports_the_tools_status(
    runner: runners.TransientRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    ok = finish(runner.start(["/usr/bin/touch", str(marker)], 30))
    assert ok.ok, ok
    assert marker.exists()
    assert ok.argv == ("/usr/bin/touch", str(marker)), "the tool's argv, not systemd-run's"
    assert "journalctl -u crashhp-reload-" in ok.output
    failed = finish(runner.start(["/bin/sh", "-c", "exit 3"], 30))
    assert failed.returncode == 3
    assert not failed.ok
    assert failed.error is None


def test_the_tool_gets_the_allow_listed_environment_and_literal_dollars(
    runner: runners.TransientRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    out = tmp_path / "env"
    script = f'env > {out}; echo "$1" >> {out}'
    result = finish(runner.start(["/bin/sh", "-c", script, "sh", "$HOME"], 30))
    assert result.ok, result
    lines = out.read_text().splitlines()
    assert "LANG=C.UTF-8" in lines
    assert f"PATH={process.SAFE_PATH}" in lines
    assert not any(line.startswith("NOTIFY_SOCKET=") for line in lines)
    assert lines[-1] == "$HOME", "an argument reached the tool expanded"


def test_a_unit_systemd_run_cannot_start_is_an_error(
    runner: runners.TransientRunner, tmp_path: Path
) -> None:
    (tmp_path / "systemd-run.refuse").touch()
    result = finish(runner.start(["/bin/true"], 30))
    assert not result.ok
    assert result.error == "systemd-run: Failed to start transient service unit: Access denied"


def test_kill_stops_the_unit_through_pid1_and_counts_as_a_timeout(
    runner: runners.TransientRunner, tmp_path: Path
) -> None:
    started = runner.start(["/bin/sleep", "60"], 30)
    assert not isinstance(started, Result)
    started.kill()
    result = started.finish()
    assert result.timed_out
    assert result.returncode is None
    calls = (tmp_path / "systemctl.log").read_text().splitlines()
    assert calls[0].startswith("kill --signal=SIGKILL")
    assert "crashhp-reload-" in calls[0]
    assert calls[1].startswith("stop --no-block")


def test_a_relative_program_is_refused_before_anything_runs(
    runner: runners.TransientRunner,
) -> None:
    result = runner.start(["kexec", "-p"], 30)
    assert isinstance(result, Result)
    assert result.error == "the program must be an absolute path"


@pytest.mark.parametrize(
    ("setting", "available", "expected"),
    [
        (Runner.AUTO, True, runners.TransientRunner),
        (Runner.AUTO, False, DirectRunner),
        (Runner.TRANSIENT, False, runners.TransientRunner),
        (Runner.DIRECT, True, DirectRunner),
    ],
)
def test_the_runner_follows_reload_runner(
    monkeypatch: pytest.MonkeyPatch, setting: Runner, available: bool, expected: type
) -> None:
    monkeypatch.setattr(transient, "systemd_available", lambda: available)
    config = Config.model_validate({"reload": {"runner": setting.value}})
    assert type(runners.for_config(config)) is expected


# ---- direct steps under crashhp.service: no CAP_SYS_BOOT, no reload -------------------

BOOT = 1 << runners.CAP_SYS_BOOT
NET_ADMIN = 1 << 12


def test_direct_without_cap_sys_boot_under_systemd_is_named() -> None:
    said = runners.direct_unprivileged(Runner.DIRECT, under_systemd=True, cap_eff=NET_ADMIN)
    assert said is not None
    assert "\n" not in said
    assert "CAP_SYS_BOOT" in said
    assert runners.DIRECT_DROPIN in said
    assert 'reload.runner = "auto"' in said


@pytest.mark.parametrize(
    ("runner", "under_systemd", "cap_eff"),
    [
        (Runner.DIRECT, True, NET_ADMIN | BOOT),  # the example drop-in restored it
        (Runner.DIRECT, True, (1 << 41) - 1),  # every capability (the old unit, or none)
        (Runner.DIRECT, False, 0),  # a container or a test host: its privileges, its call
        (Runner.DIRECT, True, None),  # unknown: no guess
        (Runner.TRANSIENT, True, NET_ADMIN),  # PID 1 gives the step its privileges
    ],
)
def test_direct_unprivileged_only_then(runner: Runner, under_systemd: bool, cap_eff: int) -> None:
    assert runners.direct_unprivileged(runner, under_systemd=under_systemd, cap_eff=cap_eff) is None


def test_effective_capabilities_from_proc_status(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    status = tmp_path / "self" / "status"
    status.write_text("Name:\tcrashhp\nCapInh:\t0000000000000000\nCapEff:\t0000000000001000\n")
    assert runners.effective_capabilities(tmp_path) == NET_ADMIN
    status.write_text("Name:\tcrashhp\n")
    assert runners.effective_capabilities(tmp_path) is None
    status.unlink()
    assert runners.effective_capabilities(tmp_path) is None
    assert isinstance(runners.effective_capabilities(), int)  # this process, for real


def test_direct_check_reads_only_for_a_direct_runner(tmp_path: Path) -> None:
    direct = Config.model_validate({"reload": {"runner": "direct"}})
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text("CapEff:\t0000000000001000\n")
    said = runners.direct_check(direct, under_systemd=True, procfs=tmp_path)
    assert said is not None
    assert "CAP_SYS_BOOT" in said
    assert runners.direct_check(direct, under_systemd=False, procfs=tmp_path) is None
    (tmp_path / "self" / "status").write_text(f"CapEff:\t{NET_ADMIN | BOOT:016x}\n")
    assert runners.direct_check(direct, under_systemd=True, procfs=tmp_path) is None
