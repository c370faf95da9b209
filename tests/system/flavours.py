"""The kernel matrix's guests: which userland, which kernel, and what each needs to boot.

    python -m tests.system.flavours bookworm-6.1    # build or reuse one flavour's assets

`assets.ensure()` builds the default guest, trixie with its 6.12 kernel. The other flavours
reuse as much of it as they can and keep their own builds under `<cache>/vm/flavours/<name>/`,
where the default build's pruning never looks; each prunes only its own older builds.

- **trixie-7.3**: the default trixie rootfs and ACPI override, plus trixie-backports'
  7.3 kernel in a small cpio appended after the rootfs (`/boot/vmlinuz-<kver>`, which the
  guest also loads as its crash kernel). It needs no modules.
- **bookworm-6.1**: a rootfs of its own (`debootstrap bookworm`) with bookworm's 6.1 kernel.
  virtio, virtio_pci and virtio_console are modules there: without them the guest has no
  virtio-serial port and the agent no way out, so their .ko files (and those they depend on)
  and a depmod index go into the rootfs. Bookworm's python3-pydantic (1.10) and
  python3-structlog (22.3) are too old for crashhp: pinned, hash-checked wheels of the
  versions trixie ships are downloaded on the host and installed with `pip install --target`
  into /opt/crashhp-deps, which the guest's crashhp launcher (tests.system.vm) puts on
  PYTHONPATH. pyudev and python3-systemd are bookworm's own. CPU hotplug works on 6.1 under
  TCG without the ACPI override (VM-NOTES), so the guest boots QEMU's own tables.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.system import assets
from tests.system.assets import Apt, Assets, cache_root, log, mib, run
from tests.system.cpio import CpioWriter


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel for the guest's Python, checked against its sha256."""

    requirement: str
    sha256: str


@dataclass(frozen=True)
class Flavour:
    name: str
    suite: str  # the userland's Debian suite
    kernel_suite: str  # where the kernel package comes from
    kernel_prefix: str  # `apt-cache pkgnames` prefix
    kernel_pattern: str  # the package name, the highest version wins
    # A userland of its own; empty: the default trixie rootfs.
    packages: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()  # loaded by udev at boot; their dependencies come along
    wheels: tuple[Wheel, ...] = ()
    acpi_fix: bool = True


DEFAULT = Flavour("trixie-6.12", "trixie", "trixie", "linux-image-6.12", assets.KERNEL_PATTERN)
TRIXIE_73 = Flavour(
    "trixie-7.3",
    "trixie",
    "trixie-backports",
    "linux-binary-unsigned-7.3",
    r"^linux-binary-unsigned-7\.3\.[0-9]+\+deb13-amd64$",
)
# The versions trixie ships (crashhp's floors are those), for Python 3.11, manylinux x86_64.
BOOKWORM_WHEELS = (
    Wheel("pydantic==2.10.6", "427d664bf0b8a2b34ff5dd0f5a18df00591adcee7198fbd71981054cef37b584"),
    Wheel(
        "pydantic-core==2.27.2",
        "1c1fd185014191700554795c99b347d64f2bb637966c4cfc16998a0ca700d048",
    ),
    Wheel(
        "annotated-types==0.7.0",
        "1f02e8b43a8fbbc3f3e0d4f0f4bfc8131bcb4eebe8849b8e5c773f3a1c582a53",
    ),
    Wheel(
        "typing-extensions==4.12.2",
        "04e5ca0351e0f3f85c6853954072df659d0d13fac324d0072316b67d7794700d",
    ),
    Wheel("structlog==25.3.0", "a341f5524004c158498c3127eecded091eb67d3a611e7a3093deca30db06e172"),
)
BOOKWORM = Flavour(
    "bookworm-6.1",
    "bookworm",
    "bookworm",
    "linux-image-6.1.0-",
    r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
    packages=(
        *(p for p in assets.GUEST_PACKAGES if p not in ("python3-pydantic", "python3-structlog")),
        "kmod",
        # Priority important: on every standard Debian 12 install, not in minbase; the
        # bookworm .deb depends on it.
        "procps",
    ),
    modules=("virtio_pci", "virtio_console"),
    wheels=BOOKWORM_WHEELS,
    acpi_fix=False,
)
FLAVOURS = {f.name: f for f in (BOOKWORM, DEFAULT, TRIXIE_73)}
DEPS_DIR = "opt/crashhp-deps"
WHEEL_PLATFORM = [
    "--only-binary=:all:",
    "--python-version=3.11",
    "--implementation=cp",
    "--abi=cp311",
    "--platform=manylinux2014_x86_64",
]
# Bump when the steps below change in a way the inputs do not show.
RECIPE_VERSION = 1
TIMEOUT_PIP_S = 600


