"""A fresh Debian 12 (bookworm) root for the install check, cached as a tarball.

    .venv/bin/python packaging/bookworm_root.py      # build it if missing, print the tarball

`debootstrap --variant=minbase bookworm` plus what every installed Debian 12 has
(systemd as init, udev) and kexec-tools (crashhp's Recommends, so apt does not pull in
kdump-tools and its kernel hooks). Then, chrooted, `apt-get update` and
`apt-get install --download-only` of crashhp's dependencies: the root stays as fresh as
an installed system (none of python3, python3-pyudev, python3-systemd is installed),
but the later `apt install ./crashhp_*.deb` finds the .debs in apt's cache and needs no
network.

The tarball lives under ${CRASHHP_CACHE:-${XDG_CACHE_HOME:-~/.cache}/crashhp}/bookworm/,
named by a key over this recipe and the versions the bookworm archive has now (a private apt config
reads them: the host's apt sources stay untouched), so a point release builds a new
root and the old one is removed. debootstrap takes about 3 minutes; reuse takes seconds.
Needs root, debootstrap, zstd and the network (apt) when the cache lacks the root.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "packaging"))

from check_deb_trixie import CheckFailed, Root  # noqa: E402

from tests.system.assets import (  # noqa: E402
    KEYRING,
    TIMEOUT_DEBOOTSTRAP_S,
    Apt,
    cache_root,
    host_mirror,
    locked,
    run,
)

SUITE = "bookworm"
# Installed by debootstrap: what a fresh Debian 12 system has that minbase lacks.
INCLUDED = ("systemd-sysv", "udev", "kexec-tools")
# Downloaded, not installed: what `apt install ./crashhp_*.deb` will have to install,
# and bookworm's own (too old) pydantic and structlog, which the check installs next to
# crashhp to show that its vendored copies still win.
DOWNLOADED = (
    "procps",
    "python3",
    "python3-pyudev",
    "python3-systemd",
    "python3-pydantic",
    "python3-structlog",
)
# Bump when the recipe changes in a way the tuples above do not show.
RECIPE_VERSION = 1

TIMEOUT_TAR_S = 600


def log(message: str) -> None:
    print(f"bookworm-root: {message}", flush=True)


def cache_dir() -> Path:
    """Next to the system tests' vm/ cache (CRASHHP_CACHE or XDG_CACHE_HOME/crashhp)."""
    return cache_root().parent / SUITE


def key_of(recipe: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


class BookwormApt(Apt):
    """The system tests' private apt config, pointed at bookworm instead of trixie."""

    def __init__(self, root: Path, mirror: str) -> None:
        super().__init__(root, mirror)
        (root / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror} {SUITE} main\n")


def archive_versions(apt: Apt, packages: list[str]) -> dict[str, str]:
    """The versions bookworm has now (the lists of the last run if the mirror is down)."""
    apt.refresh()
    return apt.versions(packages)


def build(tarball: Path, mirror: str) -> None:
    tmp = tarball.parent / "tmp-root"
    if tmp.exists():
        run(["rm", "-rf", "--one-file-system", str(tmp)], 600)
    tmp.mkdir(parents=True)
    start = time.monotonic()
    log(f"debootstrap --variant=minbase {SUITE} + {', '.join(INCLUDED)} (minutes)")
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(INCLUDED)}",
            SUITE,
            str(tmp),
            mirror,
        ],
        TIMEOUT_DEBOOTSTRAP_S,
    )
    log(f"debootstrap done in {time.monotonic() - start:.0f} s")
    for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()  # debootstrap's own downloads: installed already
    root = Root(tmp)
    try:
        root.run("apt-get", "-qq", "update")
        root.run("apt-get", "-qq", "install", "--download-only", "-y", *DOWNLOADED)
    except CheckFailed as exc:
        raise RuntimeError(str(exc)) from exc
    part = tarball.with_suffix(".part")
    run(
        ["tar", "--zstd", "--numeric-owner", "--xattrs", "-C", str(tmp), "-cf", str(part), "."],
        TIMEOUT_TAR_S,
    )
    run(["rm", "-rf", "--one-file-system", str(tmp)], 600)
    part.rename(tarball)
    log(f"{tarball.name}: {tarball.stat().st_size} bytes in {time.monotonic() - start:.0f} s")


def ensure() -> Path:
    """The tarball of a fresh bookworm root, built when the cache lacks it."""
    where = cache_dir()
    with locked(where):
        mirror = host_mirror()
        versions = archive_versions(BookwormApt(where / "apt", mirror), [*INCLUDED, *DOWNLOADED])
        recipe = {
            "suite": SUITE,
            "mirror": mirror,
            "included": INCLUDED,
            "downloaded": DOWNLOADED,
            "versions": versions,
            "recipe": RECIPE_VERSION,
        }
        tarball = where / f"root-{key_of(recipe)}.tar.zst"
        if tarball.exists():
            log(f"reusing {tarball}")
        else:
            build(tarball, mirror)
            for old in where.glob("root-*.tar.zst"):
                if old != tarball:
                    log(f"removing the outdated {old.name}")
                    old.unlink()
    return tarball


def unpack(tarball: Path, into: Path) -> None:
    run(
        ["tar", "--zstd", "--numeric-owner", "--xattrs", "-C", str(into), "-xf", str(tarball)],
        TIMEOUT_TAR_S,
    )


def main() -> int:
    try:
        print(ensure())
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"bookworm-root: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
