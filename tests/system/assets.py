"""Build or reuse the guest assets: a Debian trixie 6.12 kernel, a trixie rootfs as an initramfs
cpio, and the ACPI table override that makes CPU hotplug work under TCG.

    python -m tests.system.assets      # build what is missing, print what was reused

Everything lives under ${CRASHHP_CACHE:-${XDG_CACHE_HOME:-~/.cache}/crashhp}/vm/, keyed on its
inputs (the recipe below and the versions of the packages in the trixie archive), never in the
git tree. crashhp itself is not in the rootfs: `tests.system.vm` appends it from the working tree
at every boot. Needs root (debootstrap), apt, debootstrap and cpio on a Debian host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.system.cpio import CpioWriter

SUITE = "trixie"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
KERNEL_PATTERN = r"^linux-image-6\.12\.[0-9]+\+deb13-amd64-unsigned$"
GUEST_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kexec-tools",
    "python3",
    "python3-pyudev",
    "python3-systemd",
    "python3-pydantic",
    "python3-structlog",
    "kdump-tools",
    "busybox",
)
# Units that only slow the boot down or wait for hardware the guest does not have.
MASKED_UNITS = (
    "serial-getty@ttyS0.service",
    "getty@tty1.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "systemd-pstore.service",
    "kexec-load.service",
    "kexec.service",
)
TRIMMED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
# Bump when the rootfs customisation below changes in a way the lists above do not show.
RECIPE_VERSION = 4
PEER_RULES = "usr/lib/udev/rules.d/50-kdump-tools.rules"
PEER_RULES_PARKED = "opt/crashhp-test/peer/50-kdump-tools.rules"
CRASH_INITRD = "boot/crash-initrd.img"
MACHINE_ID = "c7a5b0e1f2d34e5f8a9b0c1d2e3f4a5b\n"

TIMEOUT_APT_S = 600
TIMEOUT_DEBOOTSTRAP_S = 1800
TIMEOUT_CPIO_S = 600


def log(message: str) -> None:
    print(f"assets: {message}", flush=True)


def cache_root() -> Path:
    explicit = os.environ.get("CRASHHP_CACHE")
    if explicit:
        return Path(explicit) / "vm"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "crashhp" / "vm"


def host_mirror() -> str:
    """The Debian mirror the host's apt already uses (CRASHHP_MIRROR overrides)."""
    explicit = os.environ.get("CRASHHP_MIRROR")
    if explicit:
        return explicit.rstrip("/")
    texts: list[str] = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        with contextlib.suppress(OSError):
            texts.append(path.read_text())
    for text in texts:
        for uri in re.findall(r"(?m)^\s*(?:URIs:|deb(?:\s+\[[^\]]*\])?)\s+(\S+)", text):
            if re.search(r"/debian/?$", uri):
                return str(uri).rstrip("/")
    return "http://deb.debian.org/debian"


def run(
    argv: list[str], timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])}... exited {proc.returncode}:\n{proc.stdout[-3000:]}"
            f"\n{proc.stderr[-3000:]}"
        )
    return proc


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def mib(n: int) -> str:
    return f"{n / 1048576:.0f} MiB"