def flavour_root(flavour: Flavour) -> Path:
    return cache_root() / "flavours" / flavour.name


def _prune(root: Path, keep: set[Path]) -> None:
    for old in root.iterdir():
        kind = old.name.split("-")[0]
        if old.is_dir() and kind in ("kernel", "rootfs", "wheels") and old not in keep:
            log(f"{root.name}: removing the outdated {old.name}")
            run(["rm", "-rf", "--one-file-system", str(old)], 600)


def _kernel_package(apt: Apt, flavour: Flavour) -> str:
    out = run(["apt-cache", *apt.options, "pkgnames", flavour.kernel_prefix], assets.TIMEOUT_APT_S)
    names = [n for n in out.stdout.split() if re.match(flavour.kernel_pattern, n)]
    if not names:
        where = flavour.kernel_suite
        raise RuntimeError(f"no package matching {flavour.kernel_pattern} in {where}")
    return max(names, key=lambda n: [int(x) for x in re.findall(r"\d+", n)])


def _modules_closure(moddir: Path, wanted: tuple[str, ...]) -> list[str]:
    """The module files (relative to moddir) for `wanted` and everything they depend on.

    The package ships no modules.dep (depmod writes it at install): each module's own
    `depends=` modinfo string says what it needs.
    """
    by_name = {
        re.sub(r"\.ko(\.\w+)?$", "", p.name).replace("-", "_"): p
        for p in (moddir / "kernel").rglob("*.ko*")
    }
    todo = list(wanted)
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in by_name:
            raise RuntimeError(f"module {name} not in {moddir}")
        path = by_name[name]
        if path.suffix != ".ko":
            raise RuntimeError(f"{path.name}: compressed modules are not handled")
        seen[name] = path
        found = re.search(rb"(?:^|\0)depends=([^\0]*)\0", path.read_bytes())
        if found and found.group(1):
            todo.extend(found.group(1).decode().split(","))
    return sorted(str(p.relative_to(moddir)) for p in seen.values())


def _kernel(root: Path, apt: Apt, flavour: Flavour, package: str, version: str) -> Path:
    """vmlinuz, config and the modules `flavour` needs, from the kernel package."""
    kdir = root / f"kernel-{assets._key(package, version, flavour.modules)}"
    if (kdir / "done").exists():
        return kdir
    start = time.monotonic()
    tmp = root / "tmp-kernel"
    run(["rm", "-rf", "--one-file-system", str(tmp)], 600)
    log(f"{flavour.name}: downloading {package} {version} from {apt.mirror}")
    deb = apt.download(package, tmp / "deb")
    size = deb.stat().st_size
    run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], assets.TIMEOUT_APT_S)
    out = tmp / "out"
    (out / "boot").mkdir(parents=True)
    x = tmp / "x"
    for f in x.glob("boot/*"):
        if f.name.startswith(("vmlinuz-", "config-", "System.map-")):
            shutil.copy2(f, out / "boot" / f.name)
    # 7.x packages: the image alone, as /usr/lib/modules/<kver>/vmlinuz.unsigned (its config
    # is in linux-base-<kver>, which the guest does not need).
    for f in x.glob("usr/lib/modules/*/vmlinuz*"):
        shutil.copy2(f, out / "boot" / f"vmlinuz-{f.parent.name}")
    if not any((out / "boot").glob("vmlinuz-*")):
        raise RuntimeError(f"{package} {version}: no kernel image in the package")
    if flavour.modules:
        (moddir,) = (tmp / "x" / "lib" / "modules").iterdir()
        dest = out / "lib" / "modules" / moddir.name
        files = _modules_closure(moddir, flavour.modules)
        names = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
        for rel in [*files, *names]:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(moddir / rel, dest / rel)
        log(f"{flavour.name}: kept {len(files)} modules: {', '.join(Path(f).name for f in files)}")
    (out / "done").write_text(f"{package} {version}\n")
    out.rename(kdir)
    run(["rm", "-rf", "--one-file-system", str(tmp)], 600)
    log(f"{flavour.name}: kernel {mib(size)}, extracted in {time.monotonic() - start:.0f} s")
    return kdir


