"""The packaging's shipped files agree with the code: config file, catalog, man pages,
versions and dependencies. The package builds themselves run in `make packages`."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
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