class Apt:
    """apt with a private sources list and lists directory: the host's config stays untouched."""

    def __init__(self, root: Path, mirror: str, suite: str = SUITE) -> None:
        self.root = root
        self.mirror = mirror
        root.mkdir(parents=True, exist_ok=True)
        (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        sources = root / "sources.list"
        sources.write_text(f"deb [signed-by={KEYRING}] {mirror} {suite} main\n")
        self.options = [
            f"-oDir::Etc::sourcelist={sources}",
            "-oDir::Etc::sourceparts=-",
            f"-oDir::State::Lists={root / 'lists'}",
            f"-oDir::Cache={root / 'cache'}",
            "-oDir::State::status=/dev/null",
            "-oAPT::Architecture=amd64",
            "-oDebug::NoLocking=1",
            "-oAPT::Sandbox::User=root",
        ]

    def update(self) -> None:
        run(["apt-get", *self.options, "-qq", "update"], TIMEOUT_APT_S)

    def has_lists(self) -> bool:
        return any((self.root / "lists").glob("*_Packages*"))

    def refresh(self) -> None:
        """apt-get update; if the mirror fails, the lists of the last run do."""
        try:
            self.update()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            if not self.has_lists():
                raise
            log(f"apt-get update failed, using the lists from the last run: {exc}")

    def kernel_package(self) -> str:
        out = run(["apt-cache", *self.options, "pkgnames", "linux-image-6.12"], TIMEOUT_APT_S)
        names = [n for n in out.stdout.split() if re.match(KERNEL_PATTERN, n)]
        if not names:
            raise RuntimeError(f"no package matching {KERNEL_PATTERN} in {SUITE}")
        return max(names, key=lambda n: [int(x) for x in re.findall(r"\d+", n)])

    def versions(self, packages: list[str]) -> dict[str, str]:
        out = run(
            ["apt-cache", *self.options, "show", "--no-all-versions", *packages], TIMEOUT_APT_S
        )
        found: dict[str, str] = {}
        name = ""
        for line in out.stdout.splitlines():
            if line.startswith("Package: "):
                name = line.split()[1]
            elif line.startswith("Version: ") and name:
                found[name] = line.split()[1]
        missing = set(packages) - set(found)
        if missing:
            raise RuntimeError(f"not in {SUITE}: {sorted(missing)}")
        return found

    def download(self, package: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        run(["apt-get", *self.options, "-qq", "download", package], TIMEOUT_APT_S, cwd=dest)
        debs = list(dest.glob(f"{package}_*.deb"))
        if len(debs) != 1:
            raise RuntimeError(f"apt-get download {package}: got {debs}")
        return debs[0]


@dataclass(frozen=True)
class Assets:
    kver: str
    vmlinuz: Path
    rootfs_cpio: Path
    acpi_cpio: Path | None
    manifest: dict[str, object]
    # Appended after the rootfs: another kernel's /boot files (tests.system.flavours).
    kernel_cpio: Path | None = None

    def describe(self) -> str:
        parts = [
            f"kernel {self.kver} ({mib(self.vmlinuz.stat().st_size)})",
            f"rootfs {mib(self.rootfs_cpio.stat().st_size)}",
        ]
        if self.acpi_cpio is not None:
            parts.append("ACPI override")
        return ", ".join(parts)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _kernel(
    root: Path, apt: Apt, package: str, version: str, name: str = "kernel", image: str = "vmlinuz"
) -> tuple[str, Path]:
    kdir = root / f"{name}-{_key(package, version)}"
    if not (kdir / "done").exists():
        start = time.monotonic()
        tmp = root / f"tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"downloading {package} {version} from {apt.mirror}")
        deb = apt.download(package, tmp / "deb")
        size = deb.stat().st_size
        run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], TIMEOUT_APT_S)
        (tmp / "out").mkdir()
        for f in (tmp / "x" / "boot").iterdir():
            if f.name.startswith((f"{image}-", "config-")):
                shutil.copy2(f, tmp / "out" / f.name)
        (tmp / "out" / "done").write_text(f"{package} {version}\n")
        shutil.rmtree(kdir, ignore_errors=True)
        (tmp / "out").rename(kdir)
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"kernel: downloaded {mib(size)}, extracted in {time.monotonic() - start:.0f} s")
    vmlinuz = next(kdir.glob(f"{image}-*"))
    return vmlinuz.name.removeprefix(f"{image}-"), vmlinuz