def _kernel_cpio(kdir: Path) -> Path:
    """The kernel's files as an archive appended after the default rootfs (trixie-7.3)."""
    out = kdir / "kernel.cpio"
    if not out.exists():
        w = CpioWriter()
        for f in sorted((kdir / "boot").iterdir()):
            w.file(f"boot/{f.name}", f.read_bytes())
        (kdir / "kernel.cpio.tmp").write_bytes(w.getvalue())
        (kdir / "kernel.cpio.tmp").rename(out)
    return out


def _wheels(root: Path, flavour: Flavour) -> Path:
    """Download the pinned wheels once (PyPI is reachable from the host, not the guest)."""
    wdir = root / f"wheels-{assets._key([(w.requirement, w.sha256) for w in flavour.wheels])}"
    if (wdir / "done").exists():
        return wdir
    tmp = root / "tmp-wheels"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    reqs = tmp / "requirements.txt"
    reqs.write_text("".join(f"{w.requirement} --hash=sha256:{w.sha256}\n" for w in flavour.wheels))
    log(f"{flavour.name}: downloading {len(flavour.wheels)} pinned wheels")
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes"]
    run([*argv, *WHEEL_PLATFORM, "--dest", str(tmp), "-r", str(reqs)], TIMEOUT_PIP_S)
    (tmp / "done").write_text("\n".join(w.requirement for w in flavour.wheels) + "\n")
    tmp.rename(wdir)
    return wdir


def _install_modules(rootfs: Path, kdir: Path) -> None:
    src = kdir / "lib" / "modules"
    if not src.exists():
        return
    (kver_dir,) = src.iterdir()
    dest = rootfs / "usr" / "lib" / "modules" / kver_dir.name
    shutil.copytree(kver_dir, dest)
    # The guest's own depmod writes modules.dep and modules.alias: udev loads by alias.
    run(["chroot", str(rootfs), "depmod", kver_dir.name], 120)


def _install_wheels(rootfs: Path, wdir: Path, flavour: Flavour) -> None:
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    argv += ["--no-compile", "--find-links", str(wdir), *WHEEL_PLATFORM]
    argv += ["--target", str(rootfs / DEPS_DIR)]
    run([*argv, *(w.requirement for w in flavour.wheels)], TIMEOUT_PIP_S)


