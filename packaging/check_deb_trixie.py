#!/usr/bin/env python3
"""Install the built .deb into a Debian trixie root (chroot, no VM) and check it.

    .venv/bin/python packaging/check_deb_trixie.py [out/crashhp_VERSION_all.deb]

The root is the system tests' guest rootfs (tests/system/assets.py: trixie with
systemd, udev, kdump-tools and crashhp's Python dependencies), unpacked into a
temporary directory; the cache itself is never changed. What this proves without a
kernel: the dependencies resolve against trixie's packages, dpkg runs the maintainer
scripts (enable, catalog trigger, byte-compiling), the files land where systemd,
udev and journald read them, the conffile stays an admin's, the takeover link masks
kdump-tools' rule and removing the package removes it again. That the installed
service handles hotplug is for the VM tests (issue 5 part 3).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crashhp.logs import MESSAGE_IDS  # noqa: E402
from tests.system import assets  # noqa: E402

TIMEOUT_S = 300
KDUMP_RULE = "50-kdump-tools.rules"
DEB_IN_ROOT = "/root/crashhp.deb"  # a path inside the throwaway root
TAKEOVER = f"/usr/share/crashhp/udev-takeover/{KDUMP_RULE}"
# The drop-in an admin installs for reload.runner = "direct" (README.md, "Hardening").
EXAMPLE = "/usr/share/doc/crashhp/examples/direct-runner.conf"
EXAMPLE_DROPIN = "/etc/systemd/system/crashhp.service.d/direct-runner.conf"


class CheckFailed(Exception):
    pass


class Root:
    """A throwaway root; commands run chrooted, with their own /proc (and /sys if asked)."""

    def __init__(self, path: Path, *, sysfs: bool = False) -> None:
        self.path = path
        self.sysfs = sysfs

    def run(self, *argv: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        script = 'mount -t proc proc "$1/proc" && shift && exec chroot "$@"'
        if self.sysfs:
            script = 'mount -t sysfs sysfs "$1/sys" && ' + script
        here = str(self.path)
        proc = subprocess.run(
            ["unshare", "--mount", "--fork", "sh", "-c", script, "sh", here, here, *argv],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
            env={
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "LC_ALL": "C.UTF-8",
                "DEBIAN_FRONTEND": "noninteractive",
            },
        )
        if ok and proc.returncode != 0:
            raise CheckFailed(
                f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel.lstrip("/")


def unpack(cpio: Path, into: Path) -> Root:
    with cpio.open("rb") as archive:
        subprocess.run(
            ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
            stdin=archive,
            cwd=into,
            check=True,
            timeout=TIMEOUT_S,
        )
    root = Root(into)
    parked = root / assets.PEER_RULES_PARKED
    if parked.exists():  # the system tests park kdump-tools' rule; a real system has it
        shutil.copy2(parked, root / assets.PEER_RULES)
    return root


def verify_with_example(root: Root) -> None:
    """The packaged example drop-in, installed as the README says, parses with the unit."""
    dropin = root / EXAMPLE_DROPIN.lstrip("/")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / EXAMPLE.lstrip("/"), dropin)
    try:
        proc = root.run("systemd-analyze", "verify", "--man=no", "crashhp.service", ok=False)
    finally:
        shutil.rmtree(dropin.parent)
    said = [line for line in proc.stderr.splitlines() if "crashhp" in line]
    if proc.returncode != 0 or said:
        raise CheckFailed(f"with {EXAMPLE_DROPIN}: {proc.returncode}: {proc.stderr}")


def peers_line(root: Root) -> str:
    code = (
        "from crashhp.peers import default_rule_dirs, find_peer_rules\n"
        "print(' '.join(f'{r.peer.rule}={r.state}' for r in "
        "find_peer_rules(default_rule_dirs())))"
    )
    return root.run("python3", "-c", code).stdout.strip()


def checks(root: Root, deb: Path, version: str) -> list[tuple[str, Callable[[], None]]]:
    """Named checks, in order; each raises CheckFailed."""

    def expect(cond: bool, what: str) -> None:
        if not cond:
            raise CheckFailed(what)

    def install() -> None:
        shutil.copy2(deb, root / DEB_IN_ROOT)
        out = root.run("dpkg", "-i", DEB_IN_ROOT).stdout
        expect("Setting up crashhp" in out, out)
        status = root.run("dpkg-query", "-W", "-f=${Status} ${Version}", "crashhp").stdout
        expect(status == f"install ok installed {version}", status)

    def files_in_place() -> None:
        for rel in (
            "/usr/bin/crashhp",
            "/usr/lib/systemd/system/crashhp.service",
            "/usr/lib/udev/rules.d/60-crashhp.rules",
            "/usr/lib/systemd/catalog/crashhp.catalog",
            "/usr/share/man/man8/crashhp.8.gz",
            "/usr/share/man/man5/crashhp.toml.5.gz",
            TAKEOVER,
            EXAMPLE,
        ):
            expect((root / rel).is_file(), f"{rel} missing")
        expect((root / "/etc/crashhp/crashhp.d").is_dir(), "/etc/crashhp/crashhp.d missing")
        conffiles = root.run("dpkg-query", "-W", "-f=${Conffiles}", "crashhp").stdout
        expect("/etc/crashhp/crashhp.toml" in conffiles, f"not a conffile: {conffiles}")

    def enabled() -> None:
        link = root / "/etc/systemd/system/multi-user.target.wants/crashhp.service"
        expect(link.is_symlink(), "crashhp.service not enabled")
        expect(os.readlink(link) == "/usr/lib/systemd/system/crashhp.service", os.readlink(link))

    def runs_on_trixie_python() -> None:
        out = root.run("crashhp", "--version").stdout.strip()
        expect(out == f"crashhp {version}", out)
        out = root.run("crashhp", "check-config").stdout
        expect(out.startswith("/etc/crashhp/crashhp.toml: valid"), out)
        compiled = list((root / "/usr/lib/python3/dist-packages/crashhp/__pycache__").iterdir())
        expect(bool(compiled), "py3compile did not run")

    def catalog_compiled() -> None:
        listed = root.run("journalctl", "--list-catalog").stdout
        for event, message_id in MESSAGE_IDS.items():
            expect(message_id in listed, f"{event} ({message_id}) not in the journal catalog")

    def udev_and_systemd_accept_the_files() -> None:
        root.run("udevadm", "verify", "/usr/lib/udev/rules.d/60-crashhp.rules", TAKEOVER)
        root.run("systemd-analyze", "verify", "--man=no", "crashhp.service")
        verify_with_example(root)

    def takeover_masks_kdump_tools() -> None:
        expect((root / assets.PEER_RULES).exists(), "kdump-tools' rule is not installed")
        before = peers_line(root)
        expect(f"{KDUMP_RULE}=active" in before, before)
        os.symlink(TAKEOVER, root / f"/etc/udev/rules.d/{KDUMP_RULE}")
        after = peers_line(root)
        expect(f"{KDUMP_RULE}=taken-over" in after, after)

    def upgrade_keeps_the_admins_config() -> None:
        conf = root / "/etc/crashhp/crashhp.toml"
        conf.write_text(conf.read_text() + '\n[log]\nlevel = "debug"\n')
        root.run("dpkg", "-i", DEB_IN_ROOT)  # same version again: an upgrade run
        expect('level = "debug"' in conf.read_text(), "the admin's change was lost")

    def remove_gives_the_job_back() -> None:
        proc = root.run("dpkg", "-r", "crashhp")
        link = root / f"/etc/udev/rules.d/{KDUMP_RULE}"
        expect(not link.is_symlink(), "takeover link left behind")
        expect("the distribution's hotplug rule is in force again" in proc.stderr, proc.stderr)
        expect((root / "/etc/crashhp/crashhp.toml").exists(), "conffile removed before purge")

    def purge_cleans_up() -> None:
        root.run("dpkg", "--purge", "crashhp")
        expect(not (root / "/etc/crashhp").exists(), "/etc/crashhp left after purge")
        wants = root / "/etc/systemd/system/multi-user.target.wants/crashhp.service"
        expect(not wants.is_symlink(), "enablement link left after purge")

    return [
        ("installs with trixie's dependencies", install),
        ("files in place, config is a conffile", files_in_place),
        ("service enabled", enabled),
        ("runs on trixie's python3", runs_on_trixie_python),
        ("journal catalog compiled", catalog_compiled),
        ("udevadm and systemd-analyze verify", udev_and_systemd_accept_the_files),
        ("takeover link masks kdump-tools' rule", takeover_masks_kdump_tools),
        ("reinstall keeps the admin's config", upgrade_keeps_the_admins_config),
        ("remove drops the takeover link", remove_gives_the_job_back),
        ("purge cleans up", purge_cleans_up),
    ]


def run_checks(tag: str, todo: list[tuple[str, Callable[[], None]]]) -> int:
    """Run the named checks in order, saying each; how many failed or were not run."""
    for i, (name, check) in enumerate(todo):
        try:
            check()
        except (CheckFailed, OSError, KeyError, subprocess.TimeoutExpired) as exc:
            print(f"{tag}: FAIL {name}: {exc}", file=sys.stderr)
            return len(todo) - i  # later checks build on this one
        print(f"{tag}: ok   {name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = REPO / f"out/crashhp_{version}_all.deb"
    parser.add_argument("deb", nargs="?", type=Path, default=default)
    args = parser.parse_args(argv)
    if not args.deb.is_file():
        print(f"check-deb: {args.deb} missing; run packaging/build-deb first", file=sys.stderr)
        return 1
    start = time.monotonic()
    rootfs = assets.ensure(acpi_fix=False).rootfs_cpio
    with tempfile.TemporaryDirectory(prefix="crashhp-trixie.") as tmp:
        root = unpack(rootfs, Path(tmp))
        todo = checks(root, args.deb, version)
        failed = run_checks("check-deb", todo)
        passed = len(todo) - failed
    print(f"check-deb: {passed} passed, {failed} failed in {time.monotonic() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
