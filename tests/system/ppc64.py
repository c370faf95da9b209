"""The ppc64le guest: Debian trixie's powerpc64le 6.12 kernel and a ppc64el userland under
`qemu-system-ppc64 -machine pseries` (TCG), with spapr CPU cores and pc-dimm hotplug.

    python -m tests.system.ppc64       # build or reuse the assets, boot once, print the facts

The assets are cached next to the x86 ones (``cache_root()``) under ``ppc64le-*`` names, keyed
on their inputs: the kernel package's version, and the recipe plus every package version for
the rootfs. The rootfs is a foreign debootstrap (``--arch=ppc64el --foreign``) whose second
stage runs through qemu-user-static and binfmt_misc; it reuses the x86 recipe's package list
and customisation. Every heavy step runs under ``nice -n 19``: other engineers' guests come
first on this 2-core machine. The guest itself is `tests.system.vm.Vm` with the pseries
hardware: same agent, recorder, overlay and machine-wide QEMU lock.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Any

from tests.system import assets as x86
from tests.system.assets import Apt, Assets, cache_root, log, run
from tests.system.scenarios import Guest
from tests.system.vm import COMMON_ARGS, Vm, VmError

ARCH = "ppc64el"
# The kernel is trixie's 6.12. The userland is forky's: this machine's mirror does not serve
# trixie's ppc64el point-release updates (libc6 2.41-12+deb13u5, zlib1g, base-files, apt and
# six more answer 404), so a trixie ppc64el debootstrap cannot finish here; forky's pool is
# served. debootstrap 1.0.128 (bookworm) has no forky script: forky uses sid's.
USERLAND_SUITE = "forky"
DEBOOTSTRAP_SCRIPT = "/usr/share/debootstrap/scripts/sid"
KERNEL_PATTERN = r"^linux-image-6\.12\.[0-9]+\+deb13-powerpc64le$"
# Bump when the ppc64le-specific steps below change.
RECIPE_VERSION = 1
QEMU = "qemu-system-ppc64"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
TIMEOUT_SECOND_STAGE_S = 5400

# pseries: cores of SMT threads; QEMU 7.2 hot-plugs whole cores (spapr-cpu-core, by core-id).
THREADS = 1
BOOT_CPUS = 2
MAX_CPUS = 8
MEMORY = "2G,slots=8,maxmem=10G"
# The x86 rootfs masks serial-getty@ttyS0; the console here is hvc0.
CMDLINE = (
    "console=hvc0 crashkernel=512M memhp_default_state=online_movable panic=-1 "
    "systemd.show_status=false systemd.mask=serial-getty@hvc0.service"
)
BOOT_TIMEOUT_S = 1200.0
CRASH_APPEND = "console=hvc0 irqpoll nr_cpus=1 reset_devices"
# Why a guest that will crash runs thread=multi (PpcVm(mttcg=True)): after the panic the CPUs
# that did not crash spin in the held loop at real address 0x60 (`__secondary_hold`) for good,
# since the crash kernel (nr_cpus=1) never releases them. Single-threaded TCG runs the vCPUs
# round-robin, and each hypercall of the crash kernel's CPU (its early console writes one
# character per H_PUT_TERM_CHAR) seems to hand the thread to the spinning vCPU for a slice:
# the crash kernel printed about ten characters a second (a line per 5-10 s, sampled NIPs
# `__secondary_hold+0x4c` and `plpar_hcall_norets+0xc`) and had not got past its early
# boot messages 240 s after the panic. With thread=multi it boots, writes the vmcore head and
# powers off 3.5-11 s after the panic.


class PpcApt(Apt):
    """The trixie archive's ppc64el packages through the same private apt config."""

    def __init__(self, root: Path, mirror: str, suite: str = x86.SUITE) -> None:
        super().__init__(root, mirror, suite)
        self.options = [
            "-oAPT::Architecture=" + ARCH if o.startswith("-oAPT::Architecture=") else o
            for o in self.options
        ]

    def kernel_packages(self) -> list[str]:
        """Every 6.12 image of the flavour, newest first (the mirror may not serve the newest)."""
        out = run(["apt-cache", *self.options, "pkgnames", "linux-image-6.12"], x86.TIMEOUT_APT_S)
        names = [n for n in out.stdout.split() if re.match(KERNEL_PATTERN, n)]
        if not names:
            raise RuntimeError(f"no package matching {KERNEL_PATTERN} in {x86.SUITE}")
        return sorted(names, key=lambda n: [int(x) for x in re.findall(r"\d+", n)], reverse=True)


