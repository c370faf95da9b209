"""The packaging's shipped files agree with the code: config file, catalog, man pages,
versions and dependencies. The package builds themselves run in `make packages`."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crashhp import logs
from crashhp.cli import main
from crashhp.config import Config

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
SHIPPED_TOML = PACKAGING / "crashhp.toml"
CATALOG = PACKAGING / "crashhp.catalog"
MAN8 = PACKAGING / "man" / "crashhp.8.scd"
MAN5 = PACKAGING / "man" / "crashhp.toml.5.scd"
DEBIAN = PACKAGING / "debian"
SPEC = PACKAGING / "rpm" / "crashhp.spec"

# Distribution package for each Python requirement in pyproject.toml.
DEB_NAMES = {
    "pyudev": "python3-pyudev",
    "systemd-python": "python3-systemd",
    "pydantic": "python3-pydantic",
    "structlog": "python3-structlog",
}


def _gen_config() -> Any:
    spec = importlib.util.spec_from_file_location("gen_config", PACKAGING / "gen_config.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_keys() -> list[str]:
    iter_fields: Callable[..., Any] = _gen_config().iter_fields
    return [key for key, _ in iter_fields(Config)]


# ---- /etc/crashhp/crashhp.toml ---------------------------------------------------


def test_shipped_config_is_what_the_model_generates() -> None:
    render: Callable[[], str] = _gen_config().render
    assert SHIPPED_TOML.read_text(encoding="utf-8") == render(), (
        "packaging/crashhp.toml is stale: run .venv/bin/python packaging/gen_config.py"
    )


def test_shipped_config_as_is_means_defaults() -> None:
    data = tomllib.loads(SHIPPED_TOML.read_text(encoding="utf-8"))
    assert Config.model_validate(data) == Config()


def test_every_key_commented_out_once_at_its_default_with_an_explanation() -> None:
    lines = SHIPPED_TOML.read_text(encoding="utf-8").splitlines()
    uncommented: list[str] = []
    seen: list[str] = []
    section = ""
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]") + "."
        match = re.fullmatch(r"#([a-z_]+) = .*", line)
        if match:
            seen.append(section.lstrip(".") + match.group(1))
            above = lines[i - 1]
            assert above.startswith("# "), f"no explanation above {line}"
            assert above.endswith("."), f"explanation of {line} is not one line"
        uncommented.append(line[1:] if match else line)
    assert seen == [k for k in _model_keys() if "." not in k] + [
        k for k in _model_keys() if "." in k
    ]
    # Uncommenting everything changes nothing: each value shown is the default.
    data = tomllib.loads("\n".join(uncommented))
    assert Config.model_validate(data) == Config()


def test_generator_refuses_a_key_without_explanation() -> None:
    gen = _gen_config()
    gen.EXPLAIN.pop("reload.retries")
    with pytest.raises(gen.ModelDrift, match=r"reload\.retries: no explanation"):
        gen.render()


def test_generator_refuses_a_stale_explanation() -> None:
    gen = _gen_config()
    gen.EXPLAIN["reload.gone"] = "a key the model no longer has"
    with pytest.raises(gen.ModelDrift, match=r"reload\.gone"):
        gen.render()


def test_generator_check_mode(tmp_path: Path) -> None:
    gen_main: Callable[[list[str]], int] = _gen_config().main
    out = tmp_path / "crashhp.toml"
    assert gen_main(["--check", "--output", str(out)]) == 1  # missing
    assert gen_main(["--output", str(out)]) == 0
    assert gen_main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8") + "#extra = 1\n", encoding="utf-8")
    assert gen_main(["--check", "--output", str(out)]) == 1


# ---- journal catalog --------------------------------------------------------------


def _catalog_entries() -> dict[str, tuple[dict[str, str], str]]:
    """MESSAGE_ID -> (headers, body), parsed as journalctl reads the file."""
    entries: dict[str, tuple[dict[str, str], str]] = {}
    text = CATALOG.read_text(encoding="utf-8")
    for chunk in re.split(r"^-- ", text, flags=re.MULTILINE)[1:]:
        first, _, rest = chunk.partition("\n")
        head, _, body = rest.partition("\n\n")
        headers = dict(line.split(": ", 1) for line in head.splitlines())
        assert first not in entries, f"duplicate catalog entry {first}"
        entries[first] = (headers, body.strip())
    return entries


def test_catalog_has_one_entry_per_message_id() -> None:
    entries = _catalog_entries()
    assert set(entries) == set(logs.MESSAGE_IDS.values())
    for message_id, (headers, body) in entries.items():
        assert re.fullmatch(r"[0-9a-f]{32}", message_id)
        assert headers.keys() >= {"Subject", "Defined-By", "Documentation"}, message_id
        assert headers["Defined-By"] == "crashhp"
        assert headers["Documentation"].startswith("man:crashhp")
        assert len(body) > 100, f"{message_id}: the admin's paragraph is missing"


@pytest.mark.skipif(shutil.which("journalctl") is None, reason="no journalctl here")
def test_journalctl_compiles_the_catalog(tmp_path: Path) -> None:
    catalog_dir = tmp_path / "usr/lib/systemd/catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(CATALOG, catalog_dir)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True, timeout=60)
    listed = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--list-catalog"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    ids = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert ids == set(logs.MESSAGE_IDS.values())


# ---- man pages --------------------------------------------------------------------


def test_config_man_page_documents_every_key() -> None:
    text = MAN5.read_text(encoding="utf-8")
    sections = re.split(r"^# ", text, flags=re.MULTILINE)
    by_section = {s.partition("\n")[0].strip(): s for s in sections}
    for key in _model_keys():
        section, _, name = key.rpartition(".")
        where = by_section.get(f"[{section}]" if section else "TOP-LEVEL KEYS", "")
        assert re.search(rf"^\*{name}\* = ", where, flags=re.MULTILINE), f"{key} undocumented"


def test_daemon_man_page_documents_every_command_and_message_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    verbs = re.findall(r"^    ([a-z][a-z-]+)\b", capsys.readouterr().out, flags=re.MULTILINE)
    assert "daemon" in verbs
    text = MAN8.read_text(encoding="utf-8")
    for verb in verbs:
        assert f"*crashhp {verb}*" in text, f"{verb} missing from SYNOPSIS"
        assert re.search(rf"^\*{verb}\*", text, flags=re.MULTILINE), f"{verb} not described"
    for event, message_id in logs.MESSAGE_IDS.items():
        assert f"*{event}*\n\tMESSAGE_ID={message_id}" in text


@pytest.mark.skipif(shutil.which("scdoc") is None, reason="no scdoc here")
@pytest.mark.parametrize("page", [MAN8, MAN5], ids=lambda p: p.name)
def test_man_pages_build(page: Path) -> None:
    roff = subprocess.run(
        ["scdoc"],
        input=page.read_text(encoding="utf-8"),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert roff.startswith('.\\" Generated by scdoc')
    assert ".SH NAME" in roff


# ---- versions and dependencies agree --------------------------------------------


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _floors() -> dict[str, str]:
    """Requirement name -> its >= floor, from pyproject.toml."""
    floors: dict[str, str] = {}
    for req in _pyproject()["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)(?:,.*)?", req)
        assert match, req
        floors[match.group(1)] = match.group(2)
    return floors


def test_package_versions_match_pyproject() -> None:
    version = _pyproject()["project"]["version"]
    changelog = (DEBIAN / "changelog").read_text(encoding="utf-8").partition("\n")[0]
    assert re.match(rf"crashhp \({re.escape(version)}(-[0-9]+)?\) ", changelog), changelog
    spec = SPEC.read_text(encoding="utf-8")
    assert re.search(rf"^Version:\s+{re.escape(version)}$", spec, flags=re.MULTILINE)


def test_debian_depends_on_every_requirement_at_its_floor() -> None:
    control = (DEBIAN / "control").read_text(encoding="utf-8")
    binary = control.partition("\nPackage: crashhp\n")[2]
    depends = re.search(r"^Depends:\n((?: .*\n)+)", binary, flags=re.MULTILINE)
    assert depends
    relations = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^ ([a-z0-9.+-]+)(?: \(>= ([^)]+)\))?,$", depends.group(1), re.M)
    }
    for name, floor in _floors().items():
        deb = DEB_NAMES[name]
        assert deb in relations, f"{deb} missing from Depends"
        if relations[deb] is not None:
            assert relations[deb] == floor, f"{deb} (>= {relations[deb]}) but {name}>={floor}"
    assert relations["python3-pydantic"] is not None  # v2 only: bookworm's is 1.x


def test_rpm_requires_every_requirement_at_its_floor() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    requires = dict(
        (m.group(1), m.group(2))
        for m in re.finditer(r"^Requires:\s+(\S+)(?:\s+>=\s+(\S+))?$", spec, flags=re.M)
    )
    for name, floor in _floors().items():
        rpm = DEB_NAMES[name]  # Fedora and openSUSE use the same names
        assert rpm in requires, f"{rpm} missing from Requires"
        if requires[rpm] is not None:
            assert requires[rpm] == floor


def test_packages_install_the_files_the_tree_has() -> None:
    installs = (DEBIAN / "crashhp.install").read_text(encoding="utf-8").splitlines()
    for line in installs:
        source = line.split()[0]
        assert list(REPO.glob(source)), f"debian/crashhp.install: {source} missing"
    spec = SPEC.read_text(encoding="utf-8")
    for source in re.findall(r"^install -D\S* (?:-t \S+ )?(\S+)", spec, flags=re.M):
        if "/" in source:  # built files (man pages) have no directory
            assert list(REPO.glob(source)), f"crashhp.spec: {source} missing"
    rules = (DEBIAN / "rules").read_text(encoding="utf-8")
    for source in re.findall(r"install -m 0644 (\S+) debian/", rules):
        assert (REPO / source).is_file(), f"debian/rules: {source} missing"


# ---- flavours: one packaging, a .deb per Debian release ----------------------------


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, PACKAGING / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


UNIT = REPO / "systemd" / "crashhp.service"


def _service(unit: str) -> list[str]:
    section = ("\n" + unit).partition("\n[Service]\n")[2].partition("\n[")[0]
    return [line for line in section.splitlines() if line and not line.startswith("#")]


def _as_notify_reload(unit: str) -> str:
    """The unit as the notify-reload rework will say it (whatever systemd/ says today)."""
    unit = re.sub(r"^Type=.*$", "Type=notify-reload", unit, flags=re.M)
    return re.sub(r"^ExecReload=.*\n", "", unit, flags=re.M)


@pytest.mark.parametrize("as_committed", [True, False], ids=["unit-as-is", "notify-reload"])
def test_unit_for_systemd_252_reloads_with_a_signal(as_committed: bool) -> None:
    unitfile = _load("unitfile")
    unit = UNIT.read_text(encoding="utf-8")
    unit = unit if as_committed else _as_notify_reload(unit)
    service = _service(unitfile.for_systemd(unit, 252))
    assert [s for s in service if s.startswith("Type=")] == ["Type=notify"]
    assert [s for s in service if s.startswith("ExecReload=")] == [
        "ExecReload=/bin/kill -HUP $MAINPID"
    ]
    assert not [s for s in service if s.startswith("ReloadSignal=")]


def test_unit_for_newer_systemd_is_the_unit_itself() -> None:
    unitfile = _load("unitfile")
    unit = _as_notify_reload(UNIT.read_text(encoding="utf-8"))
    assert unitfile.for_systemd(unit, 253) == unit
    assert unitfile.for_systemd(unit, 257) == unit


def test_unit_for_252_sends_the_configured_reload_signal() -> None:
    unitfile = _load("unitfile")
    unit = "[Service]\nType=notify-reload\nReloadSignal=SIGUSR1\nExecStart=/x\n"
    assert unitfile.for_systemd(unit, 252).count("\n") == unit.count("\n") + 3
    service = _service(unitfile.for_systemd(unit, 252))
    assert service == ["Type=notify", "ExecReload=/bin/kill -USR1 $MAINPID", "ExecStart=/x"]


def test_unit_for_252_keeps_an_explicit_exec_reload() -> None:
    unitfile = _load("unitfile")
    unit = "[Service]\nType=notify-reload\nExecReload=/usr/bin/true\n"
    assert _service(unitfile.for_systemd(unit, 252)) == ["Type=notify", "ExecReload=/usr/bin/true"]


def test_unit_without_any_reload_path_is_refused() -> None:
    unitfile = _load("unitfile")
    with pytest.raises(unitfile.UnitError, match="ExecReload"):
        unitfile.for_systemd("[Service]\nType=notify\nExecStart=/x\n", 252)
    with pytest.raises(unitfile.UnitError, match=r"\[Service\]"):
        unitfile.for_systemd("[Unit]\nDescription=x\n", 252)


@pytest.mark.parametrize(
    ("line", "old"),
    [
        ("ProtectControlGroups=private", "ProtectControlGroups=yes"),
        ("PrivateTmp=disconnected", "PrivateTmp=yes"),
        ("PrivateUsers=self", "PrivateUsers=yes"),
    ],
)
def test_values_newer_than_the_target_get_their_older_spelling(line: str, old: str) -> None:
    unitfile = _load("unitfile")
    unit = f"[Service]\nType=notify\nExecReload=/bin/kill -HUP $MAINPID\n{line}\n"
    assert _service(unitfile.for_systemd(unit, 252))[-1] == old
    assert _service(unitfile.for_systemd(unit, 256))[-1] == old
    assert _service(unitfile.for_systemd(unit, 257))[-1] == line


def test_debian_rules_builds_the_unit_through_the_transform() -> None:
    rules = (DEBIAN / "rules").read_text(encoding="utf-8")
    assert re.search(
        r"python3 packaging/unitfile\.py --systemd \$\(CRASHHP_SYSTEMD\) systemd/crashhp\.service",
        rules,
    )
    assert "packaging/unitfile.py" in (PACKAGING / "build-deb").read_text(encoding="utf-8")
    spec = SPEC.read_text(encoding="utf-8")
    assert re.search(
        r'^%\{python3\} packaging/unitfile\.py --systemd "\$systemd_version" '
        r"systemd/crashhp\.service > crashhp\.service$",
        spec,
        flags=re.M,
    )
    assert "install -Dpm 0644 crashhp.service %{buildroot}%{_unitdir}/" in spec
    assert "packaging/unitfile.py" in (PACKAGING / "build-rpm").read_text(encoding="utf-8")


def test_bookworm_control_vendors_and_is_amd64() -> None:
    flavours = _load("flavours")
    control = (DEBIAN / "control").read_text(encoding="utf-8")
    assert flavours.control_for(control, flavours.FLAVOURS["trixie"]) == control
    out = flavours.control_for(control, flavours.FLAVOURS["bookworm"])
    source, _, binary = out.partition("\nPackage: crashhp\n")
    assert " python3-pip,\n" in source
    assert re.search(r"^Architecture: amd64$", binary, flags=re.M)
    depends = re.search(r"^Depends:\n((?: .*\n)+)", binary, flags=re.M)
    assert depends
    names = re.findall(r"^ ([^\s,]+)", depends.group(1), flags=re.M)
    assert "python3-pydantic" not in names
    assert "python3-structlog" not in names
    assert {"python3-pyudev", "python3-systemd", "${shlibs:Depends}"} <= set(names)
    assert " python3 (>= 3.11),\n python3 (<< 3.12),\n" in depends.group(1)
    assert "/usr/lib/crashhp/vendor" in binary


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="no dpkg here")
def test_bookworm_version_sorts_below_trixie_and_parses(tmp_path: Path) -> None:
    flavours = _load("flavours")
    base = flavours.base_version()
    changelog = (DEBIAN / "changelog").read_text(encoding="utf-8")
    path = tmp_path / "changelog"
    path.write_text(flavours.changelog_for(changelog, flavours.FLAVOURS["bookworm"]))
    parsed = subprocess.run(
        ["dpkg-parsechangelog", "-l", str(path), "-S", "Version"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    assert parsed == f"{base}~deb12u1"
    # dpkg --compare-versions exits 0 when the relation holds
    argv = ["dpkg", "--compare-versions", parsed, "lt", base]
    assert subprocess.run(argv, check=False, timeout=60).returncode == 0
    assert flavours.changelog_for(changelog, flavours.FLAVOURS["trixie"]) == changelog


def test_deb_for_names_the_file_each_suite_installs(tmp_path: Path) -> None:
    flavours = _load("flavours")
    base = flavours.base_version()
    with pytest.raises(flavours.FlavourError, match="build-deb --flavour bookworm"):
        flavours.deb_for("bookworm", tmp_path)
    (tmp_path / f"crashhp_{base}~deb12u1_amd64.deb").touch()
    (tmp_path / f"crashhp_{base}_all.deb").touch()
    assert flavours.deb_for("bookworm", tmp_path).name == f"crashhp_{base}~deb12u1_amd64.deb"
    assert flavours.deb_for("trixie", tmp_path).name == f"crashhp_{base}_all.deb"
    with pytest.raises(flavours.FlavourError, match="no flavour"):
        flavours.deb_for("buster", tmp_path)


def test_vendored_pins_are_hashed_and_meet_pyproject() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    vendor = _load("vendor")
    flavours = _load("flavours")
    pins = vendor.parse((REPO / flavours.FLAVOURS["bookworm"].vendor).read_text())
    versions = {pin.name: Version(pin.version) for pin in pins}
    assert len(versions) == len(pins)
    for req in map(Requirement, _pyproject()["project"]["dependencies"]):
        if req.name in ("pydantic", "structlog"):
            assert versions[req.name] in req.specifier, (req, versions[req.name])
        else:  # from the release: pyudev, systemd-python
            assert req.name not in versions


def test_vendor_refuses_unpinned_or_unhashed_lines() -> None:
    vendor = _load("vendor")
    good = "a==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"
    assert [p.name for p in vendor.parse("# c\n" + good)] == ["a"]
    for bad in ("a==1.0\n", "a>=1.0 --hash=sha256:" + "0" * 64, "a==1 --hash=md5:00"):
        with pytest.raises(vendor.VendorError):
            vendor.parse(bad)
    with pytest.raises(vendor.VendorError, match="no pins"):
        vendor.parse("# nothing\n")


def test_vendor_cache_is_keyed_on_the_hash(tmp_path: Path) -> None:
    vendor = _load("vendor")
    data = b"a wheel"
    digest = hashlib.sha256(data).hexdigest()
    pin = vendor.Pin("a", "1.0", digest)
    assert vendor.cached(pin, tmp_path) is None
    (tmp_path / digest).mkdir()
    (tmp_path / digest / "a-1.0-py3-none-any.whl").write_bytes(data)
    assert vendor.cached(pin, tmp_path) == tmp_path / digest / "a-1.0-py3-none-any.whl"
    assert vendor.ensure([pin], tmp_path) == [tmp_path / digest / "a-1.0-py3-none-any.whl"]
    (tmp_path / digest / "a-1.0-py3-none-any.whl").write_bytes(b"tampered")
    assert vendor.cached(pin, tmp_path) is None


def _host_systemd() -> int:
    if shutil.which("systemctl") is None or shutil.which("systemd-analyze") is None:
        return 0
    out = subprocess.run(
        ["systemctl", "--version"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    match = re.match(r"systemd (\d+)", out)
    return int(match.group(1)) if match else 0


@pytest.mark.skipif(not 0 < _host_systemd() < 253, reason="needs a host with systemd < 253")
def test_systemd_before_253_parses_the_transformed_unit_cleanly(tmp_path: Path) -> None:
    """This host's own systemd (Debian 12: 252) rejects the untransformed lines."""
    unitfile = _load("unitfile")
    unit = _as_notify_reload(UNIT.read_text(encoding="utf-8"))
    unit = re.sub(r"^ExecStart=.*$", "ExecStart=/bin/true", unit, flags=re.M)
    unit = re.sub(r"^ProtectControlGroups=.*$", "ProtectControlGroups=private", unit, flags=re.M)

    def verify(text: str) -> str:
        path = tmp_path / "crashhp-unit-check.service"
        path.write_text(text, encoding="utf-8")
        return subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stderr

    assert "Failed to parse service type" in verify(unit)
    assert verify(unitfile.for_systemd(unit, _host_systemd())) == ""


