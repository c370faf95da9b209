"""`crashhp reload` and `crashhp upgrade` through the engine, on a fake kernel tree with a
real reload command (a Python script that "loads" by writing kexec_crash_loaded)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from crashhp import kernel, persist
from crashhp.arch import Arch
from crashhp.config import Config
from crashhp.model import Subsystem
from crashhp.oneshot import OneShot

LOADER = """
import pathlib, sys
root = pathlib.Path(sys.argv[1])
calls = root / "calls"
calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
(root / "sys/kernel/kexec_crash_loaded").write_text("0" if (root / "fail").exists() else "1")
sys.exit(1 if (root / "fail").exists() else 0)
"""


def machine(root: Path, *, loaded: str = "1", hotplug: str = "0") -> kernel.Reader:
    sysfs, procfs = root / "sys", root / "proc"
    for sub in Subsystem:
        (sysfs / "devices/system" / sub.value).mkdir(parents=True)
        (sysfs / "devices/system" / sub.value / "crash_hotplug").write_text(hotplug)
    (sysfs / "devices/system/cpu/present").write_text("0-3\n")
    (sysfs / "kernel").mkdir(parents=True)
    (sysfs / "kernel/kexec_crash_loaded").write_text(loaded)
    procfs.mkdir()
    (procfs / "iomem").write_text("00001000-0009ffff : System RAM\n")
    (root / "loader.py").write_text(LOADER)
    return kernel.Reader(sysfs, procfs, Arch.X86_64)


def config(root: Path) -> Config:
    command = [sys.executable, str(root / "loader.py"), str(root)]
    return Config.model_validate(
        {
            "coalesce": {"settle_ms": 20},
            "reload": {"method": "command", "command": command, "timeout_s": 10},
        }
    )


def calls(root: Path) -> int:
    path = root / "calls"
    return len(path.read_text()) if path.exists() else 0


def test_reload_without_a_record_goes_by_crash_hotplug(tmp_path: Path) -> None:
    reader = machine(tmp_path)
    outcome = OneShot(config(tmp_path), reader=reader, state_dir=tmp_path / "run").run()
    assert (outcome.decision, outcome.action) == ("kernel_says_reload", "reload")
    assert calls(tmp_path) == 1
    assert outcome.crash_loaded is True


def test_reload_uses_the_daemons_record(tmp_path: Path) -> None:
    """The daemon's state.json says the loaded image describes this topology: no reload."""
    reader = machine(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    image = {"fingerprint": reader.fingerprint(), "seqnum": 1, "complete": True}
    (run / "state.json").write_text(json.dumps({"version": 2, "image": image}))
    outcome = OneShot(config(tmp_path), reader=reader, state_dir=run).run()
    assert (outcome.decision, outcome.action) == ("unchanged", "none")
    assert calls(tmp_path) == 0
    assert persist.read(run) is not None


def test_reload_dry_run_runs_nothing(tmp_path: Path) -> None:
    reader = machine(tmp_path)
    outcome = OneShot(config(tmp_path), dry_run=True, reader=reader, state_dir=tmp_path / "r").run()
    assert outcome.plans
    assert calls(tmp_path) == 0


def test_a_failed_reload_is_reported_once(tmp_path: Path) -> None:
    reader = machine(tmp_path)
    (tmp_path / "fail").touch()
    outcome = OneShot(config(tmp_path), reader=reader, state_dir=tmp_path / "run").run()
    assert outcome.action == "failed"
    assert calls(tmp_path) == 1  # no retries: the daemon retries, not the verb
    assert outcome.crash_loaded is False


def test_upgrade_when_the_kernel_keeps_it_current(tmp_path: Path) -> None:
    reader = machine(tmp_path, hotplug="1")
    outcome = OneShot(config(tmp_path), upgrade=True, reader=reader, state_dir=tmp_path / "r").run()
    assert (outcome.decision, outcome.action) == ("kernel_handles", "none")
    assert calls(tmp_path) == 0


def test_upgrade_impossible_without_kexec(tmp_path: Path) -> None:
    """method = "command" and no kexec-tools: the upgrade plan cannot be made; nothing runs."""
    reader = machine(tmp_path)
    cfg = config(tmp_path).model_copy(
        update={
            "kexec": config(tmp_path).kexec.model_copy(update={"program": "/nonexistent/kexec"})
        }
    )
    outcome = OneShot(cfg, upgrade=True, reader=reader, state_dir=tmp_path / "r").run()
    assert outcome.cannot_upgrade
    assert calls(tmp_path) == 0


FAKE_KEXEC = """#!/bin/sh
# kexec-tools 2.0.29 as far as crashhp asks; a --hotplug load fails, any other load works.
root={root}
case " $* " in
*" --help "*) printf '%s\\n' ' -c, --kexec-syscall  Use the kexec_load syscall' \\
    '     --hotplug        Do in-kernel update of kexec segments'; exit 0 ;;
*" --hotplug "*) echo hotplug >>"$root/kexec.calls"; exit 1 ;;
esac
echo plain >>"$root/kexec.calls"
echo 1 >"$root/sys/kernel/kexec_crash_loaded"
"""


def test_a_failed_upgrade_counts_its_fallback(tmp_path: Path) -> None:
    """The --hotplug load fails and the engine loads it the previous way at once: the verb's
    outcome must say two plans ran (upgrade, fallback), not that the upgrade ran alone (which
    `crashhp upgrade` reports as "loaded with --hotplug, but crash_hotplug still reads 0")."""
    reader = machine(tmp_path)
    (tmp_path / "sys/kernel/crash_elfcorehdr_size").write_text("917616\n")
    (tmp_path / "proc/cmdline").write_text("root=/dev/vda crashkernel=256M\n")
    program = tmp_path / "kexec"
    program.write_text(FAKE_KEXEC.format(root=tmp_path))
    program.chmod(0o755)
    (tmp_path / "vmlinuz").write_text("kernel")
    (tmp_path / "initrd").write_text("initrd")
    cfg = Config.model_validate(
        {
            "coalesce": {"settle_ms": 20},
            "reload": {"method": "kexec", "runner": "direct", "timeout_s": 10},
            "kexec": {
                "program": str(program),
                "kernel": str(tmp_path / "vmlinuz"),
                "initrd": str(tmp_path / "initrd"),
                "syscall": "classic",
            },
        }
    )
    outcome = OneShot(cfg, upgrade=True, reader=reader, state_dir=tmp_path / "r").run()
    assert (tmp_path / "kexec.calls").read_text().split() == ["hotplug", "plain"]
    assert [e.event for e in outcome.events if e.event == "upgrade_failed"] == ["upgrade_failed"]
    assert [p.purpose for p in outcome.plans] == ["upgrade", "reload"], outcome.plans
    assert "--hotplug" not in outcome.plans[1].steps[-1]
    assert outcome.action == "reload"
    assert outcome.crash_loaded is True
