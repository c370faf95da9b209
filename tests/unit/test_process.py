"""The process edge, on real processes: exit codes, output, timeouts, process groups."""

from __future__ import annotations

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