def _rootfs(
    root: Path, flavour: Flavour, mirror: str, key: str, kdir: Path, wdir: Path | None
) -> Path:
    out = root / f"rootfs-{key}"
    if (out / "rootfs.cpio").exists():
        return out / "rootfs.cpio"
    start = time.monotonic()
    tmp = root / "tmp-rootfs"
    run(["rm", "-rf", "--one-file-system", str(tmp)], 600)
    rootfs = tmp / "root"
    rootfs.parent.mkdir(parents=True)
    log(f"{flavour.name}: debootstrap --variant=minbase {flavour.suite} (minutes)")
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(flavour.packages)}",
            flavour.suite,
            str(rootfs),
            mirror,
        ],
        assets.TIMEOUT_DEBOOTSTRAP_S,
    )
    log(f"{flavour.name}: debootstrap done in {time.monotonic() - start:.0f} s")
    kver = next((kdir / "boot").glob("vmlinuz-*")).name.removeprefix("vmlinuz-")
    assets._customize(rootfs, kdir / "boot", kver)
    _install_modules(rootfs, kdir)
    if wdir is not None:
        _install_wheels(rootfs, wdir, flavour)
    assets._pack(rootfs, tmp / "rootfs.cpio")
    run(["rm", "-rf", "--one-file-system", str(rootfs)], 600)
    tmp.rename(out)
    log(f"{flavour.name}: rootfs built in {time.monotonic() - start:.0f} s")
    return out / "rootfs.cpio"


def ensure(flavour: Flavour = DEFAULT) -> Assets:
    """Build what is missing for `flavour` and return its assets. Raises, never skips."""
    if flavour == DEFAULT:
        return assets.ensure()
    # The default guest first: its rootfs or its ACPI override is reused (own lock).
    base = assets.ensure() if (not flavour.packages or flavour.acpi_fix) else None
    root = flavour_root(flavour)
    start = time.monotonic()
    with assets.locked(root):
        mirror = assets.host_mirror()
        kapt = Apt(root / "apt", mirror, suite=flavour.kernel_suite)
        kapt.refresh()
        package = _kernel_package(kapt, flavour)
        versions = kapt.versions([package])
        kdir = _kernel(root, kapt, flavour, package, versions[package])
        kver = next((kdir / "boot").glob("vmlinuz-*")).name.removeprefix("vmlinuz-")
        keep = {kdir}
        kernel_cpio: Path | None = None
        if flavour.packages:
            uapt = kapt
            if flavour.suite != flavour.kernel_suite:
                uapt = Apt(root / "apt-userland", mirror, suite=flavour.suite)
                uapt.update()
            versions |= uapt.versions(list(flavour.packages))
            recipe = {
                "flavour": flavour.name,
                "suite": flavour.suite,
                "packages": flavour.packages,
                "modules": flavour.modules,
                "wheels": [(w.requirement, w.sha256) for w in flavour.wheels],
                "customize": [assets.RECIPE_VERSION, assets.MASKED_UNITS, assets.TRIMMED],
                "recipe": RECIPE_VERSION,
                "versions": versions,
            }
            key = assets._key(recipe)
            wdir = _wheels(root, flavour) if flavour.wheels else None
            rootfs_cpio = _rootfs(root, flavour, mirror, key, kdir, wdir)
            manifest_path = rootfs_cpio.parent / "manifest.json"
            if not manifest_path.exists():
                manifest_path.write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
            keep |= {rootfs_cpio.parent, *([wdir] if wdir else [])}
            manifest: dict[str, object] = json.loads(manifest_path.read_text())
        else:
            assert base is not None
            rootfs_cpio = base.rootfs_cpio
            kernel_cpio = _kernel_cpio(kdir)
            manifest = {**base.manifest, "flavour": flavour.name, "kernel": versions}
        _prune(root, keep)
    acpi_cpio = base.acpi_cpio if (flavour.acpi_fix and base is not None) else None
    vmlinuz = next((kdir / "boot").glob("vmlinuz-*"))
    result = Assets(kver, vmlinuz, rootfs_cpio, acpi_cpio, manifest, kernel_cpio)
    log(f"{flavour.name}: ready in {time.monotonic() - start:.0f} s: {result.describe()}")
    return result


def main(argv: list[str]) -> int:
    names = argv or list(FLAVOURS)
    try:
        for name in names:
            ensure(FLAVOURS[name])
    except KeyError as exc:
        print(f"flavours: unknown flavour {exc}; known: {', '.join(FLAVOURS)}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"flavours: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
