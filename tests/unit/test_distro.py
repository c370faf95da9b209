"""The distribution's dump command: kdump-tools' record and settings, read without a shell."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from crashhp import distro, reload
from crashhp.config import Config
from crashhp.distro import DumpCommandUnknown, ShellFileError, parse_assignments

# The settings part of /etc/default/kdump-tools as kdump-tools 1:1.10.7 (trixie) ships it.
KDUMP_TOOLS_DEFAULTS = """\
# kdump-tools configuration
# ---------------------------------------------------------------------------
# USE_KDUMP - controls kdump will be configured
#     0 - kdump kernel will not be loaded
#     1 - kdump kernel will be loaded and kdump is configured
#
USE_KDUMP=1


# ---------------------------------------------------------------------------
# Kdump Kernel:
# KDUMP_KERNEL - A full pathname to a kdump kernel.
# KDUMP_INITRD - A full pathname to the kdump initrd (if used).
#     If these are not set, kdump-config will try to use the current kernel
#     and initrd if it is relocatable.  Otherwise, you will need to specify
#     these manually.
KDUMP_KERNEL=/var/lib/kdump/vmlinuz
KDUMP_INITRD=/var/lib/kdump/initrd.img


# ---------------------------------------------------------------------------
# vmcore Handling:
KDUMP_COREDIR="/var/crash"
#KDUMP_FAIL_CMD="reboot -f"
#KDUMP_DUMP_DMESG=
#KDUMP_NUM_DUMPS=
#KDUMP_COMPRESSION=

#MAKEDUMP_ARGS="-c -d 31"

#KDUMP_KEXEC_ARGS=""
#KDUMP_CMDLINE=""
#KDUMP_CMDLINE_APPEND="reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll \
usbcore.nousb"

