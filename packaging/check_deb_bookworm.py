"""Install the bookworm .deb into a fresh Debian 12 root (chroot, no VM) and check it.

    .venv/bin/python packaging/check_deb_bookworm.py [out/crashhp_VERSION~deb12u1_amd64.deb]

The root is packaging/bookworm_root.py's cached debootstrap (minbase + systemd, udev,
kexec-tools; crashhp's dependencies in apt's cache but not installed), unpacked into a
temporary directory. What this proves without a kernel: `apt install ./crashhp_*.deb`
resolves against bookworm's own packages (python3 3.11, python3-pyudev 0.24.0,
python3-systemd 235; no python3-pydantic, no python3-structlog); dpkg byte-compiles the
private directory; the launcher runs `crashhp --help`, `check-config` and
`status --json` (against the host's /proc and /sys, mounted in the chroot) on
bookworm's python3; every crashhp module imports through the launcher with pydantic,
pydantic-core, typing-extensions and structlog from /usr/lib/crashhp/vendor at the
pinned versions, while plain python3 cannot import crashhp's config at all (nothing
else sees the copies); they still win with bookworm's python3-pydantic 1.10 and
python3-structlog 22.3 installed as well; bookworm's systemd 252 parses the unit
without a warning (Type=notify, ExecReload=); purge leaves nothing under
/usr/lib/crashhp. That the service starts and a burst reloads once is for the VM
tests (tests/system, the bookworm guest).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "packaging"))

import bookworm_root  # noqa: E402
import flavours  # noqa: E402
import vendor  # noqa: E402
from check_deb_trixie import (  # noqa: E402
    EXAMPLE,
    CheckFailed,
    Root,
    run_checks,
    verify_with_example,
)

SUITE = "bookworm"
VENDOR = flavours.VENDOR_DIR
UNIT = "/usr/lib/systemd/system/crashhp.service"
# Run by the chroot's python3: the launcher's sys.path, then every crashhp module, then
# where the libraries came from. run_name keeps the launcher from calling main().
IMPORT_ALL = """
import importlib, json, pkgutil, runpy, sys
runpy.run_path("/usr/bin/crashhp", run_name="crashhp_launcher")
import crashhp
mods = sorted(m.name for m in pkgutil.iter_modules(crashhp.__path__, "crashhp."))
mods.remove("crashhp.__main__")  # runs the CLI: `crashhp --help` covers it
for name in mods:
    importlib.import_module(name)