def _crash_initrd(rootfs: Path) -> bytes:
    """A tiny busybox initramfs for the crash kernel (we load it, we never boot it)."""
    busybox = "usr/bin/busybox"
    ldd = subprocess.run(
        ["chroot", str(rootfs), "ldd", "/" + busybox],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Debian's busybox is static ("not a dynamic executable"); copy the libraries if not.
    libs = re.findall(r"(/\S+\.so[.\d]*)", ldd.stdout) if ldd.returncode == 0 else []
    w = CpioWriter()
    w.file("bin/busybox", (rootfs / busybox).read_bytes(), 0o755)
    for lib in libs:
        real = (rootfs / lib.lstrip("/")).resolve()
        if not real.is_relative_to(rootfs.resolve()):
            real = rootfs / os.path.realpath(lib).lstrip("/")
        w.file(lib, real.read_bytes(), 0o755)
    w.symlink("bin/sh", "busybox")
    w.file(
        "init", b"#!/bin/sh\n/bin/busybox --install -s /bin\necho crash kernel up\nexec sh\n", 0o755
    )
    return w.getvalue()


def _customize(rootfs: Path, kdir: Path, kver: str, image: str = "vmlinuz") -> None:
    debs = list((rootfs / "var/cache/apt/archives").glob("*.deb"))
    if debs:
        size = sum(d.stat().st_size for d in debs)
        log(f"debootstrap downloaded {len(debs)} packages, {mib(size)}")
    for deb in debs:
        deb.unlink()
    for rel in TRIMMED:
        shutil.rmtree(rootfs / rel, ignore_errors=True)
    for rel in ("var/cache/apt", "var/lib/apt/lists"):
        for p in (rootfs / rel).glob("*"):
            if p.is_file():
                p.unlink()
    (rootfs / "usr/lib/udev/hwdb.bin").unlink(missing_ok=True)
    (rootfs / "etc/hostname").write_text("crashhp-guest\n")
    (rootfs / "etc/machine-id").write_text(MACHINE_ID)
    (rootfs / "etc/fstab").write_text("# the guest runs from its initramfs\n")
    init = rootfs / "init"
    init.unlink(missing_ok=True)
    init.symlink_to("/usr/lib/systemd/systemd")
    for unit in MASKED_UNITS:
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for wants in (rootfs / "etc/systemd/system").glob("*.wants"):
        for link in wants.iterdir():
            if link.name in MASKED_UNITS or link.name == "kdump-tools.service":
                link.unlink()
    # The peer is installed but inactive: no service at boot, its udev rules parked.
    parked = rootfs / PEER_RULES_PARKED
    parked.parent.mkdir(parents=True, exist_ok=True)
    (rootfs / PEER_RULES).rename(parked)
    # The kernel the guest runs is also the crash kernel it loads.
    boot = rootfs / "boot"
    boot.mkdir(exist_ok=True)
    shutil.copy2(kdir / f"{image}-{kver}", boot / f"{image}-{kver}")
    shutil.copy2(kdir / f"config-{kver}", boot / f"config-{kver}")
    (rootfs / CRASH_INITRD).write_bytes(_crash_initrd(rootfs))
    journald = rootfs / "etc/systemd/journald.conf.d"
    journald.mkdir(parents=True, exist_ok=True)
    (journald / "crashhp-test.conf").write_text(
        "[Journal]\nStorage=volatile\nRateLimitBurst=0\nForwardToConsole=no\n"
    )


def _rootfs(
    root: Path,
    mirror: str,
    key: str,
    kdir: Path,
    kver: str,
    name: str = "rootfs",
    bootstrap: Callable[[Path, str], None] | None = None,
    image: str = "vmlinuz",
) -> Path:
    out = root / f"{name}-{key}"
    if (out / "rootfs.cpio").exists():
        return out / "rootfs.cpio"
    tmp = root / f"tmp-{name}"
    rootfs = tmp / "root"
    marker = tmp / f"debootstrap-{key}"
    start = time.monotonic()
    if marker.exists():
        # A debootstrap of these versions finished before a later step failed: reuse it.
        log("reusing a finished debootstrap, redoing the customisation")
        parked = rootfs / PEER_RULES_PARKED
        if parked.exists():
            parked.rename(rootfs / PEER_RULES)
    else:
        if tmp.exists():
            run(["rm", "-rf", "--one-file-system", str(tmp)], 600)
        tmp.mkdir(parents=True)
        (bootstrap or _debootstrap)(rootfs, mirror)
        marker.touch()
        log(f"debootstrap done in {time.monotonic() - start:.0f} s ({mib(dir_size(rootfs))})")
    _customize(rootfs, kdir, kver, image)
    _pack(rootfs, tmp / "rootfs.cpio")
    marker.unlink()
    run(["rm", "-rf", "--one-file-system", str(rootfs)], 600)
    tmp.rename(out)
    return out / "rootfs.cpio"


def _debootstrap(rootfs: Path, mirror: str) -> None:
    log(f"debootstrap --variant=minbase {SUITE} + {len(GUEST_PACKAGES)} packages (minutes)")
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(GUEST_PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        TIMEOUT_DEBOOTSTRAP_S,
    )


def _pack(rootfs: Path, cpio: Path) -> None:
    t = time.monotonic()
    names = run(["find", ".", "-mindepth", "1"], 600, cwd=rootfs).stdout
    listing = "\n".join(sorted(names.splitlines())) + "\n"
    with cpio.open("wb") as f:
        proc = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"],
            input=listing.encode(),
            stdout=f,
            stderr=subprocess.PIPE,
            cwd=rootfs,
            timeout=TIMEOUT_CPIO_S,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"cpio failed: {proc.stderr.decode()[-2000:]}")
    log(f"rootfs cpio {mib(cpio.stat().st_size)} in {time.monotonic() - t:.0f} s")


