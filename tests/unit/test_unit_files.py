"""systemd/: the shipped unit and the least-privilege drop-in, as systemd reads them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "crashhp.service"
LEAST = REPO / "systemd" / "crashhp.service.d" / "least-privilege.conf"
# Measured in the trixie guest (systemd 257): 3.6 shipped, 1.4 with the drop-in. This
# host's offline systemd-analyze (Debian 12: 252) scores a little differently.
LEAST_PRIVILEGE_MAX = 2.0


def _settings(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def _exposure(root: Path) -> float:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed")
    proc = subprocess.run(
        [analyze, "security", "--offline=true", f"--root={root}", "crashhp.service"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "PATH": "/usr/bin:/bin"},
    )
    match = re.search(r"Overall exposure level for crashhp\.service: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


def _root(tmp_path: Path, *, dropin: bool) -> Path:
    units = tmp_path / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units / UNIT.name)
    if dropin:
        (units / "crashhp.service.d").mkdir()
        shutil.copy(LEAST, units / "crashhp.service.d" / LEAST.name)
    return tmp_path


def test_least_privilege_dropin_scores_at_most_2(tmp_path: Path) -> None:
    shipped = _exposure(_root(tmp_path / "shipped", dropin=False))
    least = _exposure(_root(tmp_path / "least", dropin=True))
    assert least <= LEAST_PRIVILEGE_MAX, least
    assert least < shipped - 1.5, (least, shipped)


def test_least_privilege_dropin_keeps_only_net_admin() -> None:
    caps = [v for k, v in _settings(LEAST) if k == "CapabilityBoundingSet"]
    assert caps == ["", "CAP_NET_ADMIN"]  # reset what the unit grants, then one capability
    assert ("ReadWritePaths", "") in _settings(LEAST)  # the reload tools' paths are gone


def test_unit_uses_notify_reload_without_exec_reload() -> None:
    settings = dict(_settings(UNIT))
    assert settings["Type"] == "notify-reload"
    assert settings["NotifyAccess"] == "main"
    # An ExecReload= next to notify-reload would send a second SIGHUP; the package build
    # for systemd < 253 adds `ExecReload=/bin/kill -HUP $MAINPID` with Type=notify.
    assert "ExecReload" not in settings
