"""Missing kernel support: said once and clearly at start, then the safe behaviour.

- no ``crash_hotplug`` files (kernels before 6.6, or without CONFIG_CRASH_HOTPLUG): the
  kernel cannot update the header, so every change is reloaded, without a settle re-read;
- no ``kexec_crash_loaded`` (no kexec at all): nothing to protect, crashhp only observes;
- ``cpu/crash_hotplug`` unreadable (mode 0400 on 6.6-6.10 for whoever is not root): taken
  as "reload needed". Root reads a mode-000 file anyway, so the daemon is started without
  CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv drops them from the bounding set before
  exec): the read then fails with EACCES, as it would for a user. A directory in place of
  the file (EISDIR) and a file with neither 0 nor 1 in it are unreadable answers too.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import pytest

from tests.support.nshost import Daemon, FakeHost

pytestmark = pytest.mark.faults

QUIET_S = 0.150  # FakeHost.BASE_CONFIG
SETTLE_S = 0.100
AFTERMATH_S = 0.8


def state(host: FakeHost) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((host.run / "crashhp" / "state.json").read_text())
    return data


def started(daemon: Daemon) -> dict[str, Any]:
    """daemon_ready, logged after the support warnings (READY=1 may arrive before both)."""
    return daemon.logs.wait_for("daemon_ready")


def status(host: FakeHost) -> str:
    return host.notify.items("STATUS")[-1].value


def burst_decision(host: FakeHost, daemon: Daemon, subsystem: str) -> dict[str, Any]:
    """Send a burst of ``subsystem`` events; the burst line it gives."""
    done = len(daemon.logs.events("burst"))
    sent = daemon.send_burst(20, subsystems=(subsystem,))
    daemon.logs.wait_for("burst", after=sent)
    bursts = daemon.logs.events("burst")
    assert len(bursts) == done + 1, bursts
    return bursts[-1] | {"_sent": sent}


def test_no_crash_hotplug_files_every_change_is_reloaded(host: FakeHost) -> None:
    host.sysfs.set(cpu_hotplug=None, memory_hotplug=None)
    daemon = host.start_daemon()
    started(daemon)
    warnings = daemon.logs.events("no_crash_hotplug")
    assert sorted(w["subsystem"] for w in warnings) == ["cpu", "memory"]
    assert all(w["level"] == "warning" for w in warnings)
    assert "Linux >= 6.6" in warnings[0]["text"]

    for subsystem in ("cpu", "memory"):
        burst = burst_decision(host, daemon, subsystem)
        assert burst["decision"] == "no_kernel_support"
        assert burst["action"] == "reload"
    calls = host.recorder.calls()
    assert len(calls) == 2
    # Nothing to confirm: an absent file is no busy lock, so no settle re-read.
    assert daemon.logs.events("reload_started")[0]["since_last_event_ms"] < 1000 * (
        QUIET_S + SETTLE_S
    )
    assert len(daemon.logs.events("no_crash_hotplug")) == 2, "said more than once"
    assert "cannot update the crash header on cpu and memory changes; crashhp reloads it" in (
        status(host)
    )


def test_no_kexec_observes_only(host: FakeHost) -> None:
    host.sysfs.set(loaded=None)
    for name in ("kexec_crash_size", "crash_elfcorehdr_size"):
        (host.sysfs.kernel / name).unlink()
    daemon = host.start_daemon()
    started(daemon)
    (warning,) = daemon.logs.events("no_kexec")
    assert warning["level"] == "warning"
    assert "no kexec support" in warning["text"]

    burst = burst_decision(host, daemon, "memory")
    assert burst["decision"] == "no_kexec"
    burst_decision(host, daemon, "cpu")
    time.sleep(AFTERMATH_S)
    assert host.recorder.count() == 0
    assert len(daemon.logs.events("no_kexec")) == 1
    assert status(host) == "kernel has no kexec support; nothing to protect"
    assert state(host)["protection"] == "no-kexec"
    assert daemon.alive()


def test_cpu_crash_hotplug_unreadable_eacces(host: FakeHost) -> None:
    """Mode 000 and a daemon without the DAC capabilities: EACCES on cpu, memory reads 1."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv(1)")
    host.sysfs.set(cpu_hotplug="1", memory_hotplug="1")
    (host.sysfs.cpu / "crash_hotplug").chmod(0)
    daemon = host.start_daemon(
        prefix=[setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    )
    ready = started(daemon)
    (warning,) = daemon.logs.events("crash_hotplug_unreadable")
    assert warning["subsystem"] == "cpu"
    assert warning["level"] == "warning"
    assert ready["cpu_crash_hotplug"] == "unreadable"
    assert ready["memory_crash_hotplug"] == "kernel-updates"

    assert burst_decision(host, daemon, "memory")["decision"] == "kernel_handles"
    cpu = burst_decision(host, daemon, "cpu")
    assert cpu["decision"] == "no_kernel_support"
    assert cpu["action"] == "reload"
    assert host.recorder.count() == 1
    assert len(daemon.logs.events("crash_hotplug_unreadable")) == 1


def test_directory_and_garbage_are_unreadable_answers(host: FakeHost) -> None:
    (host.sysfs.cpu / "crash_hotplug").unlink()
    (host.sysfs.cpu / "crash_hotplug").mkdir()  # EISDIR
    host.sysfs.set(memory_hotplug="yes")  # neither 0 nor 1
    daemon = host.start_daemon()
    started(daemon)
    warnings = daemon.logs.events("crash_hotplug_unreadable")
    assert sorted(w["subsystem"] for w in warnings) == ["cpu", "memory"]
    for subsystem in ("cpu", "memory"):
        assert burst_decision(host, daemon, subsystem)["decision"] == "no_kernel_support"
    assert host.recorder.count() == 2
    assert daemon.alive()
