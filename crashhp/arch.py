"""Each architecture's rules for the crash kernel across hotplug. Pure: no I/O.

From the kernel's and kexec-tools' behaviour (docs/design.md, "Architectures"):

- x86_64: the elfcorehdr has one PT_LOAD per System RAM range and one CPU note per
  *present* CPU (kexec-tools) or per *possible* CPU (kexec_file_load). CPU online/offline
  changes neither, so it never needs a reload: the fingerprint holds present CPUs only.
- ppc64: a hot-added CPU arrives as ``online``, and the crash kernel's device tree must
  list it (a crash on a CPU missing from it hangs the kdump kernel): online CPUs count.
  A kexec_load image's memory ranges are what kexec-tools finds in the device tree, and
  kexec-tools 2.0.32 clips them at ``/chosen/linux,memory-limit``, which the kernel exports
  as the end of boot memory even without ``mem=``: hot-added memory lies above it and is left
  out (measured in the pseries guest: limit 0x80000000, a DIMM at 0x80000000 listed ASSIGNED
  in ibm,dynamic-memory-v2, and the vmcore after a reload lacked it;
  tests/system/test_ppc64.py). A reload
  with kexec_load then keeps CPUs current but not memory: only a load the kernel keeps
  current (``kexec -c --hotplug`` made before the memory arrives, or kexec_file_load)
  gives a complete dump.
- s390x: the kdump kernel builds the ELF header itself at dump time, so no reload is ever
  needed; crashhp observes and says why.
- arm64, riscv, loongarch and the rest: no crash hotplug in mainline; the loaded header
  is what kexec-tools saw, online CPUs included to be safe.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from crashhp.model import Fadump, Subsystem


class Arch(enum.StrEnum):
    X86_64 = "x86_64"
    PPC64 = "ppc64"
    S390X = "s390x"
    OTHER = "other"


def arch_of(machine: str) -> Arch:
    """The family of ``platform.machine()``."""
    if machine in {"x86_64", "amd64", "i686", "i386"}:
        return Arch.X86_64
    if machine.startswith(("ppc64", "powerpc64")):
        return Arch.PPC64
    if machine == "s390x":
        return Arch.S390X
    return Arch.OTHER


@dataclass(frozen=True, slots=True)
class Rules:
    arch: Arch
    # None: reloads may be needed; else why they never are (observe only).
    never_reload: str | None
    # Online CPUs are part of what the crash kernel describes (not only present ones).
    online_cpus_count: bool
    # None: a kexec_load reload describes all memory; else why it may not (a warning).
    kexec_load_memory_gap: str | None = None


def rules(arch: Arch) -> Rules:
    if arch is Arch.S390X:
        return Rules(
            arch,
            "s390x builds the crash dump's ELF header in the kdump kernel itself: "
            "hotplug never needs a reload",
            online_cpus_count=False,
        )
    if arch is Arch.X86_64:
        return Rules(arch, None, online_cpus_count=False)
    if arch is Arch.PPC64:
        return Rules(
            arch,
            None,
            online_cpus_count=True,
            kexec_load_memory_gap=(
                "on ppc64 kexec-tools builds a kexec_load crash kernel's memory ranges from "
                "the device tree and leaves hot-added memory out (it clips them at "
                "linux,memory-limit, the end of boot memory; kexec-tools 2.0.32), so a "
                "reload keeps CPUs current but not memory"
            ),
        )
    return Rules(arch, None, online_cpus_count=True)


def fadump_needs_reregistration(fadump: Fadump, changed: frozenset[Subsystem]) -> bool:
    """A memory change under a registered fadump needs a re-registration (through the
    distribution's tool: kdumpctl or kdump-config) unless the kernel reports
    ``hotplug_ready`` (6.10 and later update fadump's view themselves)."""
    return fadump.protects and Subsystem.MEMORY in changed and not fadump.hotplug_ready
