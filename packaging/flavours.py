"""The .deb flavours: which Debian release each serves, and how a build tree becomes one.

    python3 packaging/flavours.py list                    # suite, version, arch, file name
    python3 packaging/flavours.py deb SUITE [--out DIR]   # the built .deb that fits SUITE
    python3 packaging/flavours.py prepare FLAVOUR TREE    # (build-deb) rewrite TREE/debian

One packaging in packaging/debian/, written for the newest target (trixie: the
distribution's own python3-pydantic and python3-structlog, systemd 257, Architecture:
all). A flavour for an older release is that packaging rewritten at build time:

- trixie   `0.1.0`          all    Depends on trixie's pydantic 2.10 and structlog 25.3
- bookworm `0.1.0~deb12u1`  amd64  pydantic, pydantic-core, annotated-types,
  typing-extensions and structlog from pinned, hash-checked wheels in
  /usr/lib/crashhp/vendor (packaging/vendor/bookworm.txt), found first by the
  launcher /usr/bin/crashhp; the unit made fit for systemd 252 (packaging/unitfile.py).

`~deb12u1` sorts below the trixie version, so a bookworm host upgraded to trixie
takes the trixie flavour from a repository that has both. The bookworm flavour also
depends on python3 (<< 3.12) through its compiled pydantic-core (dh_python3), so it
cannot stay installed, broken, on trixie's Python 3.13.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "packaging"))

import unitfile  # noqa: E402

PACKAGING = REPO / "packaging"
VENDOR_DIR = "/usr/lib/crashhp/vendor"


@dataclass(frozen=True)
class Flavour:
    suite: str
    # Appended to the packaging's version ("" for the release the packaging is written for).
    version_suffix: str
    arch: str
    systemd: int
    # pinned wheels carried in VENDOR_DIR, relative to the repository; None: none vendored
    vendor: str | None
    # Depends that the vendored copies replace
    replaced: tuple[str, ...] = ()
    # the python3 the vendored compiled wheels are built for
    python: str = ""

    def version(self, base: str) -> str:
        return base + self.version_suffix

    def deb_name(self, base: str) -> str:
        return f"crashhp_{self.version(base)}_{self.arch}.deb"


FLAVOURS = {
    "trixie": Flavour("trixie", "", "all", 257, None),
    "bookworm": Flavour(
        "bookworm",
        "~deb12u1",
        "amd64",
        252,
        "packaging/vendor/bookworm.txt",
        ("python3-pydantic", "python3-structlog"),
        "3.11",
    ),
}


class FlavourError(Exception):
    pass


def base_version() -> str:
    """The version at the top of packaging/debian/changelog (the trixie flavour's)."""
    first = (PACKAGING / "debian" / "changelog").read_text(encoding="utf-8").partition("\n")[0]
    match = re.match(r"crashhp \(([^)]+)\) ", first)
    if not match:
        raise FlavourError(f"debian/changelog: cannot read the version from {first!r}")
    return match.group(1)


def for_suite(suite: str) -> Flavour:
    try:
        return FLAVOURS[suite]
    except KeyError:
        raise FlavourError(f"no flavour for {suite!r}; there are {', '.join(FLAVOURS)}") from None


def deb_for(suite: str, out: Path) -> Path:
    """The built .deb in `out` that installs on `suite` (for the VM tests' guests)."""
    deb = out / for_suite(suite).deb_name(base_version())
    if not deb.is_file():
        raise FlavourError(f"{deb} missing: run packaging/build-deb --flavour {suite}")
    return deb


def _sub(pattern: str, repl: str, text: str, what: str) -> str:
    new, n = re.subn(pattern, repl, text, count=1, flags=re.MULTILINE)
    if n != 1:
        raise FlavourError(f"debian/control: {what} not found")
    return new


def control_for(control: str, flavour: Flavour) -> str:
    """debian/control for the flavour (the committed one is trixie's)."""
    if flavour.vendor is None:
        return control
    source, sep, binary = control.partition("\nPackage: crashhp\n")
    if not sep:
        raise FlavourError("debian/control: no crashhp binary paragraph")
    source = _sub(r"^(Build-Depends:\n)", r"\1 python3-pip,\n", source, "Build-Depends")
    binary = _sub(r"^Architecture: all$", f"Architecture: {flavour.arch}", binary, "Architecture")
    for dep in flavour.replaced:
        binary = _sub(rf"^ {re.escape(dep)}\b[^\n]*,\n", "", binary, dep)
    # pydantic-core is compiled for one Python: on any other it would not import.
    major, minor = flavour.python.split(".")
    python = f" python3 (>= {flavour.python}),\n python3 (<< {major}.{int(minor) + 1}),\n"
    binary = _sub(r"^(Depends:\n)", rf"\1{python}", binary, "Depends")
    binary = _sub(r"^( \$\{misc:Depends\},\n)", r"\1 ${shlibs:Depends},\n", binary, "misc:Depends")
    binary = binary.rstrip("\n") + (
        "\n .\n"
        f" This build for Debian {flavour.suite} carries its own copies of pydantic and\n"
        f" structlog (and their dependencies) in {VENDOR_DIR}, because the\n"
        " release's python3-pydantic and python3-structlog are too old.\n"
    )
    return source + sep + binary


def changelog_for(changelog: str, flavour: Flavour) -> str:
    """debian/changelog with the flavour's entry on top, signed like the entry below it."""
    if not flavour.version_suffix:
        return changelog
    base = re.match(r"crashhp \(([^)]+)\) ", changelog)
    trailer = re.search(r"^ -- .+$", changelog, flags=re.MULTILINE)
    if base is None or trailer is None:
        raise FlavourError("debian/changelog: no top entry")
    # One second younger than the entry it rebuilds: dpkg and lintian want a newer date,
    # and a fixed one keeps the build reproducible (it sets SOURCE_DATE_EPOCH).
    who, _, when = trailer.group(0).partition(">  ")
    date = format_datetime(parsedate_to_datetime(when) + timedelta(seconds=1))
    entry = (
        f"crashhp ({flavour.version(base.group(1))}) {flavour.suite}; urgency=medium\n\n"
        f"  * Build for {flavour.suite}: pydantic and structlog from pinned wheels in\n"
        f"    {VENDOR_DIR}; the unit for systemd {flavour.systemd}.\n\n"
        f"{who}>  {date}\n\n"
    )
    return entry + changelog


def needs_kill(unit: str) -> bool:
    """Whether the unit runs /bin/kill (procps: not in a minbase system)."""
    return re.search(r"^Exec[A-Za-z]*=[-@:+!]*/(?:usr/)?bin/kill\b", unit, flags=re.M) is not None


def with_procps(control: str) -> str:
    return _sub(r"^(Depends:\n)", r"\1 procps,\n", control, "Depends")


def prepare(flavour: Flavour, tree: Path) -> None:
    """Rewrite the build tree's debian/ (a copy of packaging/debian) into the flavour."""
    debian = tree / "debian"
    for name, rewrite in (("control", control_for), ("changelog", changelog_for)):
        path = debian / name
        path.write_text(rewrite(path.read_text(encoding="utf-8"), flavour), encoding="utf-8")
    unit = (tree / "systemd" / "crashhp.service").read_text(encoding="utf-8")
    if needs_kill(unitfile.for_systemd(unit, flavour.systemd)):
        path = debian / "control"
        path.write_text(with_procps(path.read_text(encoding="utf-8")), encoding="utf-8")
    settings = [f"CRASHHP_SYSTEMD = {flavour.systemd}"]
    if flavour.vendor is not None:
        settings.append(f"CRASHHP_VENDOR = {VENDOR_DIR}")
        settings.append(f"CRASHHP_PYTHON = {flavour.python}")
        (debian / "vendor.txt").write_bytes((REPO / flavour.vendor).read_bytes())
        for name, extra in (("copyright", "copyright"), ("crashhp.lintian-overrides", "lintian")):
            path = debian / name
            more = (PACKAGING / "vendor" / extra).read_text(encoding="utf-8")
            path.write_text(path.read_text(encoding="utf-8") + "\n" + more, encoding="utf-8")
    (debian / "flavour.mk").write_text("".join(s + "\n" for s in settings), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the flavours: suite, version, architecture, file name")
    deb = sub.add_parser("deb", help="print the built .deb that installs on SUITE")
    deb.add_argument("suite")
    deb.add_argument("--out", type=Path, default=REPO / "out")
    prep = sub.add_parser("prepare", help="rewrite TREE/debian into FLAVOUR (build-deb)")
    prep.add_argument("flavour", choices=sorted(FLAVOURS))
    prep.add_argument("tree", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            base = base_version()
            for f in FLAVOURS.values():
                print(f"{f.suite}\t{f.version(base)}\t{f.arch}\t{f.deb_name(base)}")
        elif args.command == "deb":
            print(deb_for(args.suite, args.out))
        else:
            prepare(FLAVOURS[args.flavour], args.tree)
    except (FlavourError, OSError) as exc:
        print(f"flavours: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
