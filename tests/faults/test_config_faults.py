"""Bad config files: one line naming file, key and reason; exit 1; at SIGHUP the old one stays.

Every case is tried three ways: ``crashhp check-config FILE``, ``crashhp daemon --config
FILE`` (in the fake host: it must exit 1 before READY=1), and a running daemon that gets the
file at SIGHUP (``config_rejected`` with ``file``, ``key`` and ``reason``; the old config keeps
working). Each bad file also sets ``policy = "always"`` where it can, so that applying any
of it would show. The layered files (``/etc/crashhp/crashhp.toml`` and ``crashhp.d``) are
tried through an overlay on the namespace's /etc.

An empty file is valid and means "all defaults": TOML says an empty document is an empty
table, and an admin who empties the file gets the packaged behaviour, which check-config
shows key by key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from crashhp import cli
from tests.support.nshost import REPO, FakeHost, NsProcess, wait_until

pytestmark = pytest.mark.faults

ALWAYS = 'policy = "always"\n'


@dataclass(frozen=True)
class Bad:
    name: str
    key: str | None  # None: the error is about the file as a whole
    reason: str  # a fragment of the reason
    text: str | bytes = ""
    # Makes the file at the given path (the default writes ``text`` with mode 0644).
    setup: Callable[[Path], None] | None = None

    def make(self, path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        elif path.is_symlink() or path.exists():
            path.unlink()
        if self.setup is not None:
            self.setup(path)
            return
        tmp = path.with_name(f".{path.name}.tmp")
        if isinstance(self.text, bytes):
            tmp.write_bytes(self.text)
        else:
            tmp.write_text(self.text)
        tmp.chmod(0o644)
        tmp.replace(path)


def _symlink_to_world_writable(path: Path) -> None:
    target = path.parent / "shared" / "crashhp.toml"
    target.parent.mkdir(mode=0o755, exist_ok=True)
    target.write_text(ALWAYS)
    target.chmod(0o666)
    path.symlink_to(target)


def _in_world_writable_dir(path: Path) -> None:
    target = path.parent / "open" / "crashhp.toml"
    target.parent.mkdir(exist_ok=True)
    target.parent.chmod(0o777)
    target.write_text(ALWAYS)
    target.chmod(0o644)
    path.symlink_to(target)


def _owned_by_nobody(path: Path) -> None:
    path.write_text(ALWAYS)
    path.chmod(0o644)
    os.chown(path, 65534, 65534)


def _directory(path: Path) -> None:
    path.mkdir()


BAD = [
    Bad("wrong type", "coalesce.quiet_ms", "valid integer", ALWAYS + '[coalesce]\nquiet_ms = "x"'),
    Bad("bool for a number", "coalesce.quiet_ms", "valid integer", "[coalesce]\nquiet_ms = true"),
    Bad("string for a number", "reload.timeout_s", "valid number", '[reload]\ntimeout_s = "10"'),
    Bad("string for a bool", "kexec.upgrade", "valid boolean", '[kexec]\nupgrade = "yes"'),
    Bad("out of range", "reload.retries", "less than or equal to 100", "[reload]\nretries = 1000"),
    Bad("unknown key", "bogus", "unknown key", ALWAYS + "bogus = 1"),
    Bad("unknown key in a section", "reload.timeot_s", "unknown key", "[reload]\ntimeot_s = 5"),
    Bad("unknown section", "relaod", "unknown key", ALWAYS + "[relaod]\nretries = 1"),
    Bad(
        "cross-field",
        "coalesce.max_delay_ms",
        ">= coalesce.quiet_ms",
        "[coalesce]\nquiet_ms = 900\nmax_delay_ms = 100",
    ),
    Bad("relative command", "reload.command", "absolute path", '[reload]\ncommand = ["kdumpctl"]'),
    Bad("NUL in the command", "reload.command", "NUL", '[reload]\ncommand = ["/bin/x", "\\u0000"]'),
    Bad("NUL in kexec.append", "kexec.append", "NUL", '[kexec]\nappend = "a\\u0000b"'),
    Bad("bad TOML", None, "invalid TOML", ALWAYS + "[reload\n"),
    Bad("duplicate key", None, "invalid TOML", ALWAYS + ALWAYS),
    Bad("not UTF-8", None, "not UTF-8", b'policy = "always"\n# \xff\xfe\n'),
    Bad("line break in a key", "a\\nb", "unknown key", ALWAYS + '"a\\nb" = 1'),
    Bad("nested 5,000 deep", None, "nested too deeply", ALWAYS + "x = " + "[" * 5000 + "]" * 5000),
    Bad("huge file", None, "file too large", ALWAYS + "# padding\n" * 200_000),
    Bad(
        "symlink to a world-writable file",
        None,
        "writable by everyone",
        setup=_symlink_to_world_writable,
    ),
    Bad(
        "in a world-writable directory", None, "writable by everyone", setup=_in_world_writable_dir
    ),
    Bad("owned by another user", None, "owned by uid 65534", setup=_owned_by_nobody),
    Bad("a directory", None, "not a regular file", setup=_directory),
]


def _check_line(stderr: str, path: Path, bad: Bad) -> None:
    """Exactly one line: ``crashhp: FILE: KEY: REASON``."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"{bad.name}: not one line:\n{stderr}"
    prefix = f"crashhp: {path}: " + (f"{bad.key}: " if bad.key else "")
    assert lines[0].startswith(prefix), f"{bad.name}: {lines[0]!r} does not start {prefix!r}"
    assert bad.reason in lines[0], f"{bad.name}: {lines[0]!r}"


