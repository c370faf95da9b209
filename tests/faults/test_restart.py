"""SIGKILL mid-burst and mid-reload, then a restart as systemd does it.

systemd (``Restart=on-failure``, the default ``KillMode=control-group``) kills whatever is
left in the service's cgroup when the main process dies (a reload command it ran, too),
then starts the daemon again with the same ``/run/crashhp`` (``RuntimeDirectoryPreserve``).
:func:`crash` does the same to the daemon in the fake host. After the restart the crash
kernel must be loaded and describe the current topology: the reload recorder records the
topology each successful "load" saw (the RAM ranges of the fake /proc/iomem and the cpu
masks), and the daemon's state.json the fingerprint it verified.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from crashhp import kernel
from tests.support.nshost import REPO, Daemon, FakeHost, wait_until

pytestmark = pytest.mark.faults

UNIT = REPO / "systemd" / "crashhp.service"
DIRECT_RUNNER = REPO / "packaging" / "examples" / "direct-runner.conf"
NOTIFY_RELOAD_SINCE = 253  # systemd version


def crash(host: FakeHost, daemon: Daemon) -> None:
    """SIGKILL the daemon, then kill what is left of its cgroup, as systemd does."""
    os.kill(daemon.pid, signal.SIGKILL)
    assert daemon.wait(5) == -signal.SIGKILL
    host.recorder.kill_leftovers()


def state(host: FakeHost) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((host.run / "crashhp" / "state.json").read_text())
    return data


def fingerprint(host: FakeHost, tmp: Path) -> str:
    """crashhp's topology fingerprint of the fake host, as the daemon computes it."""
    root = tmp / "fingerprint-sys"
    (root / "devices" / "system").mkdir(parents=True, exist_ok=True)
    for name, target in (("cpu", host.sysfs.cpu), ("memory", host.sysfs.memory)):
        link = root / "devices" / "system" / name
        if not link.exists():
            link.symlink_to(target)
    return kernel.topology(root, host.iomem.parent)


def assert_current(host: FakeHost, tmp: Path) -> None:
    """Loaded, the last load saw today's topology, and the daemon recorded it verified."""
    assert host.sysfs.loaded() == "1"
    assert host.recorder.image() == host.topology(), "the crash kernel describes an old topology"
    wait_until(
        lambda: state(host).get("loaded_topology") == fingerprint(host, tmp),
        3,
        "state.json to record the current topology",
    )


def test_sigkill_during_a_burst_restart_reloads(host: FakeHost, tmp_path: Path) -> None:
    daemon = host.start_daemon({"coalesce": {"quiet_ms": 500}})
    before = state(host)["loaded_topology"]
    assert before == fingerprint(host, tmp_path)  # first start: the loaded image is taken

    host.set_topology(memory_blocks=24, cpus=6)  # hot-add memory and two cpus
    daemon.send_burst(2000, subsystems=("memory", "cpu"), action="add")
    time.sleep(0.1)  # inside the quiet period: nothing reloaded yet
    crash(host, daemon)
    assert host.recorder.count() == 0

    restarted = host.start_daemon({"coalesce": {"quiet_ms": 500}})
    changed = restarted.logs.wait_for("topology_changed_while_down")
    restarted.logs.wait_for("reload_done", timeout=10)
    assert changed["recorded"] == before
    assert host.recorder.count() == 1
    assert_current(host, tmp_path)


def test_sigkill_during_a_reload_restart_reloads(host: FakeHost, tmp_path: Path) -> None:
    """The reload command unloaded the old image and is killed with the daemon: nothing is
    loaded after the restart, and only state.json can say that it was ours to load."""
    host.recorder.set_knobs(duration_ms=1500)
    daemon = host.start_daemon()
    host.set_topology(memory_blocks=20)
    daemon.send_burst(500)
    host.recorder.wait_calls(1)
    wait_until(lambda: state(host).get("reloading"), 3, "state.json to say a reload runs")
    crash(host, daemon)
    assert host.sysfs.loaded() == "0", "the killed reload should have left nothing loaded"

    host.recorder.set_knobs()
    restarted = host.start_daemon()
    ready_status = [n.value for n in host.notify.items("STATUS") if n.t >= restarted.spawned_at]
    restarted.logs.wait_for("reload_done", timeout=10)
    restarted.logs.wait_for("recovered")
    assert ready_status
    assert ready_status[0].startswith("UNPROTECTED"), ready_status
    assert host.recorder.count() == 2
    assert_current(host, tmp_path)
    assert not any(c.overlap for c in host.recorder.calls()), host.recorder.calls()