#HOSTTAG="hostname|[ip]"
#NFS="<nfs mount>"
#SSH="<user at server>"
"""
APPEND = "reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb"
RUNNING = "BOOT_IMAGE=/boot/vmlinuz-6.12.117+deb13-amd64 root=UUID=5d1c ro quiet"
# What kdump-config 1.10.7 writes to $KDUMP_COREDIR/kexec_cmd: `echo "$KEXEC_CMD"`, with
# the command line it built from /proc/cmdline (crashkernel= removed: a double space).
KEXEC_CMD = (
    f'/sbin/kexec -p --command-line="{RUNNING}  {APPEND}" '
    "--initrd=/var/lib/kdump/initrd.img /var/lib/kdump/vmlinuz\n"
)
RECORDED = (
    "/sbin/kexec",
    "-p",
    f"--command-line={RUNNING}  {APPEND}",
    "--initrd=/var/lib/kdump/initrd.img",
    "/var/lib/kdump/vmlinuz",
)
HELP = " -s, --kexec-file-syscall\n -c, --kexec-syscall\n -a, --kexec-syscall-auto\n --hotplug\n"
BTIME = 1_700_000_000


def test_the_packaged_settings_file() -> None:
    assert parse_assignments(KDUMP_TOOLS_DEFAULTS, "/etc/default/kdump-tools") == {
        "USE_KDUMP": "1",
        "KDUMP_KERNEL": "/var/lib/kdump/vmlinuz",
        "KDUMP_INITRD": "/var/lib/kdump/initrd.img",
        "KDUMP_COREDIR": "/var/crash",
    }
    tools = distro.KdumpTools(parse_assignments(KDUMP_TOOLS_DEFAULTS, "f"))
    assert (tools.record, tools.lock, tools.append) == (
        "/var/crash/kexec_cmd",
        "/var/crash/kdump_lock",
        APPEND,
    )


def test_shell_quoting_as_sh_assigns_it() -> None:
    text = (
        "B=1\n"
        'export A="x $B ${B}y \\"q\\" \\z" # comment\n'
        "C='a $B'\\\n"
        "d\n"
        "E=a\\ b F=2 ; G=\n"
        'KDUMP_CMDLINE_APPEND="$KDUMP_CMDLINE_APPEND"\n'.replace("$KDUMP_CMDLINE_APPEND", "$B")
    )
    assert parse_assignments(text, "f") == {
        "B": "1",
        "A": 'x 1 1y "q" \\z',
        "C": "a $Bd",
        "E": "a b",
        "F": "2",
        "G": "",
        "KDUMP_CMDLINE_APPEND": "1",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("KDUMP_COREDIR=$(hostname)", "/etc/default/kdump-tools: KDUMP_COREDIR: an expansion"),
        ("KDUMP_COREDIR=`hostname`", "KDUMP_COREDIR: command substitution"),
        ('KDUMP_CMDLINE="$UNSET x"', "KDUMP_CMDLINE: $UNSET is not set earlier in this file"),
        ("KDUMP_COREDIR=${X:-/var/crash}", "KDUMP_COREDIR: an expansion other than"),
        ('KDUMP_CMDLINE="open', "KDUMP_CMDLINE: unterminated double quote"),
        ("KDUMP_CMDLINE='open", "KDUMP_CMDLINE: unterminated single quote"),
        ("USE_KDUMP=1\n[ -e /x ] && USE_KDUMP=0", "line 2: not a NAME=value assignment"),
        ("USE_KDUMP=1>/dev/null", "USE_KDUMP: shell operator '>'"),
        (". /etc/other", "line 1: not a NAME=value assignment"),
    ],
)
def test_what_only_a_shell_could_read_is_refused(text: str, message: str) -> None:
    with pytest.raises(ShellFileError) as caught:
        parse_assignments(text, "/etc/default/kdump-tools")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_recorded_command_taken_apart() -> None:
    words = distro.split_command(KEXEC_CMD, "kexec_cmd")
    assert tuple(words) == RECORDED
    rec = distro.parse_recorded(words, "kexec_cmd")
    assert (rec.kernel, rec.initrd, rec.cmdline_option) == (
        "/var/lib/kdump/vmlinuz",
        "/var/lib/kdump/initrd.img",
        "--command-line",
    )
    assert rec.words()[-5:] == APPEND.split()
    assert rec.extra == ()
    # Secure boot adds -s; an ELF kernel --args-linux; then KDUMP_KEXEC_ARGS as they are.
    other = KEXEC_CMD.replace("-p ", "-p -s --args-linux -c --elf64-core-headers ")
    rec = distro.parse_recorded(distro.split_command(other, "f"), "f")
    assert rec.extra == ("--args-linux", "--elf64-core-headers")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("/sbin/kexec -p -u", "no kernel image"),
        ("/bin/echo -p --command-line=x /vmlinuz", "not a kexec command"),
        ("/sbin/kexec -l --command-line=x /vmlinuz", "-l is not a crash kernel load"),
        ("/sbin/kexec --command-line=x /vmlinuz", "no -p"),
        ("/sbin/kexec -p --initrd=/i /vmlinuz", "no --command-line"),
        ("/sbin/kexec -ps --command-line=x /vmlinuz", "combined short options"),
        ("/sbin/kexec -p --command-line=$X /vmlinuz", "$X: a recorded command"),
        ("/sbin/kexec -p --command-line=x /v; rm -rf /", "shell operator ';'"),
        ("/sbin/kexec -p --command-line=x /v\n/sbin/kexec -p -u\n", "more than one command"),
    ],
)
def test_records_that_are_no_plain_crash_load_are_refused(command: str, message: str) -> None:
    with pytest.raises(DumpCommandUnknown, match="^kexec_cmd: .*" + message.replace("$", r"\$")):
        distro.parse_recorded(distro.split_command(command, "kexec_cmd"), "kexec_cmd")


def test_a_record_must_agree_with_the_settings() -> None:
    rec = distro.parse_recorded(list(RECORDED), "kexec_cmd")
    distro.check_recorded(rec, distro.KdumpTools({}), RUNNING)
    with pytest.raises(DumpCommandUnknown, match="does not end with KDUMP_CMDLINE_APPEND"):
        distro.check_recorded(
            rec, distro.KdumpTools({"KDUMP_CMDLINE_APPEND": "nr_cpus=1"}), RUNNING
        )
    with pytest.raises(DumpCommandUnknown, match="not KDUMP_CMDLINE plus"):
        distro.check_recorded(rec, distro.KdumpTools({"KDUMP_CMDLINE": "root=/dev/vda"}), RUNNING)
    mine = {"KDUMP_CMDLINE": RUNNING}
    distro.check_recorded(rec, distro.KdumpTools(mine), "other")
    with pytest.raises(DumpCommandUnknown, match=r"KDUMP_KEXEC_ARGS .* are not in it"):
        distro.check_recorded(
            rec, distro.KdumpTools({"KDUMP_KEXEC_ARGS": "--elf64-core-headers"}), RUNNING
        )
    # This boot's /proc/cmdline, less what kdump-config's sed removes, begins it.
    distro.check_recorded(rec, distro.KdumpTools({}), f"crashkernel=256M {RUNNING} hugepages=4")
    with pytest.raises(DumpCommandUnknown, match="not this boot's /proc/cmdline"):
        distro.check_recorded(rec, distro.KdumpTools({}), f"{RUNNING} console=ttyS0")
    # crashhp's own guess of old: no systemd.unit=, so the crash boot would save nothing.
    guess = distro.parse_recorded(
        ["/sbin/kexec", "-p", f"--append={RUNNING} irqpoll nr_cpus=1 reset_devices", "/v"], "f"
    )
    with pytest.raises(DumpCommandUnknown, match=r"systemd\.unit=kdump-tools-dump\.service"):
        distro.check_recorded(guess, distro.KdumpTools({}), RUNNING)


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def debian(
    tmp_path: Path, *, settings: str = KDUMP_TOOLS_DEFAULTS, record: str = KEXEC_CMD
) -> dict[str, Any]:
    """A trixie-like tree: kdump-tools' settings, its record and files, kexec, flock."""
    root = tmp_path / "root"
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/kdump-tools").write_text(settings)
    try:
        coredir = distro.KdumpTools(parse_assignments(settings, "f")).coredir
    except ShellFileError:
        coredir = "/var/crash"
    (root / coredir.lstrip("/")).mkdir(parents=True)
    (root / coredir.lstrip("/") / "kexec_cmd").write_text(record)
    (root / "var/lib/kdump").mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img"):
        (root / "var/lib/kdump" / name).write_text(name)
    executable(root / "sbin/kexec", f"#!/bin/sh\ncat <<'EOF'\n{HELP}\nEOF\n")
    bin_dir = tmp_path / "bin"
    for tool in ("kdump-config", "flock"):
        executable(bin_dir / tool, "#!/bin/sh\nexit 0\n")
    sysfs = tmp_path / "sys"
    (sysfs / "kernel").mkdir(parents=True)
    (sysfs / "kernel/crash_elfcorehdr_size").write_text("917616\n")
    procfs = tmp_path / "proc"
    procfs.mkdir()
    (procfs / "stat").write_text(f"cpu  1 2 3\nbtime {BTIME}\nprocesses 9\n")
    (procfs / "cmdline").write_text(f"{RUNNING} crashkernel=256M\n")
    return {"root": root, "path": str(bin_dir), "sysfs": sysfs, "procfs": procfs}


