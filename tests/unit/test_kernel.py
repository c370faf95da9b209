"""Reading the kernel's files from a fake sysfs tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crashhp import kernel
from crashhp.arch import Arch
from crashhp.model import Layout, Subsystem, Verdict, changed_parts


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


RAM = "00001000-0009ffff : System RAM\n000a0000-000fffff : Reserved\n"
DIMM = "100000000-13fffffff : System RAM\n"


def memory_tree(sysfs: Path, blocks: range | list[int], size: str = "8000000") -> Path:
    """/sys/devices/system/memory with exactly these memoryN blocks."""
    memory = sysfs / "devices/system/memory"
    memory.mkdir(parents=True, exist_ok=True)
    for old in memory.glob("memory*"):
        shutil.rmtree(old)
    (memory / "block_size_bytes").write_text(f"{size}\n")
    for n in blocks:
        (memory / f"memory{n}").mkdir()
    return memory


def test_topology_changes_with_cpus(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", cpu="0", mem="0", loaded="1")
    proc = tmp_path / "proc"
    proc.mkdir()
    memory_tree(sysfs, range(8))
    (sysfs / "devices/system/cpu/present").write_text("0-1\n")
    (sysfs / "devices/system/cpu/online").write_text("0-1\n")
    (proc / "iomem").write_text(RAM)
    second = kernel.topology(sysfs, proc)
    assert second == kernel.topology(sysfs, proc)
    # x86: kexec-tools writes a note per present CPU: online/offline changes nothing.
    (sysfs / "devices/system/cpu/online").write_text("0\n")
    assert kernel.topology(sysfs, proc, Arch.X86_64) == second
    # ppc64: the crash kernel's device tree lists online CPUs (hot-add is `online`).
    ppc = kernel.topology(sysfs, proc, Arch.PPC64)
    assert ppc != kernel.topology(sysfs, proc, Arch.X86_64)
    (sysfs / "devices/system/cpu/online").write_text("0-1\n")
    assert kernel.topology(sysfs, proc, Arch.PPC64) != ppc
    (sysfs / "devices/system/cpu/present").write_text("0-2\n")
    assert kernel.topology(sysfs, proc, Arch.X86_64) != second


def test_the_ram_part_is_the_memory_blocks(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", cpu="0", mem="0", loaded="1")
    proc = tmp_path / "proc"
    proc.mkdir()
    (sysfs / "devices/system/cpu/present").write_text("0-1\n")
    memory_tree(sysfs, range(8))
    (proc / "iomem").write_text(RAM + DIMM)
    first = kernel.topology(sysfs, proc)
    assert kernel.memory_blocks(sysfs) == "8000000 0-7"
    # One DIMM out, another of the same size in at other addresses, in one burst: the
    # number of ranges is the same, the blocks are not.
    memory_tree(sysfs, [*range(4), *range(12, 16)])
    assert kernel.memory_blocks(sysfs) == "8000000 0-3,12-15"
    moved = kernel.topology(sysfs, proc)
    assert changed_parts(first, moved) == {Subsystem.MEMORY}
    # Online or offline, a block is in the header (kexec-tools reads it as System RAM).
    (sysfs / "devices/system/memory/memory12/online").write_text("0\n")
    assert kernel.topology(sysfs, proc) == moved
    memory_tree(sysfs, range(8), size="10000000")  # the same ids, bigger blocks
    assert kernel.topology(sysfs, proc) != first
    memory_tree(sysfs, range(8))
    assert kernel.topology(sysfs, proc) == first
    # Other files of the directory are no blocks.
    for name in ("auto_online_blocks", "crash_hotplug", "probe", "memory_tiering"):
        (sysfs / "devices/system/memory" / name).touch(exist_ok=True)
    assert kernel.topology(sysfs, proc) == first


def test_the_ram_part_needs_no_privilege(tmp_path: Path) -> None:
    """Without CAP_SYS_ADMIN /proc/iomem shows zero addresses: the same fingerprint."""
    sysfs = fake_sysfs(tmp_path / "sys", cpu="0", mem="0", loaded="1")
    root, user = tmp_path / "root", tmp_path / "user"
    root.mkdir()
    user.mkdir()
    memory_tree(sysfs, range(8))
    (root / "iomem").write_text(RAM + DIMM)
    (user / "iomem").write_text(
        "00000000-00000000 : System RAM\n00000000-00000000 : Reserved\n"
        "00000000-00000000 : System RAM\n"
    )
    assert kernel.topology(sysfs, root) == kernel.topology(sysfs, user)


def test_a_range_the_blocks_do_not_show_yet_or_any_more_counts(tmp_path: Path) -> None:
    """try_remove_memory() removes the blocks before it releases the range (and
    add_memory_resource() registers the range before the blocks): a load in between
    reads the range, so the fingerprint must move again when the range goes."""
    sysfs = fake_sysfs(tmp_path / "sys", cpu="0", mem="0", loaded="1")
    proc = tmp_path / "proc"
    proc.mkdir()
    memory_tree(sysfs, range(8))
    (proc / "iomem").write_text(RAM + DIMM)
    blocks_gone = kernel.topology(sysfs, proc)
    (proc / "iomem").write_text(RAM)
    assert changed_parts(blocks_gone, kernel.topology(sysfs, proc)) == {Subsystem.MEMORY}


def test_without_memory_hotplug_the_ranges_are_hashed(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", cpu="0", mem=None, loaded="1")
    (sysfs / "devices/system/memory").rmdir()
    proc = tmp_path / "proc"
    proc.mkdir()
    assert kernel.memory_blocks(sysfs) is None
    (proc / "iomem").write_text(RAM)
    first = kernel.topology(sysfs, proc)
    assert first == kernel.topology(sysfs, proc)
    (proc / "iomem").write_text(RAM + DIMM)
    second = kernel.topology(sysfs, proc)
    assert second != first
    (proc / "iomem").write_text(RAM.replace("Reserved", "Reserved changed") + DIMM)
    assert kernel.topology(sysfs, proc) == second  # only System RAM counts
    (proc / "iomem").unlink()
    assert kernel.topology(sysfs, proc) not in (first, second)


def test_the_new_kexec_directory_alone(tmp_path: Path) -> None:
    """A kernel with only /sys/kernel/kexec/ (the old names removed after 2028)."""
    fake_sysfs(tmp_path, cpu="0\n", mem="0\n", loaded=None)
    kexec = tmp_path / "kernel/kexec"
    kexec.mkdir()
    (kexec / "crash_loaded").write_text("1\n")
    (kexec / "crash_size").write_text("268435456\n")
    (kexec / "crash_elfcorehdr_size").write_text("4096\n")
    state = kernel.read_state(tmp_path)
    assert (state.layout, state.crash_loaded) == (Layout.KEXEC_DIR, True)
    assert (state.crash_size, state.elfcorehdr_size) == (268435456, 4096)
    (kexec / "crash_loaded").write_text("0\n")
    assert kernel.read_crash_loaded(tmp_path) is False


def test_the_new_directory_is_preferred(tmp_path: Path) -> None:
    """On 7.3 the old names are symlinks into kexec/; were they to disagree, kexec/ wins."""
    fake_sysfs(tmp_path, cpu="1\n", mem="1\n", loaded="0\n")
    kexec = tmp_path / "kernel/kexec"
    kexec.mkdir()
    (kexec / "crash_loaded").write_text("1\n")
    assert kernel.read_state(tmp_path).layout is Layout.KEXEC_DIR
    assert kernel.read_crash_loaded(tmp_path) is True
    (kexec / "crash_loaded").unlink()
    (kexec / "crash_loaded").symlink_to(tmp_path / "kernel/kexec_crash_loaded")
    assert kernel.read_crash_loaded(tmp_path) is False


def test_the_old_files_alone(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, cpu="1\n", mem="1\n", loaded="1\n")
    assert kernel.read_state(tmp_path).layout is Layout.LEGACY
    assert kernel.layout(tmp_path / "nothing") is Layout.NONE


def test_fadump(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, cpu="0\n", mem="0\n", loaded="0\n")
    assert kernel.read_fadump(tmp_path) is None
    fadump = tmp_path / "kernel/fadump"
    fadump.mkdir()
    for name, value in (("enabled", "1"), ("registered", "1"), ("hotplug_ready", "0")):
        (fadump / name).write_text(value + "\n")
    state = kernel.read_state(tmp_path)
    assert state.crash_loaded is False
    assert state.fadump is not None
    assert state.fadump.protects
    assert state.protected  # kexec_crash_loaded 0, and yet a crash would be dumped
    assert not state.fadump.hotplug_ready