def test_procps_only_when_the_unit_runs_kill() -> None:
    flavours = _load("flavours")
    assert flavours.needs_kill("[Service]\nExecReload=/bin/kill -HUP $MAINPID\n")
    assert flavours.needs_kill("[Service]\nExecReload=-/usr/bin/kill -s HUP $MAINPID\n")
    assert not flavours.needs_kill("[Service]\nType=notify-reload\n# /bin/kill\n")
    control = (DEBIAN / "control").read_text(encoding="utf-8")
    assert "\nDepends:\n procps,\n" in flavours.with_procps(control)


@pytest.mark.parametrize("name", ["trixie", "bookworm"])
def test_prepare_rewrites_a_build_tree_into_the_flavour(tmp_path: Path, name: str) -> None:
    flavours = _load("flavours")
    unitfile = _load("unitfile")
    flavour = flavours.FLAVOURS[name]
    shutil.copytree(DEBIAN, tmp_path / "debian")
    shutil.copytree(REPO / "systemd", tmp_path / "systemd")
    flavours.prepare(flavour, tmp_path)
    debian = tmp_path / "debian"
    settings = (debian / "flavour.mk").read_text(encoding="utf-8").splitlines()
    assert settings[0] == f"CRASHHP_SYSTEMD = {flavour.systemd}"
    control = (debian / "control").read_text(encoding="utf-8")
    unit = unitfile.for_systemd(UNIT.read_text(encoding="utf-8"), flavour.systemd)
    assert ("\n procps,\n" in control) == flavours.needs_kill(unit)
    copyright_text = (debian / "copyright").read_text(encoding="utf-8")
    overrides = (debian / "crashhp.lintian-overrides").read_text(encoding="utf-8")
    if flavour.vendor is None:
        assert settings == [f"CRASHHP_SYSTEMD = {flavour.systemd}"]
        assert not (debian / "vendor.txt").exists()
        assert "vendor" not in copyright_text + overrides
    else:
        assert settings[1] == "CRASHHP_VENDOR = /usr/lib/crashhp/vendor"
        assert (debian / "vendor.txt").read_bytes() == (REPO / flavour.vendor).read_bytes()
        assert "Files: usr/lib/crashhp/vendor/pydantic_core/*" in copyright_text
        assert "hardening-no-fortify-functions [usr/lib/crashhp/vendor/" in overrides
        first = (debian / "changelog").read_text(encoding="utf-8").partition("\n")[0]
        assert first.startswith(f"crashhp ({flavours.base_version()}~deb12u1) bookworm;")