def lower_priority() -> None:
    """Nice 19 for this process and everything it starts (debootstrap, qemu-user, cpio, QEMU)."""
    os.setpriority(os.PRIO_PROCESS, 0, 19)


def _binfmt() -> None:
    """Make the host run ppc64le ELF binaries through qemu-user-static (debootstrap's 2nd stage)."""
    if not (BINFMT / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], 30)
    entry = BINFMT / "qemu-ppc64le"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        run(["update-binfmts", "--enable", "qemu-ppc64le"], 60)
    if not entry.read_text().startswith("enabled"):
        raise RuntimeError(f"{entry} is not enabled: {entry.read_text()}")


def _newest_kernel(root: Path, apt: PpcApt) -> tuple[str, str, Path]:
    """The newest 6.12 image the mirror actually serves (seen: the index lists 6.12.117 for
    ppc64el while the pool answers 404 for it and serves 6.12.107)."""
    errors: list[str] = []
    for package in apt.kernel_packages():
        version = apt.versions([package])[package]
        try:
            kver, vmlinux = x86._kernel(
                root, apt, package, version, name="ppc64le-kernel", image="vmlinux"
            )
        except RuntimeError as exc:
            if "404" not in str(exc):
                raise
            log(f"{package} {version}: the mirror answers 404, trying an older one")
            errors.append(f"{package}: 404")
            continue
        return package, kver, vmlinux
    raise RuntimeError(f"no ppc64el 6.12 kernel could be downloaded: {errors}")


def _debootstrap(rootfs: Path, mirror: str) -> None:
    start = time.monotonic()
    log(f"debootstrap --arch={ARCH} --foreign {USERLAND_SUITE}: first stage")
    run(
        [
            "debootstrap",
            f"--arch={ARCH}",
            "--foreign",
            "--variant=minbase",
            f"--include={','.join(x86.GUEST_PACKAGES)}",
            USERLAND_SUITE,
            str(rootfs),
            mirror,
            DEBOOTSTRAP_SCRIPT,
        ],
        x86.TIMEOUT_DEBOOTSTRAP_S,
    )
    log(f"first stage done in {time.monotonic() - start:.0f} s; second stage under qemu-user")
    _binfmt()
    start = time.monotonic()
    run(
        ["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"],
        TIMEOUT_SECOND_STAGE_S,
    )
    log(f"second stage done in {time.monotonic() - start:.0f} s")


def ensure() -> Assets:
    """Build what is missing and return the ppc64le assets. Raises (never skips)."""
    lower_priority()
    root = cache_root()
    start = time.monotonic()
    with x86.locked(root):
        mirror = x86.host_mirror()
        apt = PpcApt(root / "apt-ppc64el", mirror)
        apt.refresh()
        userland = PpcApt(root / f"apt-ppc64el-{USERLAND_SUITE}", mirror, USERLAND_SUITE)
        userland.refresh()
        versions = userland.versions(list(x86.GUEST_PACKAGES))
        package, kver, vmlinux = _newest_kernel(root, apt)
        versions[package] = apt.versions([package])[package]
        recipe: dict[str, Any] = {
            "arch": ARCH,
            "kernel_suite": x86.SUITE,
            "suite": USERLAND_SUITE,
            "packages": x86.GUEST_PACKAGES,
            "masked": x86.MASKED_UNITS,
            "trimmed": x86.TRIMMED,
            "recipe": [x86.RECIPE_VERSION, RECIPE_VERSION],
            "versions": versions,
        }
        _binfmt()  # the customisation runs ldd in the ppc64el rootfs
        rootfs_cpio = x86._rootfs(
            root,
            mirror,
            x86._key(recipe),
            vmlinux.parent,
            kver,
            name="ppc64le-rootfs",
            bootstrap=_debootstrap,
            image="vmlinux",
        )
        manifest_path = rootfs_cpio.parent / "manifest.json"
        if not manifest_path.exists():
            manifest_path.write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
        manifest: dict[str, object] = json.loads(manifest_path.read_text())
    a = Assets(kver, vmlinux, rootfs_cpio, None, manifest)
    log(f"ppc64le ready in {time.monotonic() - start:.0f} s under {root}: {a.describe()}")
    return a