def _acpi(root: Path, kver: str, vmlinuz: Path, rootfs_cpio: Path) -> Path:
    from tests.system import acpi
    from tests.system.vm import Vm, hardware_key

    out = root / f"acpi-{_key(hardware_key(), 2)}"
    if (out / "acpi.cpio").exists():
        return out / "acpi.cpio"
    start = time.monotonic()
    log("booting the guest once to copy QEMU's FACP and APIC tables")
    partial = Assets(kver, vmlinuz, rootfs_cpio, None, {})
    with Vm(partial, name="acpi") as vm:
        fadt = vm.agent.read_file("/sys/firmware/acpi/tables/FACP")
        madt = vm.agent.read_file("/sys/firmware/acpi/tables/APIC")
    data, marked = acpi.override_cpio(fadt, madt)
    tmp = root / "tmp-acpi"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "FACP.orig").write_bytes(fadt)
    (tmp / "APIC.orig").write_bytes(madt)
    (tmp / "acpi.cpio").write_bytes(data)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"ACPI override built in {time.monotonic() - start:.0f} s ({marked} CPUs online-capable)")
    return out / "acpi.cpio"


def _prune(root: Path, keep: set[Path]) -> None:
    """Remove the builds of older inputs (the cache would otherwise grow by 240 MB a time)."""
    for old in root.glob("*-*"):
        kind = old.name.split("-")[0]
        if old.is_dir() and kind in ("kernel", "rootfs", "acpi") and old not in keep:
            log(f"removing the outdated {old.name}")
            shutil.rmtree(old, ignore_errors=True)


def ensure(*, acpi_fix: bool = True) -> Assets:
    """Build what is missing and return the assets. Raises (never skips) when it cannot."""
    root = cache_root()
    start = time.monotonic()
    with locked(root):
        mirror = host_mirror()
        apt = Apt(root / "apt", mirror)
        apt.refresh()
        package = apt.kernel_package()
        versions = apt.versions([package, *GUEST_PACKAGES])
        kver, vmlinuz = _kernel(root, apt, package, versions[package])
        recipe = {
            "suite": SUITE,
            "packages": GUEST_PACKAGES,
            "masked": MASKED_UNITS,
            "trimmed": TRIMMED,
            "recipe": RECIPE_VERSION,
            "versions": versions,
        }
        key = _key(recipe)
        rootfs_cpio = _rootfs(root, mirror, key, vmlinuz.parent, kver)
        manifest_path = rootfs_cpio.parent / "manifest.json"
        if not manifest_path.exists():
            manifest_path.write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
        acpi_cpio = _acpi(root, kver, vmlinuz, rootfs_cpio) if acpi_fix else None
        manifest: dict[str, object] = json.loads(manifest_path.read_text())
        _prune(
            root, {vmlinuz.parent, rootfs_cpio.parent, *([acpi_cpio.parent] if acpi_cpio else [])}
        )
    assets = Assets(kver, vmlinuz, rootfs_cpio, acpi_cpio, manifest)
    log(f"ready in {time.monotonic() - start:.0f} s under {root}: {assets.describe()}")
    return assets


