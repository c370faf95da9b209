"""The process edge, on real processes: exit codes, output, timeouts, process groups."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from crashhp import process


def test_success_and_output() -> None:
    result = process.run([sys.executable, "-c", "print('hello'); import sys; sys.exit(0)"], 10)
    assert result.ok
    assert result.output == "hello"
    assert result.returncode == 0


def test_failure_keeps_the_tail_of_stderr() -> None:
    code = (
        "import sys; print('x' * 10000, file=sys.stderr); "
        "print('the end', file=sys.stderr); sys.exit(3)"
    )
    result = process.run([sys.executable, "-c", code], 10)
    assert not result.ok
    assert result.returncode == 3
    assert result.output.endswith("the end")
    assert len(result.output) <= process.OUTPUT_TAIL_BYTES
    assert "exited with status 3" in result.describe()


def test_missing_program() -> None:
    result = process.run(["/nonexistent/kdumpctl", "reload"], 10)
    assert not result.ok
    assert result.error is not None
    assert "could not run /nonexistent/kdumpctl" in result.describe()


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The command forks a child that would outlive it, then hangs.
    code = (
        "import os, time, sys\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(60); os._exit(0)\n"
        f"open({str(pidfile)!r}, 'w').write(str(pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    result = process.run([sys.executable, "-c", code], 1.0)
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert not result.ok
    assert "timed out" in result.describe()
    assert 0.9 < elapsed < 5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # The grandchild is reparented; it is killed but may await its reaper briefly.
        status = (
            Path(f"/proc/{child}/status").read_text() if Path(f"/proc/{child}").exists() else ""
        )
        if "State:\tZ" in status:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the command's child survived the timeout")


def test_no_shell_and_no_systemd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    code = "import os; print(os.environ.get('NOTIFY_SOCKET', 'unset'), os.environ['PATH'])"
    result = process.run([sys.executable, "-c", code], 10)
    words = result.output.split()
    assert words[0] == "unset"
    assert "/usr/sbin" in words[1]
    # Metacharacters are plain argv bytes, never interpreted.
    echo = process.run(
        [sys.executable, "-c", "import sys; print(sys.argv[1])", "$(id); rm -rf /"], 10
    )
    assert echo.output == "$(id); rm -rf /"


def test_9_pidfd_failure_after_popen_leaves_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """pidfd_open fails (EMFILE; ENOSYS before 5.3 or under seccomp) after the command
    started: reported as "could not start", and the command is gone by then (killed and
    reaped), not running on unsupervised while the retry starts a second one beside it."""
    pids: list[int] = []

    def no_pidfd(pid: int) -> int:
        pids.append(pid)
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    started = process.start([sys.executable, "-c", "import time; time.sleep(30)"], 10)
    assert isinstance(started, process.Result)
    assert started.error == "Too many open files"
    (pid,) = pids
    assert not Path(f"/proc/{pid}").exists(), "the command runs on without supervision"


def test_8_the_child_environment_is_an_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of systemd's (JOURNAL_STREAM, INVOCATION_ID, LISTEN_FDNAMES...), no LD_* or
    PYTHON*, and PATH is SAFE_PATH alone, whatever PATH the daemon had."""
    monkeypatch.setenv("PATH", "/tmp/evil:/usr/bin")
    for name in ("JOURNAL_STREAM", "INVOCATION_ID", "LISTEN_FDNAMES", "LD_PRELOAD", "CREDS"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("TERM", raising=False)
    code = "import os, json; print(json.dumps(dict(os.environ)))"
    result = process.run([sys.executable, "-I", "-c", code], 10)
    env = json.loads(result.output)
    env.pop("LC_CTYPE", None)  # Python's own locale coercion may add it
    assert env == {"PATH": process.SAFE_PATH, "LANG": "C.UTF-8"}


def test_exited_does_not_reap(tmp_path: Path) -> None:
    """The pid (and so the process group id) stays ours until finish(): killing the group
    after exited() never hits a stranger that got the id."""
    running = process.start([sys.executable, "-c", "pass"], 10)
    assert isinstance(running, process.Running)
    deadline = time.monotonic() + 10
    while not running.exited() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running.exited()
    assert Path(f"/proc/{running.pid}").exists()  # a zombie, not reaped
    assert running.finish().ok
    assert not Path(f"/proc/{running.pid}").exists()
