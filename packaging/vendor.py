"""Fetch the pinned, hash-checked wheels a vendoring flavour of the .deb carries.

    python3 packaging/vendor.py packaging/vendor/bookworm.txt --into DIR

Each requirement in the file is `name==version --hash=sha256:HEX` (one hash: one
wheel). A wheel is looked up in the cache first,
${CRASHHP_CACHE:-${XDG_CACHE_HOME:-~/.cache}/crashhp}/wheels/HEX/FILE, keyed on its hash;
the missing ones are downloaded from PyPI in one `pip download --require-hashes
--no-deps --only-binary=:all:` for the target's Python and platform (not the host's),
each file's sha256 is checked again here, and only then is it moved into the cache.
`--into` copies the wheels into the package build tree, where debian/rules installs
them offline with `pip install --no-index --require-hashes`. Wheels are never
committed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.system.assets import cache_root

TIMEOUT_PIP_S = 600
INDEX = "https://pypi.org/simple"
# The defaults: the only vendoring flavour today, bookworm's python3 on amd64.
PYTHON_VERSION = "3.11"
PLATFORM = "manylinux2014_x86_64"


@dataclass(frozen=True)
class Target:
    """The Python and platform the wheels are for (not this host's)."""

    python: str = PYTHON_VERSION
    platform: str = PLATFORM


class VendorError(Exception):
    pass


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    sha256: str

    def line(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def parse(text: str) -> list[Pin]:
    """The pins of a requirements file; anything but `name==version` + one sha256 is refused."""
    logical = re.sub(r"\\\n", " ", text)
    pins: list[Pin] = []
    for raw in logical.splitlines():
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        match = re.fullmatch(
            r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*)\s+--hash=sha256:([0-9a-f]{64})", line
        )
        if not match:
            raise VendorError(f"not a name==version pin with one sha256: {line!r}")
        pins.append(Pin(*match.groups()))
    if not pins:
        raise VendorError("no pins")
    return pins


def cache_dir() -> Path:
    """Next to the system tests' vm/ cache (CRASHHP_CACHE or XDG_CACHE_HOME/crashhp)."""
    return cache_root().parent / "wheels"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached(pin: Pin, cache: Path) -> Path | None:
    wheels = list((cache / pin.sha256).glob("*.whl"))
    if len(wheels) == 1 and sha256_of(wheels[0]) == pin.sha256:
        return wheels[0]
    return None


def download(pins: Sequence[Pin], cache: Path, target: Target) -> None:
    """pip download the pins from PyPI, check each hash, then move them into the cache."""
    with tempfile.TemporaryDirectory(prefix="crashhp-wheels.") as tmp:
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("".join(pin.line() + "\n" for pin in pins))
        dest = Path(tmp) / "dl"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--require-hashes",
                "--no-deps",
                "--only-binary=:all:",
                f"--python-version={target.python}",
                "--implementation=cp",
                f"--abi=cp{target.python.replace('.', '')}",
                f"--platform={target.platform}",
                f"--index-url={INDEX}",
                "--no-cache-dir",
                "--dest",
                str(dest),
                "-r",
                str(reqs),
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_PIP_S,
            check=False,
            # No pip.conf: the wheels come from PyPI, whatever this machine's pip prefers.
            env={
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": tmp,
                "PIP_CONFIG_FILE": os.devnull,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            },
        )
        if proc.returncode != 0:
            raise VendorError(f"pip download failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        by_hash = {pin.sha256: pin for pin in pins}
        for wheel in dest.glob("*.whl"):
            digest = sha256_of(wheel)
            if digest not in by_hash:
                raise VendorError(f"{wheel.name}: sha256 {digest} is not pinned")
            keyed = cache / digest
            keyed.mkdir(parents=True, exist_ok=True)
            shutil.move(wheel, keyed / wheel.name)


def ensure(pins: Sequence[Pin], cache: Path, target: Target | None = None) -> list[Path]:
    """The cached wheel of every pin, downloading the missing ones."""
    missing = [pin for pin in pins if cached(pin, cache) is None]
    if missing:
        print(f"vendor: downloading {', '.join(p.name for p in missing)} from {INDEX}")
        download(missing, cache, target or Target())
    wheels: list[Path] = []
    for pin in pins:
        wheel = cached(pin, cache)
        if wheel is None:
            raise VendorError(f"{pin.name}=={pin.version}: no wheel with sha256 {pin.sha256}")
        wheels.append(wheel)
    return wheels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", type=Path)
    parser.add_argument("--into", type=Path, help="copy the wheels into this directory")
    parser.add_argument("--python-version", default=PYTHON_VERSION, help="the target's python3")
    parser.add_argument("--platform", default=PLATFORM, help="the target's wheel platform tag")
    args = parser.parse_args(argv)
    target = Target(args.python_version, args.platform)
    try:
        pins = parse(args.requirements.read_text(encoding="utf-8"))
        wheels = ensure(pins, cache_dir(), target)
    except (VendorError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"vendor: {exc}", file=sys.stderr)
        return 1
    for wheel in wheels:
        if args.into is not None:
            args.into.mkdir(parents=True, exist_ok=True)
            shutil.copy2(wheel, args.into / wheel.name)
        print(f"vendor: {wheel.name} ({wheel.stat().st_size} bytes, sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
