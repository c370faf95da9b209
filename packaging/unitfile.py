"""The one crashhp.service in systemd/, made fit for an older systemd at package build time.

    python3 packaging/unitfile.py --systemd 252 systemd/crashhp.service > debian/crashhp.service

systemd/crashhp.service is written for the newest systemd crashhp targets (trixie's 257).
Debian 12 has systemd 252, which lacks `Type=notify-reload` (253) and `ReloadSignal=`
(253): there the unit becomes `Type=notify` with an `ExecReload=` that sends the reload
signal. The daemon's side is the same (it says RELOADING=1, then READY=1 once the new
config is in force, which 252 understands for Type=notify too), but `systemctl reload`
returns as soon as `kill` has sent the signal, before the config is in force.

A unit that already says `Type=notify` passes unchanged, apart from the settings below:
the transform works whichever type systemd/ says today. For systemd >= 253 it changes
nothing at all.

Settings values that a newer systemd added to existing keys are mapped to the closest
older value that is at least as strict where one exists (systemd 252 would otherwise
log "Failed to parse" and ignore the whole line, silently dropping that protection).
Keys that 252 does not know at all are not guessed at here: the bookworm install check
runs bookworm's own `systemd-analyze verify` on the result and fails on any warning.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

NOTIFY_RELOAD_SINCE = 253
# key -> (value added in a newer systemd -> (first version that parses it, older spelling)).
NEWER_VALUES: dict[str, dict[str, tuple[int, str]]] = {
    # 257: a private cgroup namespace as well; the read-only cgroupfs of `yes` remains.
    "ProtectControlGroups": {"private": (257, "yes"), "strict": (257, "yes")},
    # 257: /tmp not shared with JoinsNamespaceOf= units; `yes` is still a private /tmp.
    "PrivateTmp": {"disconnected": (257, "yes")},
    # 257: `self` is the old `yes` under a new name.
    "PrivateUsers": {"self": (257, "yes")},
}


class UnitError(ValueError):
    """The unit cannot be made to work on the requested systemd."""


def _service_lines(lines: list[str]) -> tuple[int, int]:
    """Start (the line after [Service]) and end (the next section or EOF) of [Service]."""
    try:
        start = lines.index("[Service]") + 1
    except ValueError:
        raise UnitError("no [Service] section") from None
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    return start, end


def _settings(lines: list[str], start: int, end: int) -> dict[str, list[int]]:
    """Key -> the indices of its lines in [Service] (comments and blank lines skipped)."""
    found: dict[str, list[int]] = {}
    for i in range(start, end):
        match = re.match(r"([A-Za-z]+)=", lines[i])
        if match:
            found.setdefault(match.group(1), []).append(i)
    return found


def for_systemd(unit: str, version: int) -> str:
    """The unit text for a systemd of this version."""
    lines = unit.split("\n")
    if version < NOTIFY_RELOAD_SINCE:
        lines = _without_notify_reload(lines)
    for i, line in enumerate(lines):
        key, sep, value = line.partition("=")
        newer = NEWER_VALUES.get(key, {}).get(value.strip()) if sep else None
        if newer is not None and version < newer[0]:
            lines[i] = f"{key}={newer[1]}"
    return "\n".join(lines)


def _without_notify_reload(lines: list[str]) -> list[str]:
    start, end = _service_lines(lines)
    settings = _settings(lines, start, end)
    types = [lines[i].partition("=")[2].strip() for i in settings.get("Type", [])]
    signal = "HUP"
    for i in settings.get("ReloadSignal", []):
        signal = lines[i].partition("=")[2].strip().removeprefix("SIG") or "HUP"
    if types and types[-1] == "notify-reload":
        last = settings["Type"][-1]
        lines[last] = "Type=notify"
        # An ExecReload= next to notify-reload runs after the signal there; it stays.
        if "ExecReload" not in settings:
            lines[last + 1 : last + 1] = [
                f"# systemd < {NOTIFY_RELOAD_SINCE} has no Type=notify-reload "
                "(packaging/unitfile.py):",
                "# `systemctl reload` returns once the signal is sent, before the new config",
                "# is in force; `systemctl status` says reloading until the daemon is READY.",
                f"ExecReload=/bin/kill -{signal} $MAINPID",
            ]
    elif types and types[-1] == "notify" and "ExecReload" not in settings:
        raise UnitError("Type=notify without ExecReload=: nothing would send the reload signal")
    # An unknown key to systemd < 253; its signal is in ExecReload= now.
    return [line for line in lines if not line.startswith("ReloadSignal=")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systemd", type=int, required=True, help="target systemd version")
    parser.add_argument("unit", type=Path)
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(for_systemd(args.unit.read_text(encoding="utf-8"), args.systemd))
    except UnitError as exc:
        print(f"unitfile: {args.unit}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
