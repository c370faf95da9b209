"""kexec argv building, capability detection and command-line derivation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from crashhp import kexec, reload
from crashhp.config import Config, KexecSyscall
from crashhp.kexec import Capabilities, crash_cmdline, load_argv, parse_help

# Lines as kexec-tools 2.0.29 prints them in `kexec --help`.
HELP_2_0_29 = """
 -p, --load-panic     Load the new kernel for use on panic.
 -u, --unload         Unload the current kexec target kernel.
 -s, --kexec-file-syscall Use file based syscall for kexec operation
 -c, --kexec-syscall  Use the kexec_load syscall for for compatibility
                      with systems that don't support the kexec_file_load
                      syscall.
 -a, --kexec-syscall-auto  Use file based syscall for kexec and fall
                      back to the compatibility syscall when file based
                      syscall is not supported or the kernel did not
                      understand the image (default)
     --hotplug        Do in-kernel update of kexec segments on CPU/Memory
                      hot un/plug.
"""
HELP_2_0_20 = """
 -p, --load-panic     Load the new kernel for use on panic.
 -s, --kexec-file-syscall Use file based syscall for kexec operation
 -c, --kexec-syscall  Use the kexec_load syscall for for compatibility
"""
ALL = Capabilities("/sbin/kexec", frozenset({"file", "classic", "auto", "hotplug"}), True)
OLD_TOOLS = Capabilities("/sbin/kexec", frozenset({"file", "classic"}), True)
OLD_KERNEL = Capabilities("/sbin/kexec", frozenset({"file", "classic", "auto", "hotplug"}), False)


def test_parse_help() -> None:
    assert parse_help(HELP_2_0_29) == {"file", "classic", "auto", "hotplug"}
    assert parse_help(HELP_2_0_20) == {"file", "classic"}
    assert parse_help("") == frozenset()


def argv(caps: Capabilities, syscall: KexecSyscall, hotplug: bool = True) -> list[str]:
    return list(
        load_argv(caps, "/boot/vmlinuz", "/boot/initrd", "console=ttyS0", syscall, hotplug=hotplug)
    )


def test_classic_gets_hotplug_only_when_kernel_and_tools_allow_it() -> None:
    tail = ["--append=console=ttyS0", "--initrd=/boot/initrd", "/boot/vmlinuz"]
    assert argv(ALL, KexecSyscall.CLASSIC) == ["/sbin/kexec", "-p", "-c", "--hotplug", *tail]
    assert argv(ALL, KexecSyscall.CLASSIC, hotplug=False) == ["/sbin/kexec", "-p", "-c", *tail]
    assert "--hotplug" not in argv(OLD_TOOLS, KexecSyscall.CLASSIC)  # kexec would reject it
    assert "--hotplug" not in argv(OLD_KERNEL, KexecSyscall.CLASSIC)  # kexec would abort
    assert argv(ALL, KexecSyscall.FILE) == ["/sbin/kexec", "-p", "-s", *tail]
    assert argv(ALL, KexecSyscall.AUTO)[:4] == ["/sbin/kexec", "-p", "-a", "--hotplug"]
    assert argv(OLD_TOOLS, KexecSyscall.AUTO) == ["/sbin/kexec", "-p", *tail]
    # Never an unload first: that would widen the window without a crash kernel.
    assert "-u" not in argv(ALL, KexecSyscall.AUTO)
    assert kexec.unload_argv(ALL) == ("/sbin/kexec", "-p", "-u")


def test_no_initrd() -> None:
    out = load_argv(ALL, "/boot/vmlinuz", None, "x", KexecSyscall.FILE, hotplug=True)
    assert not any(a.startswith("--initrd") for a in out)


@pytest.mark.parametrize(
    ("running", "append", "expected"),
    [
        (
            "BOOT_IMAGE=/vmlinuz-6.12 root=UUID=abc ro quiet crashkernel=256M",
            "irqpoll nr_cpus=1 reset_devices",
            "root=UUID=abc ro irqpoll nr_cpus=1 reset_devices",
        ),
        (
            "console=ttyS0 nr_cpus=8 hugepages=100 hugepagesz=1G "
            "memhp_default_state=online_movable",
            "irqpoll nr_cpus=1",
            "console=ttyS0 irqpoll nr_cpus=1",
        ),
        ("root=/dev/sda1 irqpoll", "irqpoll reset_devices", "root=/dev/sda1 irqpoll reset_devices"),
        ("root=/dev/sda1\n", "", "root=/dev/sda1"),
    ],
)
def test_crash_cmdline(running: str, append: str, expected: str) -> None:
    assert crash_cmdline(running, append) == expected


def fake_kexec(tmp_path: Path, help_text: str) -> Path:
    program = tmp_path / "kexec"
    program.write_text(f"#!/bin/sh\ncat <<'EOF'\n{help_text}\nEOF\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


def config_for(tmp_path: Path, program: Path, **kexec_settings: object) -> Config:
    (tmp_path / "vmlinuz").write_text("kernel")
    (tmp_path / "initrd").write_text("initrd")
    return Config.model_validate(
        {
            "reload": {"method": "kexec"},
            "kexec": {
                "program": str(program),
                "kernel": str(tmp_path / "vmlinuz"),
                "initrd": str(tmp_path / "initrd"),
                **kexec_settings,
            },
        }
    )


def fake_tree(tmp_path: Path, elfcorehdr: bool) -> tuple[Path, Path]:
    sysfs = tmp_path / "sys"
    (sysfs / "kernel").mkdir(parents=True)
    if elfcorehdr:
        (sysfs / "kernel/crash_elfcorehdr_size").write_text("917616\n")
    procfs = tmp_path / "proc"
    procfs.mkdir()
    (procfs / "cmdline").write_text("root=/dev/vda crashkernel=256M console=ttyS0\n")
    return sysfs, procfs


def test_detect_runs_kexec_help(tmp_path: Path) -> None:
    program = fake_kexec(tmp_path, HELP_2_0_29 * 3)  # longer than a Result's default tail
    sysfs, _ = fake_tree(tmp_path, elfcorehdr=True)
    caps = kexec.detect(config_for(tmp_path, program).kexec, sysfs)
    assert caps.options == {"file", "classic", "auto", "hotplug"}
    assert caps.classic_hotplug


def test_reload_plan_for_method_kexec(tmp_path: Path) -> None:
    program = fake_kexec(tmp_path, HELP_2_0_29)
    sysfs, procfs = fake_tree(tmp_path, elfcorehdr=True)
    config = config_for(tmp_path, program, syscall="classic")
    plan = reload.plan(config, sysfs=sysfs, procfs=procfs)
    assert plan.steps == (
        (
            str(program),
            "-p",
            "-c",
            "--hotplug",
            "--append=root=/dev/vda console=ttyS0 irqpoll nr_cpus=1 reset_devices",
            f"--initrd={tmp_path / 'initrd'}",
            str(tmp_path / "vmlinuz"),
        ),
    )


def test_upgrade_plan_and_its_fallback(tmp_path: Path) -> None:
    program = fake_kexec(tmp_path, HELP_2_0_29)
    sysfs, procfs = fake_tree(tmp_path, elfcorehdr=True)
    config = config_for(tmp_path, program, syscall="classic")
    plan = reload.upgrade_plan(config, sysfs=sysfs, procfs=procfs)
    assert plan.purpose == "upgrade"
    assert plan.steps[0][1:4] == ("-p", "-c", "--hotplug")
    assert plan.fallback is not None
    assert plan.fallback.steps[0][1:3] == ("-p", "-c")
    assert "--hotplug" not in plan.fallback.steps[0]


def test_upgrade_without_kernel_support_for_classic(tmp_path: Path) -> None:
    program = fake_kexec(tmp_path, HELP_2_0_29)
    sysfs, procfs = fake_tree(tmp_path, elfcorehdr=False)
    config = config_for(tmp_path, program, syscall="classic")
    with pytest.raises(reload.NoReloadMethod, match="crash_elfcorehdr_size"):
        reload.upgrade_plan(config, sysfs=sysfs, procfs=procfs)
    # auto falls back to kexec_file_load, which the kernel keeps current by itself
    auto = reload.upgrade_plan(config_for(tmp_path, program), sysfs=sysfs, procfs=procfs)
    assert auto.steps[0][1:3] == ("-p", "-s")


def test_missing_pieces_are_clear(tmp_path: Path) -> None:
    program = fake_kexec(tmp_path, HELP_2_0_29)
    sysfs, procfs = fake_tree(tmp_path, elfcorehdr=True)
    config = config_for(tmp_path, program, initrd=str(tmp_path / "nope"))
    with pytest.raises(reload.NoReloadMethod, match=r"kexec\.initrd .* does not exist"):
        reload.plan(config, sysfs=sysfs, procfs=procfs)
    config = config_for(tmp_path, tmp_path / "no-kexec")
    with pytest.raises(reload.NoReloadMethod, match="not executable"):
        reload.plan(config, sysfs=sysfs, procfs=procfs)


def test_auto_prefers_kexec_load_with_hotplug_unless_locked_down() -> None:
    assert kexec.effective_syscall(KexecSyscall.AUTO, ALL) is KexecSyscall.CLASSIC
    locked = Capabilities("/sbin/kexec", ALL.options, True, lockdown=True)
    assert kexec.effective_syscall(KexecSyscall.AUTO, locked) is KexecSyscall.AUTO
    assert kexec.effective_syscall(KexecSyscall.AUTO, OLD_KERNEL) is KexecSyscall.AUTO
    assert kexec.effective_syscall(KexecSyscall.FILE, ALL) is KexecSyscall.FILE


def test_read_lockdown(tmp_path: Path) -> None:
    assert not kexec.read_lockdown(tmp_path)
    (tmp_path / "kernel/security").mkdir(parents=True)
    lockdown = tmp_path / "kernel/security/lockdown"
    lockdown.write_text("[none] integrity confidentiality\n")
    assert not kexec.read_lockdown(tmp_path)
    lockdown.write_text("none [integrity] confidentiality\n")
    assert kexec.read_lockdown(tmp_path)


def test_auto_upgrade_uses_kexec_load_with_hotplug(tmp_path: Path) -> None:
    program = fake_kexec(tmp_path, HELP_2_0_29)
    sysfs, procfs = fake_tree(tmp_path, elfcorehdr=True)
    plan = reload.upgrade_plan(config_for(tmp_path, program), sysfs=sysfs, procfs=procfs)
    assert plan.steps[0][1:4] == ("-p", "-c", "--hotplug")
    (sysfs / "kernel/security").mkdir()
    (sysfs / "kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    locked = reload.upgrade_plan(config_for(tmp_path, program), sysfs=sysfs, procfs=procfs)
    assert locked.steps[0][1:3] == ("-p", "-s")


def test_hotplug_only_with_the_old_size_file(tmp_path: Path) -> None:
    """kexec-tools 2.0.32 reads only /sys/kernel/crash_elfcorehdr_size for --hotplug and
    aborts the load without it: a kernel with only /sys/kernel/kexec/ gets no --hotplug."""
    program = fake_kexec(tmp_path, HELP_2_0_29)
    sysfs, _ = fake_tree(tmp_path, elfcorehdr=False)
    (sysfs / "kernel/kexec").mkdir()
    (sysfs / "kernel/kexec/crash_elfcorehdr_size").write_text("917616\n")
    caps = kexec.detect(config_for(tmp_path, program).kexec, sysfs)
    assert not caps.classic_hotplug
    (sysfs / "kernel/crash_elfcorehdr_size").symlink_to(
        sysfs / "kernel/kexec/crash_elfcorehdr_size"
    )
    assert kexec.detect(config_for(tmp_path, program).kexec, sysfs).classic_hotplug  # 7.3