class PpcVm(Vm):
    """The guest on `-machine pseries` (TCG): spapr CPU cores by core-id, pc-dimm memory.

    The serial console is the spapr VTY (`console=hvc0`); the agent's virtio-serial port sits
    on the pseries PCI host bridge as on x86. QEMU runs at nice 19 (inherited).
    """

    qemu = QEMU
    boot_timeout_s = BOOT_TIMEOUT_S

    def __init__(
        self,
        assets: Assets,
        name: str = "ppc64",
        cmdline: str = CMDLINE,
        *,
        no_reboot: bool = False,
        mttcg: bool = False,
    ) -> None:
        super().__init__(assets, name=name, cmdline=cmdline, acpi_fix=False, no_reboot=no_reboot)
        self.mttcg = mttcg

    def hardware_args(self) -> list[str]:
        return [
            "-machine",
            "pseries,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off",
            "-accel",
            # thread=single by default: QEMU 7.2's MTTCG gives each vCPU thread a code-buffer
            # region at its start and aborted the fourth core hot-add of a guest that had run
            # a few minutes ("tcg_region_initial_alloc__locked: assertion failed: (!err)").
            # A guest that will crash needs thread=multi (`mttcg`): see CRASH_APPEND.
            "tcg,thread=multi" if self.mttcg else "tcg,thread=single",
            "-cpu",
            "power9",
            "-m",
            MEMORY,
            "-smp",
            f"{BOOT_CPUS},cores={MAX_CPUS // THREADS},threads={THREADS},maxcpus={MAX_CPUS}",
            *COMMON_ARGS,
        ]

    def start(self) -> None:
        lower_priority()
        super().start()

    # -- CPU cores by core-id -----------------------------------------------------------
    def free_sockets(self) -> list[int]:
        """Free core-ids (the pseries counterpart of x86's sockets)."""
        slots = self.qmp.execute("query-hotpluggable-cpus")
        return sorted(int(s["props"]["core-id"]) for s in slots if "qom-path" not in s)

    def cpu_add(self, socket_id: int) -> str:
        """Plug a spapr CPU core; the guest's kernel (pseries DLPAR) onlines its threads."""
        slots = self.qmp.execute("query-hotpluggable-cpus")
        slot = next((s for s in slots if s["props"].get("core-id") == socket_id), None)
        if slot is None:
            raise VmError(f"no CPU core-id {socket_id}")
        dev_id = f"core{socket_id}"
        self.qmp.execute("device_add", {"driver": slot["type"], "id": dev_id, **slot["props"]})
        self.cpus_plugged.add(socket_id)
        return dev_id

    def cpu_del(self, socket_id: int, timeout: float = 120.0) -> None:
        self.cpu_removed = True
        self.qmp.execute("device_del", {"id": f"core{socket_id}"})
        self._wait(lambda: socket_id in self.free_sockets(), timeout, f"core{socket_id} unplugged")
        self.cpus_plugged.discard(socket_id)

    def guest_cpu_index(self, socket_id: int) -> int:
        """The first thread of a core (pseries numbers threads core-id * threads + n)."""
        return socket_id * THREADS