# ---- extra guest tools, outside the rootfs (issue 10) --------------------------------------------

# strace makes a reload slow at the right moment (the dump test's race); libunwind8 is its only
# library the minbase rootfs lacks. Kept out of GUEST_PACKAGES so the rootfs key stays the same.
TOOL_PACKAGES = ("strace", "libunwind8")
TOOLS_RECIPE_VERSION = 1


def ensure_tools(packages: tuple[str, ...] = TOOL_PACKAGES) -> Path:
    """The files of `packages` (trixie .debs, extracted) in a cached tree, keyed on their
    versions; a guest gets them with `tests.system.dump.install_tree`."""
    root = cache_root()
    with locked(root):
        apt = Apt(root / "apt", host_mirror())
        if not apt.has_lists():
            apt.update()
        versions = apt.versions(list(packages))
        out = root / f"tools-{_key(versions, TOOLS_RECIPE_VERSION)}"
        if (out / "done").exists():
            return out / "tree"
        tmp = root / "tmp-tools"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "out" / "tree").mkdir(parents=True)
        for package in packages:
            deb = apt.download(package, tmp / "deb")
            run(["dpkg-deb", "-x", str(deb), str(tmp / "out" / "tree")], TIMEOUT_APT_S)
        for rel in TRIMMED:
            shutil.rmtree(tmp / "out" / "tree" / rel, ignore_errors=True)
        (tmp / "out" / "done").write_text(json.dumps(versions, sort_keys=True) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        (tmp / "out").rename(out)
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"guest tools {', '.join(f'{k} {v}' for k, v in sorted(versions.items()))}")
        return out / "tree"


# ---- a disk image for the distribution's own dump path (issue 10) --------------------------------

# On top of the rootfs: what kdump-tools needs to build its kdump initrd in the guest
# (initramfs-tools, the kernel's modules from its package) and what the boot initrd needs to
# mount an ext4 root on virtio (e2fsprogs for fsck), and makedumpfile (kdump-tools only
# recommends it: without it, it copies /proc/vmcore whole). The rootfs cpio stays as it is.
DISK_PACKAGES = ("initramfs-tools", "e2fsprogs", "zstd", "makedumpfile")
DISK_RECIPE_VERSION = 1
DISK_SIZE = "4G"
DISK_FSTAB = "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n"
KDUMP_KERNEL_HOOK = "etc/kernel/postinst.d/kdump-tools"
TIMEOUT_DPKG_S = 1200


@dataclass(frozen=True)
class Disk:
    """An ext4 image of the rootfs plus DISK_PACKAGES and the kernel package, with the boot
    initrd initramfs-tools built for it (root=/dev/vda)."""

    image: Path
    initrd: Path
    kver: str


def _apt_install_args(apt: Apt, status: Path, archives: Path) -> list[str]:
    return [
        "apt-get",
        *[o for o in apt.options if not o.startswith("-oDir::State::status=")],
        f"-oDir::State::status={status}",
        f"-oDir::Cache::archives={archives}",
        "-oDir::Etc::preferences=/dev/null",
        "-oDir::Etc::preferencesparts=-",
        "--no-install-recommends",
        "--yes",
        "-qq",
    ]