from importlib.metadata import version
libs = ("pydantic", "pydantic_core", "typing_extensions", "annotated_types", "structlog")
print(json.dumps({
    "modules": mods,
    "files": {n: sys.modules[n].__file__ for n in libs},
    "versions": {n: version(n) for n in ("pydantic", "pydantic-core", "structlog")},
}))
"""


def checks(root: Root, deb: Path, version: str) -> list[tuple[str, Callable[[], None]]]:
    """Named checks, in order; each raises CheckFailed."""
    in_root = f"/root/{deb.name}"
    pins = {
        p.name: p.version
        for p in vendor.parse((REPO / str(flavours.FLAVOURS[SUITE].vendor)).read_text())
    }

    def expect(cond: bool, what: str) -> None:
        if not cond:
            raise CheckFailed(what)

    def installed_version(package: str) -> str:
        return root.run("dpkg-query", "-W", "-f=${Version}", package, ok=False).stdout

    def fresh() -> None:
        for package in ("python3", "python3-pydantic", "python3-structlog", "python3-pyudev"):
            expect(not installed_version(package), f"{package} installed before crashhp")

    def install() -> None:
        shutil.copy2(deb, root / in_root)
        out = root.run("apt-get", "install", "-y", in_root).stdout
        expect("Setting up crashhp" in out, out)
        status = root.run("dpkg-query", "-W", "-f=${Status} ${Version}", "crashhp").stdout
        expect(status == f"install ok installed {version}", status)
        for package in ("python3-pydantic", "python3-structlog"):
            expect(not installed_version(package), f"apt installed bookworm's {package}")
        expect(installed_version("python3-pyudev").startswith("0.24"), "python3-pyudev")

    def files_in_place() -> None:
        launcher = (root / "/usr/bin/crashhp").read_text()
        expect(f'sys.path.insert(0, "{VENDOR}")' in launcher, "/usr/bin/crashhp: no launcher")
        for lib in ("pydantic", "pydantic_core", "structlog", "annotated_types"):
            expect((root / f"{VENDOR}/{lib}/__init__.py").is_file(), f"{VENDOR}/{lib} missing")
        compiled = list((root / f"{VENDOR}/pydantic/__pycache__").glob("*.cpython-311.pyc"))
        expect(bool(compiled), "py3compile did not compile the vendored pydantic")
        link = root / "/etc/systemd/system/multi-user.target.wants/crashhp.service"
        expect(link.is_symlink(), "crashhp.service not enabled")

    def runs_on_bookworm_python() -> None:
        out = root.run("crashhp", "--help").stdout
        expect("check-config" in out and "status" in out, out)
        out = root.run("crashhp", "--version").stdout.strip()
        expect(out == f"crashhp {version.partition('~')[0]}", out)
        out = root.run("crashhp", "check-config").stdout
        expect(out.startswith("/etc/crashhp/crashhp.toml: valid"), out)

    def status_json() -> None:
        proc = root.run("crashhp", "status", "--json", ok=False)
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise CheckFailed(f"status --json: {exc}:\n{proc.stdout}{proc.stderr}") from exc
        # The verdict depends on the host kernel; the output and the exit code must agree.
        expect(data["exit_code"] == proc.returncode, f"exit {proc.returncode} but {data}")
        expect(data["verdict"] in ("OK", "WARNING", "CRITICAL", "UNKNOWN"), str(data))
        expect(data["kernel"]["release"] == os.uname().release, str(data["kernel"]))
        expect(data["config"]["files"] == ["/etc/crashhp/crashhp.toml"], str(data["config"]))

    def vendored_copies_used(when: str) -> Callable[[], None]:
        def check() -> None:
            found = json.loads(root.run("python3", "-c", IMPORT_ALL).stdout)
            expect(len(found["modules"]) >= 10, f"{when}: modules {found['modules']}")
            for lib, path in found["files"].items():
                expect(path.startswith(f"{VENDOR}/"), f"{when}: {lib} from {path}")
            for lib, got in found["versions"].items():
                expect(got == pins[lib], f"{when}: {lib} {got}, pinned {pins[lib]}")

        return check

    def private_to_crashhp() -> None:
        proc = root.run("python3", "-c", "import crashhp.config", ok=False)
        expect(proc.returncode != 0, "plain python3 imported crashhp.config")
        expect("No module named 'pydantic'" in proc.stderr, proc.stderr)

    def with_bookworms_own_too() -> None:
        root.run("apt-get", "install", "-y", "python3-pydantic", "python3-structlog")
        expect(installed_version("python3-pydantic").startswith("1.10"), "no pydantic 1.10")
        vendored_copies_used("with python3-pydantic 1.10 installed")()
        out = root.run("crashhp", "check-config").stdout
        expect(out.startswith("/etc/crashhp/crashhp.toml: valid"), out)

    def systemd_252_parses_the_unit() -> None:
        unit = (root / UNIT).read_text()
        expect("\nType=notify\n" in unit and "\nExecReload=" in unit, unit)
        proc = root.run("systemd-analyze", "verify", "--man=no", "crashhp.service", ok=False)
        said = [line for line in proc.stderr.splitlines() if "crashhp" in line]
        expect(proc.returncode == 0 and not said, f"{proc.returncode}: {proc.stderr}")
        version_line = root.run("systemctl", "--version").stdout.splitlines()[0]
        expect(version_line.startswith("systemd 252 "), version_line)
        expect((root / EXAMPLE).is_file(), f"{EXAMPLE} missing")
        verify_with_example(root)  # the direct-runner drop-in parses on 252 too

    def purge_leaves_nothing() -> None:
        root.run("dpkg", "--purge", "crashhp")
        expect(not (root / "/usr/lib/crashhp").exists(), "/usr/lib/crashhp left after purge")
        expect(not (root / "/etc/crashhp").exists(), "/etc/crashhp left after purge")

    return [
        ("fresh root: no python3, pydantic, structlog", fresh),
        ("apt installs it with bookworm's dependencies", install),
        ("launcher, vendored libraries (byte-compiled), enabled", files_in_place),
        ("--help, --version, check-config on bookworm's python3", runs_on_bookworm_python),
        ("status --json with the chroot's /proc and /sys", status_json),
        ("every module imports, with the vendored copies", vendored_copies_used("alone")),
        ("plain python3 does not see the copies", private_to_crashhp),
        ("vendored copies win over bookworm's own", with_bookworms_own_too),
        ("systemd 252 parses the unit", systemd_252_parses_the_unit),
        ("purge leaves nothing", purge_leaves_nothing),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("deb", nargs="?", type=Path)
    args = parser.parse_args(argv)
    version = flavours.FLAVOURS[SUITE].version(flavours.base_version())
    try:
        deb = args.deb or flavours.deb_for(SUITE, REPO / "out")
        tarball = bookworm_root.ensure()
    except (flavours.FlavourError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"check-deb-bookworm: {exc}", file=sys.stderr)
        return 1
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="crashhp-bookworm.") as tmp:
        bookworm_root.unpack(tarball, Path(tmp))
        root = Root(Path(tmp), sysfs=True)
        todo = checks(root, deb, version)
        failed = run_checks("check-deb-bookworm", todo)
        passed = len(todo) - failed
    took = time.monotonic() - start
    print(f"check-deb-bookworm: {passed} passed, {failed} failed in {took:.0f} s ({deb.name})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