def _crashhp(*args: str) -> list[str]:
    return [sys.executable, "-m", "crashhp", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_check_config_rejects_each_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``crashhp check-config FILE`` (its ``main``, in this process: the daemon's start below
    runs the same loading in a process of its own)."""
    for n, bad in enumerate(BAD):
        case = tmp_path / f"case{n}"
        case.mkdir(mode=0o755)
        path = case / "crashhp.toml"
        bad.make(path)
        assert cli.main(["check-config", str(path)]) == 1, bad.name
        captured = capsys.readouterr()
        assert captured.out == "", bad.name
        _check_line(captured.err, path, bad)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "crashhp.toml"
    path.write_text("")
    path.chmod(0o644)
    result = subprocess.run(
        _crashhp("check-config", str(path)),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{path}: valid" in result.stdout
    assert '  policy = "auto"  # (defaults)' in result.stdout


def test_daemon_start_exits_1_on_a_bad_file(host: FakeHost) -> None:
    env = {**_env(), "NOTIFY_SOCKET": str(host.notify.path)}
    started: list[tuple[Bad, Path, NsProcess]] = []
    for n, bad in enumerate(BAD):
        case = host.base / f"case{n}"
        case.mkdir(mode=0o755)
        path = case / "crashhp.toml"
        bad.make(path)
        started.append((bad, path, host.spawn(_crashhp("daemon", "--config", str(path)), env=env)))
    for bad, path, proc in started:
        assert proc.wait(60) == 1, f"{bad.name}: {proc.stderr.text()}"
        proc.stderr.join(5)
        _check_line(proc.stderr.text(), path, bad)
    assert host.notify.items("READY") == [], "a daemon with a bad config said READY=1"


def test_sighup_rejects_each_bad_file_and_keeps_the_old_one(host: FakeHost) -> None:
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    daemon = host.start_daemon()
    good = host.config_path.read_text()
    for bad in BAD:
        bad.make(host.config_path)
        hup = time.monotonic()
        daemon.signal(signal.SIGHUP)
        rejected = daemon.logs.wait_for("config_rejected", after=hup)
        host.notify.wait_for("READY", "1", after=hup)
        assert rejected["level"] == "error"
        assert rejected["file"] == str(host.config_path), rejected
        assert rejected["key"] == (bad.key.replace("\\n", "\n") if bad.key else None), rejected
        assert bad.reason in rejected["reason"], rejected
        assert "\n" not in rejected["text"], rejected
    Bad("good", None, "", good).make(host.config_path)  # a valid file for the end of the test
    assert daemon.alive()
    assert daemon.logs.events("config_loaded") == []

    # The old config (policy auto, the kernel handles both) is still the one in force.
    daemon.send_burst(20, subsystems=("cpu", "memory"))
    daemon.logs.wait_for("kernel_handles")
    time.sleep(0.6)
    assert host.recorder.count() == 0, "a rejected policy = always was applied"


# ---- the layered files, through an overlay on the namespace's /etc ----------------------


def _layered(host: FakeHost, config: str) -> Path:
    """/etc/crashhp/crashhp.toml (config) and an empty crashhp.d in the namespace."""
    upper = host.overlay_etc()
    etc = upper / "crashhp"
    (etc / "crashhp.d").mkdir(mode=0o755, parents=True)
    etc.chmod(0o755)
    (etc / "crashhp.toml").write_text(config)
    (etc / "crashhp.toml").chmod(0o644)
    return etc


def _layered_config(host: FakeHost) -> str:
    host.write_config()
    return host.config_path.read_text()


def test_dropin_directory_writable_by_others(host: FakeHost) -> None:
    etc = _layered(host, _layered_config(host))
    (etc / "crashhp.d").chmod(0o777)
    env = {**_env(), "NOTIFY_SOCKET": str(host.notify.path)}
    check = host.spawn(_crashhp("check-config"), env=env)
    daemon = host.spawn(_crashhp("daemon"), env=env)
    where = "crashhp: /etc/crashhp/crashhp.d: directory /etc/crashhp/crashhp.d is writable"
    for proc in (check, daemon):
        assert proc.wait(60) == 1, proc.stderr.text()
        proc.stderr.join(5)
        lines = proc.stderr.text().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(where), lines


def test_dropin_symlink_to_a_world_writable_file(host: FakeHost) -> None:
    etc = _layered(host, _layered_config(host))
    _symlink_to_world_writable(etc / "crashhp.d" / "50-local.toml")
    check = host.spawn(_crashhp("check-config"), env=_env())
    assert check.wait(60) == 1
    check.stderr.join(5)
    lines = check.stderr.text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("crashhp: /etc/crashhp/crashhp.d/50-local.toml: file "), lines
    assert "writable by everyone" in lines[0]


def test_sighup_dropin_directory_opened_to_others(host: FakeHost) -> None:
    """The layered config is fine at start; then crashhp.d becomes writable by everyone and
    a drop-in appears in it: at SIGHUP nothing of it is applied."""
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    _layered(host, _layered_config(host))
    env = {k: v for k, v in _env().items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")} | {
        "NOTIFY_SOCKET": str(host.notify.path)
    }
    proc = host.spawn(_crashhp("daemon"), env=env)
    wait_until(lambda: proc.stderr.events("daemon_ready"), 15, "the layered daemon ready")
    host.in_namespace(
        proc,
        "import os, sys\n"
        "d = '/etc/crashhp/crashhp.d'\n"
        "os.chmod(d, 0o777)\n"
        "open(d + '/90-evil.toml', 'w').write('policy = \"always\"\\n')\n",
    )
    hup = time.monotonic()
    proc.signal(signal.SIGHUP)
    rejected = proc.stderr.wait_for("config_rejected", after=hup)
    assert rejected["file"] == "/etc/crashhp/crashhp.d"
    assert "writable by everyone" in rejected["reason"]

    proc.sender.send_many(host.burst(20))
    proc.stderr.wait_for("kernel_handles")
    time.sleep(0.6)
    assert host.recorder.count() == 0


def test_sighup_changing_events_loses_no_queued_event(host: FakeHost) -> None:
    """A new [events] section rebuilds the monitor. Events still queued in the old socket
    must not be lost: 5,000 cpu events (the kernel handles cpu) then 100 memory events (it
    does not) are queued while the daemon is stopped, together with the SIGHUP."""
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="0")
    daemon = host.start_daemon()
    daemon.signal(signal.SIGSTOP)
    try:
        daemon.sender.send_many(host.burst(5000, subsystems=("cpu",)))
        daemon.sender.send_many(host.burst(100, subsystems=("memory",)))
        host.write_config({"events": {"receive_buffer_bytes": 32 << 20}})
        daemon.signal(signal.SIGHUP)
    finally:
        daemon.signal(signal.SIGCONT)
    daemon.logs.wait_for("config_loaded")
    host.recorder.wait_calls(1, timeout=5)
    burst = daemon.logs.wait_for("burst", action="reload")
    assert "memory" in burst["subsystems"], burst
    call = host.recorder.calls()[0]  # read again: the first look may predate its end
    assert call.rc == 0
