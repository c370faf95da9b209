"""The one place that runs external commands: argv lists, no shell, always a timeout.

A command runs in a session (and process group) of its own, with its output in an
anonymous temporary file, so that nothing blocks on a full pipe and a timeout can kill
the command and every child it left behind. Its environment is an allow-list and PATH is
SAFE_PATH alone.

:class:`Runner` is what the service needs from a process runner; :class:`DirectRunner`
(children of the daemon, in its cgroup) is the one there is. A runner that wraps each
argv in ``systemd-run --wait --collect --unit=... -p RuntimeMaxSec=...`` fits the same
protocol.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

OUTPUT_TAIL_BYTES = 4096
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def which(program: str, path: str | None = None) -> str | None:
    """``program`` on ``path`` (SAFE_PATH by default): where reload tools are looked up."""
    return shutil.which(program, path=path or SAFE_PATH)


@dataclass(frozen=True, slots=True)
class Result:
    argv: tuple[str, ...]
    returncode: int | None  # None: never started, or killed on timeout
    duration_s: float
    output: str = ""  # the tail of stdout and stderr together
    timed_out: bool = False
    error: str | None = None  # why it could not start
    busy: bool = False  # not run: another crashhp reload holds the reload lock

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.error is None

    def describe(self) -> str:
        if self.error is not None:
            return f"could not run {self.argv[0]}: {self.error}"
        if self.timed_out:
            return f"{self.argv[0]} timed out after {self.duration_s:.1f} s and was killed"
        if self.returncode is not None and self.returncode < 0:
            return f"{self.argv[0]} killed by signal {-self.returncode}"
        return f"{self.argv[0]} exited with status {self.returncode}"


# What a reload tool may see of the daemon's environment: locale and terminal settings.
# Nothing of systemd's (NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*, INVOCATION_ID, JOURNAL_STREAM),
# no PYTHON* and no LD_*: the child must neither talk to systemd as if it were us nor run
# other code than its own.
ENV_ALLOW = frozenset({"LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TERM", "TZ"})


def environment(parent: dict[str, str] | None = None) -> dict[str, str]:
    """The reload command's environment: the allow-listed variables, PATH = SAFE_PATH."""
    source = os.environ if parent is None else parent
    env = {k: v for k, v in source.items() if k in ENV_ALLOW}
    env["PATH"] = SAFE_PATH  # distro tools live in sbin; never a PATH we were given
    return env


class Process(Protocol):
    """A started command. ``fileno()`` becomes readable when it exits."""

    def fileno(self) -> int: ...

    def exited(self) -> bool: ...

    def kill(self) -> None: ...

    def finish(self) -> Result: ...


class Runner(Protocol):
    def start(self, argv: Sequence[str], timeout_s: float) -> Process | Result:
        """Start ``argv``; a Result instead when it cannot even start."""
        ...


class Running:
    """A started command. ``fileno()`` becomes readable when it exits."""

    def __init__(
        self,
        argv: Sequence[str],
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        tail_bytes: int = OUTPUT_TAIL_BYTES,
    ) -> None:
        self.argv = tuple(argv)
        self._tail_bytes = tail_bytes
        self._clock = clock
        self.started_at = clock()
        self.deadline = self.started_at + timeout_s
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=environment(),
            )
        except BaseException:
            self._out.close()
            raise
        self.pid = self._proc.pid
        try:
            self._pidfd = pidfd_open(self.pid)
        except OSError:
            # Never an unsupervised child: without a pidfd there is no timeout and no
            # wake-up. Kill its group while it is still ours (not reaped: the pgid cannot
            # be reused yet), then reap it, and report "could not start".
            self._kill_group()
            self._proc.wait()
            self._out.close()
            raise
        self._timed_out = False

    def fileno(self) -> int:
        return self._pidfd

    def exited(self) -> bool:
        """The command has exited; it is not reaped, so its process group stays ours."""
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _wait_unreaped(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)

    def kill(self) -> None:
        """Kill the whole process group (the timeout expired)."""
        self._timed_out = True
        self._kill_group()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def finish(self) -> Result:
        """Reap the command (blocking only if it has not exited) and clean up."""
        self._wait_unreaped()
        self._kill_group()  # children the command left behind, before the pgid is freed
        returncode = self._proc.wait()
        duration = self._clock() - self.started_at
        os.close(self._pidfd)
        self._out.seek(0, os.SEEK_END)
        size = self._out.tell()
        self._out.seek(max(0, size - self._tail_bytes))
        output = self._out.read().decode("utf-8", "replace").strip()
        self._out.close()
        return Result(
            argv=self.argv,
            returncode=None if self._timed_out else returncode,
            duration_s=duration,
            output=output,
            timed_out=self._timed_out,
        )


def pidfd_open(pid: int) -> int:
    return os.pidfd_open(pid)


def start(
    argv: Sequence[str],
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    tail_bytes: int = OUTPUT_TAIL_BYTES,
) -> Running | Result:
    """Start ``argv``; a Result instead when it cannot even start."""
    try:
        return Running(argv, timeout_s, clock, tail_bytes)
    except OSError as exc:
        return Result(argv=tuple(argv), returncode=None, duration_s=0.0, error=exc.strerror)
    except ValueError as exc:  # an argument with a NUL byte: a failed reload, not a crash
        return Result(argv=tuple(argv), returncode=None, duration_s=0.0, error=str(exc))


class DirectRunner:
    """Each command a child of the daemon, in its own session and process group."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock

    def start(self, argv: Sequence[str], timeout_s: float) -> Process | Result:
        return start(argv, timeout_s, self._clock)


def run(argv: Sequence[str], timeout_s: float, tail_bytes: int = OUTPUT_TAIL_BYTES) -> Result:
    """Run ``argv`` to completion or timeout; ``tail_bytes`` of its output are kept."""
    running = start(argv, timeout_s, tail_bytes=tail_bytes)
    if isinstance(running, Result):
        return running
    poller = select.poll()
    poller.register(running.fileno(), select.POLLIN)
    while not running.exited():
        left = running.deadline - time.monotonic()
        if left <= 0:
            running.kill()
            break
        poller.poll(left * 1000)
    return running.finish()