class PpcGuest(Guest):
    """The scenarios' guest on pseries: the kernel image is vmlinux, the console hvc0."""

    image = "vmlinux"
    crash_append = CRASH_APPEND

    def add_cpus_and_dimm(self, cpus: int = 1, dimm: bool = True) -> list[int]:
        """The burst: hot-add spapr cores (the kernel's DLPAR code onlines them: no write
        to `online` from here), then a 1 GiB DIMM."""
        cores = self.free_sockets()[:cpus]
        if len(cores) < cpus:
            raise VmError(f"only {len(cores)} free CPU cores left in this VM")
        for core in cores:
            self.vm.cpu_add(core)
        indices = [self.vm.wait_cpu(core, timeout=120) for core in cores]
        for n in indices:
            self.wait_online(f"/sys/devices/system/cpu/cpu{n}/online")
        if dimm:
            self.vm.dimm_add(self.new_dimm())
        return indices

    def dt_prop(self, path: str) -> bytes:
        """A property of the guest's /proc/device-tree, as bytes (the agent moves text)."""
        full = f"/proc/device-tree/{path}"
        out = self.vm.agent.run(["od", "-An", "-v", "-tx1", full], 30)
        if out.rc != 0:
            raise VmError(f"od {full}: {out.stderr.strip()}")
        return bytes.fromhex("".join(out.stdout.split()))

    def wait_online(self, path: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.vm.agent.read_text(path).strip() != "1":
            if time.monotonic() > deadline:
                raise VmError(f"{path} still 0 after {timeout} s: the guest did not online it")
            time.sleep(0.2)


def uevent_sequence(records: list[dict[str, Any]], t0: int, t1: int) -> list[str]:
    """The cpu/memory uevents the recorder saw in [t0, t1], as `action subsystem device`."""
    inside = [r for r in records if r["k"] == "uevent" and t0 <= int(r["t"]) <= t1]
    return [
        f"{r['action']} {r['subsystem']} {r['devpath'].rsplit('/', 1)[-1]}"
        for r in sorted(inside, key=lambda r: int(r["seqnum"]))
    ]


DRCONF_MEM_ASSIGNED = 0x8  # PAPR: the LMBs belong to this partition


def dynamic_memory_v2(prop: bytes, lmb_size: int) -> list[tuple[int, int, int]]:
    """``ibm,dynamic-memory-v2`` as (start, end, flags) per LMB set: a big-endian u32 count,
    then per set u32 number of LMBs, u64 base, u32 DRC index, u32 associativity index, u32
    flags (PAPR; the kernel's drmem.h)."""
    (count,) = struct.unpack_from(">I", prop, 0)
    sets = []
    for i in range(count):
        lmbs, base, _drc, _aa, flags = struct.unpack_from(">IQIII", prop, 4 + 24 * i)
        sets.append((base, base + lmbs * lmb_size, flags))
    return sets


def be_u64(prop: bytes) -> int:
    """A device tree cell pair (``linux,memory-limit``, ``ibm,lmb-size``)."""
    (value,) = struct.unpack(">Q", prop)
    return int(value)


def compress(sequence: list[str]) -> str:
    """`add memory memory40, add memory memory41` -> `add memory x2` style runs, in order."""
    runs: list[tuple[str, int]] = []
    for item in sequence:
        kind = " ".join(item.split()[:2])
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    return ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in runs)


def _main() -> int:
    """Build or reuse the assets, boot once, print what the guest sees: `python -m
    tests.system.ppc64`."""
    a = ensure()
    with PpcVm(a, name="ppc64-smoke") as vm:
        print(f"booted in {vm.boot_s:.0f} s; dir {vm.dir}", flush=True)
        print(
            vm.agent.sh(
                "uname -a; nproc; grep MemTotal /proc/meminfo; cat /proc/cmdline; "
                "kexec --version; "
                "grep -H . /sys/devices/system/cpu/crash_hotplug "
                "/sys/devices/system/memory/crash_hotplug /sys/kernel/kexec_crash_size "
                "/sys/devices/system/memory/block_size_bytes /sys/kernel/fadump/* || true",
                60,
            ).stdout
        )
        print(vm.qmp.execute("query-hotpluggable-cpus"))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
