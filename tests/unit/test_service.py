"""The service shell in-process: a fake uevent source on a real socket, a fake kernel tree,
a fake clock. The engine's behaviour is tested in test_engine.py; here what the shell owns:
signals' effects, state.json, the instance lock, READY=1."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from crashhp import kernel, runners, status, transient
from crashhp.arch import Arch
from crashhp.config import Config, ConfigError, LoadedConfig
from crashhp.logs import MESSAGE_IDS
from crashhp.model import Subsystem, Uevent
from crashhp.runtime import AlreadyRunning
from crashhp.service import Service
from crashhp.uevents import MonitorOverflow


class FakeSource:
    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self.queue: list[Uevent] = []

    def push(self, *events: Uevent) -> None:
        self.queue.extend(events)
        self._w.send(b"!")

    def fileno(self) -> int:
        return self._r.fileno()

    def drain(self, limit: int) -> tuple[list[Uevent], int]:
        with contextlib.suppress(BlockingIOError):
            self._r.recv(4096)
        out, self.queue = self.queue[:limit], self.queue[limit:]
        return out, 0

    def close(self) -> None:
        self._r.close()
        self._w.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Notes:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, state: str) -> None:
        self.sent.append(state)


def tree(root: Path) -> kernel.Reader:
    sysfs, procfs = root / "sys", root / "proc"
    for sub in Subsystem:
        (sysfs / "devices/system" / sub.value).mkdir(parents=True)
        (sysfs / "devices/system" / sub.value / "crash_hotplug").write_text("0\n")
    (sysfs / "devices/system/cpu/present").write_text("0-3\n")
    (sysfs / "kernel").mkdir(parents=True)
    (sysfs / "kernel/kexec_crash_loaded").write_text("1\n")
    procfs.mkdir()
    (procfs / "iomem").write_text("00001000-0009ffff : System RAM\n")
    return kernel.Reader(sysfs, procfs, Arch.X86_64)


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Any]:
    config = Config.model_validate({"reload": {"method": "command", "command": ["/bin/true"]}})
    return {
        "reader": tree(tmp_path),
        "clock": Clock(),
        "notes": Notes(),
        "source": FakeSource(),
        "config": config,
        "state_dir": tmp_path / "run",
    }


def service(parts: dict[str, Any], load: Any = None) -> Service:
    loaded = LoadedConfig(parts["config"], ())
    return Service(
        load or (lambda: loaded),
        parts["notes"],
        source_factory=lambda _: parts["source"],
        clock=parts["clock"],
        reader=parts["reader"],
        state_dir=parts["state_dir"],
    )


def test_ready_after_state_json(parts: dict[str, Any]) -> None:
    s = service(parts)
    s.start(signals=False)
    ready = [n for n in parts["notes"].sent if n.startswith("READY=1")]
    assert ready
    data = json.loads((parts["state_dir"] / "state.json").read_text())
    assert data["version"] == 2
    assert data["protection"] == "protected"
    assert data["layout"] == "legacy"
    assert data["loaded_topology"] == parts["reader"].fingerprint()


def test_8_a_second_daemon_is_refused(parts: dict[str, Any]) -> None:
    service(parts).start(signals=False)
    with pytest.raises(AlreadyRunning, match="another crashhp daemon"):
        service(parts).start(signals=False)


def test_8_an_unreadable_config_at_sighup_keeps_the_daemon(parts: dict[str, Any]) -> None:
    """An OSError while re-reading (a drop-in directory swapped by config management).
    Before: it ended the daemon."""
    calls = {"n": 0}
    loaded = LoadedConfig(parts["config"], ())

    def load() -> LoadedConfig:
        calls["n"] += 1
        if calls["n"] > 1:
            raise PermissionError(13, "Permission denied", "/etc/crashhp/crashhp.d")
        return loaded

    s = service(parts, load)
    s.start(signals=False)
    with capture_logs() as logs:
        s.reconfigure()
    rejected = [e for e in logs if e["event"] == "config_rejected"]
    assert rejected
    assert rejected[0]["log_level"] == "error"
    assert s.config is parts["config"]
    assert parts["notes"].sent[-1].startswith("READY=1")


def test_a_bad_config_at_sighup_is_rejected(parts: dict[str, Any]) -> None:
    loaded = LoadedConfig(parts["config"], ())
    seq = iter([loaded])

    def load() -> LoadedConfig:
        for item in seq:
            return item
        raise ConfigError("/etc/crashhp/crashhp.toml", "policy", "not one of auto, always")

    s = service(parts, load)
    s.start(signals=False)
    with capture_logs() as logs:
        s.reconfigure()
    assert [e["key"] for e in logs if e["event"] == "config_rejected"] == ["policy"]


def test_8_state_json_failures_are_errors(parts: dict[str, Any]) -> None:
    """Restart safety depends on state.json. Before: logged at debug."""
    s = service(parts)
    s.start(signals=False)
    (parts["state_dir"] / "state.json").unlink()
    (parts["state_dir"] / "state.json").mkdir()  # rename over it fails
    parts["source"].push(Uevent("online", Subsystem.MEMORY, "memory9", 5000))
    with capture_logs() as logs:
        s.turn(max_wait=0)
        parts["clock"].now += 1.0
        s.turn(max_wait=0)
    failed = [e for e in logs if e["event"] == "state_not_written"]
    assert failed
    assert failed[0]["log_level"] == "error"


def test_a_burst_that_changed_nothing_in_the_shell(parts: dict[str, Any]) -> None:
    s = service(parts)
    s.start(signals=False)
    parts["source"].push(Uevent("add", Subsystem.CPU, "cpu1", 5000, synthetic=True))
    with capture_logs() as logs:
        s.turn(max_wait=0)
        parts["clock"].now += 1.0
        s.turn(max_wait=0)
    bursts = [e for e in logs if e["event"] == "burst"]
    assert [b["decision"] for b in bursts] == ["unchanged"]
    assert bursts[0]["synthetic"] == 1


def test_an_overflow_rebuilds_the_monitor_and_resyncs(parts: dict[str, Any]) -> None:
    opened: list[FakeSource] = []

    def factory(_: Config) -> FakeSource:
        opened.append(FakeSource())
        return opened[-1]

    loaded = LoadedConfig(parts["config"], ())
    s = Service(
        lambda: loaded,
        parts["notes"],
        source_factory=factory,
        clock=parts["clock"],
        reader=parts["reader"],
        state_dir=parts["state_dir"],
    )
    s.start(signals=False)

    def overflow(limit: int) -> tuple[list[Uevent], int]:
        raise MonitorOverflow("No buffer space available")

    opened[0].drain = overflow  # type: ignore[method-assign]
    opened[0]._w.send(b"!")
    with capture_logs() as logs:
        s.turn(max_wait=0)
    assert len(opened) == 2  # rebuilt
    assert [e["event"] for e in logs if e["event"] == "monitor_overflow"] == ["monitor_overflow"]
    assert s.engine.ledger.counters.overflows == 1
    assert s.engine.phase.name == "coalescing"  # every subsystem marked


def test_a_direct_runner_without_cap_sys_boot_is_said_at_start(
    parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under crashhp.service (no CAP_SYS_BOOT) reload.runner = "direct" cannot reload:
    one error line at start, in state.json, and in `crashhp status`; not an EPERM at the
    first hotplug."""
    monkeypatch.setenv("INVOCATION_ID", "0" * 32)
    monkeypatch.setattr(runners, "effective_capabilities", lambda procfs=None: 1 << 12)
    parts["config"] = Config.model_validate(
        {"reload": {"method": "command", "command": ["/bin/true"], "runner": "direct"}}
    )
    s = service(parts)
    with capture_logs() as logs:
        s.start(signals=False)
    (said,) = [e for e in logs if e["event"] == "direct_runner_unprivileged"]
    assert said["log_level"] == "error"
    assert "CAP_SYS_BOOT" in said["text"]
    assert "\n" not in said["text"]
    assert "direct_runner_unprivileged" in MESSAGE_IDS
    daemon = json.loads((parts["state_dir"] / "state.json").read_text())
    assert daemon["runner_error"] == said["text"]
    report = status.gather(
        parts["reader"].state(), daemon, LoadedConfig(parts["config"], ()), "command", None
    )
    assert report["runner_error"] == said["text"]
    assert report["verdict"] == "WARNING"  # crashhp cannot reload a crash kernel that needs it
    assert said["text"] in status.render(report)
    # Back to the default runner at SIGHUP: the error goes.
    auto = LoadedConfig(
        Config.model_validate({"reload": {"method": "command", "command": ["/bin/true"]}}), ()
    )
    monkeypatch.setattr(transient, "systemd_available", lambda: True)
    s._load = lambda: auto
    with capture_logs() as logs:
        s.reconfigure()
    assert not [e for e in logs if e["event"] == "direct_runner_unprivileged"]
    assert json.loads((parts["state_dir"] / "state.json").read_text())["runner_error"] is None
    s.close()