KEXEC = Config.model_validate({"reload": {"method": "kexec"}})
DEFAULT = Config()


def test_method_kexec_repeats_kdump_tools_load_hotplug_capably(tmp_path: Path) -> None:
    tree = debian(tmp_path)
    flock = (f"{tree['path']}/flock", "-w", "120", "/var/crash/kdump_lock")
    plan = reload.plan(KEXEC, **tree)
    # The recorded command with only the syscall options chosen by crashhp, under the
    # lock kdump-config's own try-reload takes.
    assert plan.steps == ((*flock, "/sbin/kexec", "-p", "-c", "--hotplug", *RECORDED[2:]),)
    # An admin's kexec.program runs crashhp's loads; the fallback stays the record.
    mine = str(tree["root"] / "sbin/kexec")
    own = Config.model_validate({"kexec": {"program": mine}})
    plan = reload.upgrade_plan(own, **tree)
    assert plan.steps == ((*flock, mine, "-p", "-c", "--hotplug", *RECORDED[2:]),)
    assert plan.fallback is not None
    assert plan.fallback.steps == ((*flock, *RECORDED),)


def test_upgrade_falls_back_to_exactly_the_recorded_load(tmp_path: Path) -> None:
    tree = debian(tmp_path)
    flock = (f"{tree['path']}/flock", "-w", "120", "/var/crash/kdump_lock")
    for config in (DEFAULT, KEXEC):
        plan = reload.upgrade_plan(config, **tree)
        assert plan.steps == ((*flock, "/sbin/kexec", "-p", "-c", "--hotplug", *RECORDED[2:]),)
        assert plan.fallback is not None
        assert plan.fallback.steps == ((*flock, *RECORDED),)
    assert reload.upgrade_unavailable(DEFAULT, **tree) is None
    # Under lockdown kexec_load is refused: kexec_file_load, which the kernel keeps current.
    (tree["sysfs"] / "kernel/security").mkdir()
    (tree["sysfs"] / "kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    plan = reload.upgrade_plan(DEFAULT, **tree)
    assert plan.steps[0][4:7] == ("/sbin/kexec", "-p", "-s")


def test_kdump_config_reload_takes_kdump_tools_lock(tmp_path: Path) -> None:
    settings = KDUMP_TOOLS_DEFAULTS.replace('="/var/crash"', "=/srv/dumps")
    tree = debian(tmp_path, settings=settings)
    plan = reload.plan(DEFAULT, **tree)
    assert plan.steps == (
        (
            f"{tree['path']}/flock",
            "-w",
            "120",
            "/srv/dumps/kdump_lock",
            f"{tree['path']}/kdump-config",
            "reload",
        ),
    )
    # kexec_cmd lives in KDUMP_COREDIR too
    assert reload.upgrade_plan(DEFAULT, **tree).fallback is not None
    # Without flock(1) (util-linux), as before: the tool alone.
    (Path(tree["path"]) / "flock").unlink()
    assert reload.plan(DEFAULT, **tree).steps == ((f"{tree['path']}/kdump-config", "reload"),)


def refusal(config: Config, tree: dict[str, Any]) -> str:
    with pytest.raises(reload.NoReloadMethod) as caught:
        reload.upgrade_plan(config, **tree)
    message = str(caught.value)
    assert reload.upgrade_unavailable(config, **tree) == message
    with pytest.raises(reload.NoReloadMethod):
        reload.plan(KEXEC, **tree)
    return message


def test_no_record_from_this_boot_no_crashhp_load(tmp_path: Path) -> None:
    tree = debian(tmp_path)
    record = tree["root"] / "var/crash/kexec_cmd"
    os.utime(record, (BTIME - 60, BTIME - 60))  # the clock stepped after the load
    assert reload.upgrade_unavailable(DEFAULT, **tree) is None
    os.utime(record, (BTIME - 600, BTIME - 600))
    assert "written before this boot" in refusal(DEFAULT, tree)
    record.unlink()
    assert "kdump-tools recorded no kexec command (/var/crash/kexec_cmd is missing)" in refusal(
        DEFAULT, tree
    )


def test_records_that_disagree_or_lost_their_files_are_refused(tmp_path: Path) -> None:
    settings = KDUMP_TOOLS_DEFAULTS + 'KDUMP_CMDLINE_APPEND="nr_cpus=1 systemd.unit=x"\n'
    message = refusal(DEFAULT, debian(tmp_path / "a", settings=settings))
    assert message.startswith("cannot establish kdump-tools' dump command: /var/crash/kexec_cmd")
    assert "run `kdump-config reload`" in message
    tree = debian(tmp_path / "b")
    (tree["root"] / "var/lib/kdump/initrd.img").unlink()
    assert "its initrd /var/lib/kdump/initrd.img no longer exists" in refusal(DEFAULT, tree)
    broken = debian(tmp_path / "c", settings="KDUMP_COREDIR=$(pwd)\n", record="")
    assert "/etc/default/kdump-tools: KDUMP_COREDIR:" in refusal(DEFAULT, broken)


def test_no_tool_and_no_kexec_keys_no_guess(tmp_path: Path) -> None:
    tree = debian(tmp_path)
    (tree["root"] / "etc/default/kdump-tools").unlink()
    (Path(tree["path"]) / "kdump-config").unlink()
    assert "set kexec.initrd and kexec.cmdline" in refusal(KEXEC, tree)
    # The admin's own kernel without an initrd: still no guess of one.
    own = Config.model_validate(
        {"reload": {"method": "kexec"}, "kexec": {"kernel": str(tree["root"] / "sbin/kexec")}}
    )
    assert "crashhp does not guess the crash kernel's initrd" in refusal(own, tree)


def test_fedora_and_opensuse_are_told_the_tools_own_setting(tmp_path: Path) -> None:
    tree = debian(tmp_path)
    (tree["root"] / "etc/default/kdump-tools").unlink()
    (Path(tree["path"]) / "kdump-config").unlink()
    executable(Path(tree["path"]) / "kdumpctl", "#!/bin/sh\n")
    (tree["root"] / "etc/sysconfig").mkdir()
    (tree["root"] / "etc/sysconfig/kdump").write_text(
        'KDUMP_COMMANDLINE_REMOVE="hugepages hugepagesz slub_debug quiet"\n'
        'KDUMP_COMMANDLINE_APPEND="irqpoll nr_cpus=1 reset_devices cgroup_disable=memory"\n'
        'KEXEC_ARGS=""\n'
    )
    message = refusal(DEFAULT, tree)
    assert "kdumpctl builds the crash kernel's command line at each load" in message
    assert "to KEXEC_ARGS in /etc/sysconfig/kdump (now '') and run `kdumpctl restart`" in message
    (Path(tree["path"]) / "kdumpctl").unlink()
    executable(tree["root"] / "usr/lib/kdump/load.sh", "#!/bin/bash\n")
    assert "KEXEC_OPTIONS in /etc/sysconfig/kdump" in refusal(DEFAULT, tree)
