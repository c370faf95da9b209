"""Exercise the RPM as far as a Debian host allows: metadata, files, scriptlets in a root.

    .venv/bin/python packaging/check_rpm.py [out/crashhp-VERSION-1.noarch.rpm]

What runs: `rpm -qp` on the requirements (the spec's, the Python generator's and the
scriptlets' interpreters), the file list and the scriptlets' text; then
`rpm --root ROOT -i --nodeps` into a throwaway root, which runs %post for real (rpm
chroots into ROOT and runs the scriptlets with its /bin/sh): the preset enables the
unit, the journal catalog is compiled; systemd-analyze (the root's systemd) parses the
unit; then a takeover link is made and `rpm -e` runs %preun and %postun: the unit is
disabled, the link removed with its message, the admin's config kept as .rpmsave.

The root is packaging/bookworm_root.py's Debian 12 (it has the /bin/sh, systemctl,
udevadm and journalctl the scriptlets call) with an empty rpm database: `--nodeps`
because no database of Fedora packages is here. Not exercised: dependency resolution
against an RPM distribution, running crashhp from the RPM's files (they are for
Python 3.11's site-packages with Fedora's python3-pydantic 2, which the root does not
have), Fedora's own bodies of the systemd, udev and catalog macros (build-rpm uses
packaging/rpm/macros.fallback here), the presets of Fedora (which leave the unit
disabled), and the udev reload (no udevd in a chroot; the scriptlet ignores that).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "packaging"))

import bookworm_root  # noqa: E402
from check_deb_trixie import KDUMP_RULE, TAKEOVER, CheckFailed, Root, run_checks  # noqa: E402

from crashhp.logs import MESSAGE_IDS  # noqa: E402

TIMEOUT_S = 300
WANTS = "/etc/systemd/system/multi-user.target.wants/crashhp.service"


def rpm(*argv: str) -> str:
    proc = subprocess.run(
        ["rpm", *argv], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise CheckFailed(f"rpm {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout + proc.stderr


def checks(root: Root, package: Path, version: str) -> list[tuple[str, Callable[[], None]]]:
    """Named checks, in order; each raises CheckFailed."""
    where = str(root.path)
    sitelib = "/usr/lib/python3.11/site-packages"

    def expect(cond: bool, what: str) -> None:
        if not cond:
            raise CheckFailed(what)

    def requires() -> None:
        found = set(rpm("-qpR", str(package)).splitlines())
        for need in (
            "python3-pydantic >= 2.10",
            "python3-structlog >= 24.1",
            "python3-pyudev >= 0.24",
            "python3-systemd",
            "(python3.11dist(pydantic) < 3 with python3.11dist(pydantic) >= 2.10)",
            "python(abi) = 3.11",
            "/bin/sh",
            "systemd",
        ):
            expect(need in found, f"{need!r} not in Requires: {sorted(found)}")

    def file_list() -> None:
        files = set(rpm("-qpl", str(package)).splitlines())
        for path in (
            "/usr/bin/crashhp",
            f"{sitelib}/crashhp/cli.py",
            f"{sitelib}/crashhp-{version}.dist-info/METADATA",
            "/usr/lib/systemd/system/crashhp.service",
            "/usr/lib/udev/rules.d/60-crashhp.rules",
            "/usr/lib/systemd/catalog/crashhp.catalog",
            "/etc/crashhp/crashhp.toml",
            "/etc/crashhp/crashhp.d",
            TAKEOVER,
            "/usr/share/man/man8/crashhp.8.gz",
            "/usr/share/doc/crashhp/examples/direct-runner.conf",
        ):
            expect(path in files, f"{path} not in the RPM")
        config = rpm("-qpc", str(package)).split()
        expect(config == ["/etc/crashhp/crashhp.toml"], f"config files: {config}")

    def scriptlets() -> None:
        text = rpm("-qp", "--scripts", str(package))
        for part in (
            "postinstall scriptlet",
            "systemctl --no-reload preset crashhp.service",
            "journalctl --update-catalog",
            "preuninstall scriptlet",
            "systemctl --no-reload disable --now crashhp.service",
            "postuninstall scriptlet",
            "systemctl try-restart crashhp.service",
            "/usr/share/crashhp/udev-takeover/*)",
        ):
            expect(part in text, f"{part!r} not in the scriptlets:\n{text}")

    def installs_and_post_runs() -> None:
        rpm("--root", where, "--initdb")
        rpm("--root", where, "-i", "--nodeps", str(package))
        expect((root / "/usr/bin/crashhp").is_file(), "/usr/bin/crashhp missing")
        expect((root / WANTS).is_symlink(), "%post: the preset did not enable crashhp.service")
        listed = root.run("journalctl", "--list-catalog").stdout
        for event, message_id in MESSAGE_IDS.items():
            expect(message_id in listed, f"%post: {event} ({message_id}) not in the catalog")
        verified = rpm("--root", where, "-V", "--nodeps", "crashhp")
        expect(verified == "", f"rpm -V: {verified}")

    def unit_parses() -> None:
        # /bin/kill for ExecReload=: util-linux has it on Fedora, procps on Debian.
        root.run("apt-get", "install", "-y", "procps")
        proc = root.run("systemd-analyze", "verify", "--man=no", "crashhp.service", ok=False)
        said = [line for line in proc.stderr.splitlines() if "crashhp" in line]
        expect(proc.returncode == 0 and not said, f"{proc.returncode}: {proc.stderr}")

    def erase_runs_preun_and_postun() -> None:
        conf = root / "/etc/crashhp/crashhp.toml"
        conf.write_text(conf.read_text() + '\n[log]\nlevel = "debug"\n')
        link = root / f"/etc/udev/rules.d/{KDUMP_RULE}"
        os.symlink(TAKEOVER, link)
        out = rpm("--root", where, "-e", "crashhp")
        expect(not link.is_symlink(), "%postun left the takeover link")
        expect("the distribution's hotplug rule is in force again" in out, out)
        expect(not (root / WANTS).is_symlink(), "%preun did not disable crashhp.service")
        expect(not (root / "/usr/bin/crashhp").exists(), "/usr/bin/crashhp left")
        saved = root / "/etc/crashhp/crashhp.toml.rpmsave"
        expect(saved.is_file() and 'level = "debug"' in saved.read_text(), "no .rpmsave")

    return [
        ("Requires: spec, Python generator, scriptlets", requires),
        ("file list and %config", file_list),
        ("scriptlets", scriptlets),
        ("rpm -i --root: %post enables, compiles the catalog", installs_and_post_runs),
        ("systemd-analyze verify (the root's systemd 252)", unit_parses),
        ("rpm -e: %preun disables, %postun drops the takeover", erase_runs_preun_and_postun),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = REPO / f"out/crashhp-{version}-1.noarch.rpm"
    parser.add_argument("rpm", nargs="?", type=Path, default=default)
    args = parser.parse_args(argv)
    if not args.rpm.is_file():
        print(f"check-rpm: {args.rpm} missing; run packaging/build-rpm first", file=sys.stderr)
        return 1
    try:
        tarball = bookworm_root.ensure()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"check-rpm: {exc}", file=sys.stderr)
        return 1
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="crashhp-rpm-root.") as tmp:
        bookworm_root.unpack(tarball, Path(tmp))
        root = Root(Path(tmp))
        todo = checks(root, args.rpm, version)
        failed = run_checks("check-rpm", todo)
        passed = len(todo) - failed
    print(f"check-rpm: {passed} passed, {failed} failed in {time.monotonic() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