def _chroot_dpkg(tree: Path, debs: list[Path]) -> None:
    inside = [f"/tmp/crashhp-debs/{d.name}" for d in debs]
    run(
        [
            "chroot",
            str(tree),
            "/usr/bin/env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND=noninteractive",
            "dpkg",
            "-i",
            *inside,
        ],
        TIMEOUT_DPKG_S,
    )


def ensure_disk(assets: Assets) -> Disk:
    """Build or reuse the disk image: keyed on the rootfs's manifest and the recipe above."""
    root = cache_root()
    with locked(root):
        versions = assets.manifest.get("versions", {})
        kernel = next(
            (
                str(p)
                for p in (versions if isinstance(versions, dict) else {})
                if p.startswith("linux-image")
            ),
            None,
        )
        if kernel is None:
            raise RuntimeError("the rootfs manifest names no kernel package")
        out = root / f"disk-{_key(assets.manifest, DISK_PACKAGES, DISK_SIZE, DISK_RECIPE_VERSION)}"
        disk = Disk(out / "disk.img", out / "initrd.img", assets.kver)
        if (out / "done").exists():
            return disk
        start = time.monotonic()
        tmp = root / "tmp-disk"
        if tmp.exists():
            run(["rm", "-rf", "--one-file-system", str(tmp)], 600)
        tree = tmp / "root"
        tree.mkdir(parents=True)
        log(f"disk image: unpacking the rootfs, installing {', '.join(DISK_PACKAGES)} and {kernel}")
        with assets.rootfs_cpio.open("rb") as src:
            proc = subprocess.run(
                ["cpio", "-idm", "--quiet"],
                stdin=src,
                cwd=tree,
                capture_output=True,
                timeout=TIMEOUT_CPIO_S,
                check=False,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"cpio -i failed: {proc.stderr.decode()[-2000:]}")
        apt = Apt(root / "apt", host_mirror())
        if not apt.has_lists():
            apt.update()
        archives = tmp / "debs"
        (archives / "partial").mkdir(parents=True)
        run(
            [
                *_apt_install_args(apt, tree / "var/lib/dpkg/status", archives),
                "install",
                "--download-only",
                *DISK_PACKAGES,
                kernel,
            ],
            TIMEOUT_APT_S,
        )
        debs = sorted(archives.glob("*.deb"))
        inside = tree / "tmp/crashhp-debs"
        inside.mkdir(parents=True)
        for deb in debs:
            shutil.copy2(deb, inside / deb.name)
        # kdump-tools' kernel hook would build its initrd here, in a chroot, from the host's
        # modules (MODULES=dep): leave that to kdump-config in the guest, as on a real machine.
        hook = tree / KDUMP_KERNEL_HOOK
        hook.chmod(0o644)
        # Twice: the first pass leaves out what pre-depends on a package it installs.
        with contextlib.suppress(RuntimeError):
            _chroot_dpkg(tree, debs)
        _chroot_dpkg(tree, debs)
        hook.chmod(0o755)
        shutil.rmtree(inside)
        (tree / "etc/fstab").write_text(DISK_FSTAB)
        (tree / "init").unlink(missing_ok=True)
        (tree / "var/crash").mkdir(exist_ok=True)
        (tmp / "out").mkdir()
        shutil.copy2(tree / f"boot/initrd.img-{assets.kver}", tmp / "out" / "initrd.img")
        run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "crashhp-root",
                "-d",
                str(tree),
                str(tmp / "out" / "disk.img"),
                DISK_SIZE,
            ],
            TIMEOUT_CPIO_S,
        )
        (tmp / "out" / "done").write_text(" ".join(d.name for d in debs) + "\n")
        run(["rm", "-rf", "--one-file-system", str(tree)], 600)
        shutil.rmtree(out, ignore_errors=True)
        (tmp / "out").rename(out)
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"disk image built in {time.monotonic() - start:.0f} s: {out}")
        return disk


def main() -> int:
    try:
        ensure()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"assets: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