def test_rapid_sigkills_during_a_storm(host: FakeHost, tmp_path: Path) -> None:
    """Killed five times in a row while memory keeps being added, some kills landing in a
    reload: once it is left alone, one reload brings the crash kernel up to date."""
    host.recorder.set_knobs(duration_ms=300)
    overrides = {"coalesce": {"quiet_ms": 100, "max_delay_ms": 400, "settle_ms": 50}}
    daemon = host.start_daemon(overrides)
    blocks = 8
    for _ in range(5):
        for _ in range(6):
            blocks += 1
            host.set_topology(memory_blocks=blocks)
            daemon.send_burst(200, action="add")
            time.sleep(0.08)
        crash(host, daemon)
        daemon = host.start_daemon(overrides)
    blocks += 1
    host.set_topology(memory_blocks=blocks)
    daemon.send_burst(200, action="add")
    wait_until(lambda: host.recorder.image() == host.topology(), 10, "a load of the last topology")
    time.sleep(1.0)
    assert daemon.alive()
    assert_current(host, tmp_path)
    assert not any(c.overlap for c in host.recorder.calls()), host.recorder.calls()


def test_restart_when_the_kernel_keeps_the_image_current(host: FakeHost, tmp_path: Path) -> None:
    """Topology changed while down, but the image is hotplug-capable: no reload, and the
    record follows the kernel so that the next restart finds nothing to do."""
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    daemon = host.start_daemon()
    host.set_topology(memory_blocks=12)
    daemon.send_burst(100)
    time.sleep(0.05)
    crash(host, daemon)

    second = host.start_daemon()
    second.logs.wait_for("topology_changed_while_down")
    second.logs.wait_for("kernel_handles")
    wait_until(
        lambda: state(host)["loaded_topology"] == fingerprint(host, tmp_path), 3, "the record"
    )
    crash(host, second)
    third = host.start_daemon()
    time.sleep(0.6)
    assert third.logs.events("topology_changed_while_down") == []
    assert host.recorder.count() == 0


def test_unit_never_runs_out_of_restarts() -> None:
    """Rapid restarts must not trip a start limit that leaves kdump unprotected."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"  # no start rate limit at all
    assert unit["Service"]["Restart"] == "on-failure"  # SIGKILL, watchdog, crash (exit 70)
    assert unit["Service"]["RestartPreventExitStatus"] == "1"  # a bad config only
    assert unit["Service"].get("KillMode", "control-group") == "control-group"
    assert unit["Service"]["RuntimeDirectoryPreserve"] == "yes"  # state.json survives


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit, and with the direct-runner drop-in, as this host's systemd reads them."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze")
    # verify wants the ExecStart= program to exist: point it at this checkout's entry point.
    program = tmp_path / "crashhp"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    text = UNIT.read_text().replace("ExecStart=/usr/bin/crashhp", f"ExecStart={program}")
    version = subprocess.run(
        [analyze, "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()[1]
    if int(version) < NOTIFY_RELOAD_SINCE:
        # What the package build does for an older systemd (Debian 12 has 252).
        assert "\nType=notify-reload\n" in text
        text = text.replace(
            "\nType=notify-reload\n", "\nType=notify\nExecReload=/bin/kill -HUP $MAINPID\n"
        )
    unit = tmp_path / "crashhp.service"
    unit.write_text(text)
    for dropin in (False, True):
        if dropin:  # verify reads drop-ins next to the unit file
            dropins = tmp_path / "crashhp.service.d"
            dropins.mkdir()
            shutil.copy(DIRECT_RUNNER, dropins / DIRECT_RUNNER.name)
        result = subprocess.run(
            [analyze, "verify", "--man=no", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        ours = [line for line in result.stderr.splitlines() if "crashhp.service" in line]
        assert result.returncode == 0, result.stderr
        assert not ours, result.stderr


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"loaded_topology": "abc", "ow',
        b"[1, 2]",
        b'{"owed": "yes", "reloading": 7}',
        b"\xff",
    ],
    ids=["empty", "truncated", "not an object", "odd types", "not UTF-8"],
)
def test_damaged_state_file(host: FakeHost, content: bytes) -> None:
    """A damaged state.json is a start without a record: no crash, the loaded image taken as
    current, and the file rewritten whole."""
    path = host.run / "crashhp" / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    daemon = host.start_daemon()
    daemon.logs.wait_for("daemon_ready")
    time.sleep(0.4)
    assert daemon.alive()
    assert host.recorder.count() == 0
    assert isinstance(state(host)["loaded_topology"], str)


def test_sigterm_during_a_reload_waits_for_it(host: FakeHost) -> None:
    """systemctl stop in the middle of a reload: the command finishes (it is never left
    half-done or orphaned), then the daemon exits 0."""
    host.recorder.set_knobs(duration_ms=800)
    daemon = host.start_daemon()
    daemon.send_burst(10)
    (call,) = host.recorder.wait_calls(1)
    term = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    exited = time.monotonic()

    (call,) = host.recorder.calls()
    assert call.end is not None, "the reload was cut short"
    assert call.rc == 0
    assert call.end <= exited
    assert exited - term < 3.0
    assert host.sysfs.loaded() == "1"
    stopping = daemon.logs.wait_for("daemon_stopping")
    assert stopping["waiting_for_reload"] is True
