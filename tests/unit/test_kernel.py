"""Reading the kernel's files from a fake sysfs tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from crashhp import kernel
from crashhp.model import Subsystem, Verdict


def fake_sysfs(root: Path, *, cpu: str | None, mem: str | None, loaded: str | None) -> Path:
    for sub, value in ((Subsystem.CPU, cpu), (Subsystem.MEMORY, mem)):
        d = root / "devices/system" / sub.value
        d.mkdir(parents=True, exist_ok=True)
        if value is not None:
            (d / "crash_hotplug").write_text(value)
    (root / "kernel").mkdir(parents=True, exist_ok=True)
    if loaded is not None:
        (root / "kernel/kexec_crash_loaded").write_text(loaded)
    return root


@pytest.mark.parametrize(
    ("text", "verdict"),
    [("1\n", Verdict.KERNEL_UPDATES), ("0\n", Verdict.NEEDS_RELOAD), ("2\n", Verdict.UNREADABLE)],
)
def test_verdicts(tmp_path: Path, text: str, verdict: Verdict) -> None:
    fake_sysfs(tmp_path, cpu=text, mem=None, loaded="1")
    assert kernel.read_verdict(Subsystem.CPU, tmp_path) is verdict
    assert kernel.read_verdict(Subsystem.MEMORY, tmp_path) is Verdict.ABSENT


def test_unreadable_file(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, cpu=None, mem=None, loaded="1")
    (tmp_path / "devices/system/cpu/crash_hotplug").mkdir()  # reading a directory fails
    assert kernel.read_verdict(Subsystem.CPU, tmp_path) is Verdict.UNREADABLE


def test_read_state(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, cpu="1\n", mem="0\n", loaded="1\n")
    (tmp_path / "kernel/crash_elfcorehdr_size").write_text("917616\n")
    (tmp_path / "kernel/kexec_crash_size").write_text("268435456\n")
    state = kernel.read_state(tmp_path)
    assert state.crash_loaded is True
    assert state.verdict(Subsystem.CPU) is Verdict.KERNEL_UPDATES
    assert state.verdict(Subsystem.MEMORY) is Verdict.NEEDS_RELOAD
    assert (state.elfcorehdr_size, state.crash_size) == (917616, 268435456)


def test_no_kexec(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, cpu=None, mem=None, loaded=None)
    state = kernel.read_state(tmp_path)
    assert state.crash_loaded is None
    assert state.elfcorehdr_size is None
    assert kernel.read_crash_loaded(tmp_path) is None
    (tmp_path / "kernel/kexec_crash_loaded").write_text("0\n")
    assert kernel.read_crash_loaded(tmp_path) is False


def test_topology_changes_with_cpus_and_ram(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", cpu="0", mem="0", loaded="1")
    proc = tmp_path / "proc"
    proc.mkdir()
    (sysfs / "devices/system/cpu/present").write_text("0-1\n")
    (sysfs / "devices/system/cpu/online").write_text("0-1\n")
    (proc / "iomem").write_text("00001000-0009ffff : System RAM\n000a0000-000fffff : Reserved\n")
    first = kernel.topology(sysfs, proc)
    assert first == kernel.topology(sysfs, proc)
    (proc / "iomem").write_text(
        "00001000-0009ffff : System RAM\n000a0000-000fffff : Reserved\n"
        "100000000-13fffffff : System RAM\n"
    )
    second = kernel.topology(sysfs, proc)
    assert second != first
    (proc / "iomem").write_text(
        "00001000-0009ffff : System RAM\n000a0000-000fffff : Reserved changed\n"
        "100000000-13fffffff : System RAM\n"
    )
    assert kernel.topology(sysfs, proc) == second  # only System RAM counts
    (sysfs / "devices/system/cpu/online").write_text("0-2\n")
    assert kernel.topology(sysfs, proc) != second
