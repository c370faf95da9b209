"""The distributions' own hotplug reload rules ("peers"), and what masks them.

Fedora/RHEL kdump-utils, Debian/Ubuntu kdump-tools and openSUSE kdump each ship a udev
rule that reloads the crash kernel on CPU or memory hotplug. With crashhp running as
well, every needed reload happens twice (and the two may race into EBUSY). The
packages let an admin mask such a rule with a file of the same name in
/etc/udev/rules.d (a link to ``/usr/share/crashhp/udev-takeover/NAME``); this module
finds the peers' rules and tells which ones are still in force.

udev reads each rule file name once, from the first of its directories that has it:
/etc before /run before /usr/local/lib before /usr/lib (and /lib on split-/usr
systems). A same-named file higher up masks the one below, a link to /dev/null or a
file without rules masks it outright.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# udev's rule directories, highest precedence first.
UDEV_RULE_DIRS: tuple[Path, ...] = (
    Path("/etc/udev/rules.d"),
    Path("/run/udev/rules.d"),
    Path("/usr/local/lib/udev/rules.d"),
    Path("/usr/lib/udev/rules.d"),
    Path("/lib/udev/rules.d"),
)
TAKEOVER_DIR = Path("/usr/share/crashhp/udev-takeover")
TAKEOVER_MARKER = "crashhp-takeover:"
MAX_RULE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Peer:
    """A distribution package whose udev rule reloads the crash kernel on hotplug."""

    rule: str  # the rule file's name
    package: str
    distributions: str

    @property
    def takeover(self) -> Path:
        return TAKEOVER_DIR / self.rule


PEERS: tuple[Peer, ...] = (
    Peer("50-kdump-tools.rules", "kdump-tools", "Debian, Ubuntu"),
    Peer("98-kexec.rules", "kdump-utils", "Fedora, RHEL, CentOS"),
    # Written to /run/udev/rules.d by kdump's load script, removed on unload.
    Peer("70-kdump.rules", "kdump", "openSUSE, SLES"),
)


class PeerState(enum.StrEnum):
    ACTIVE = "active"  # the peer's rule is in force: it reloads on hotplug too
    REPLACED = "replaced"  # a local same-named file with rules is in force instead
    TAKEN_OVER = "taken-over"  # masked by crashhp's takeover override
    MASKED = "masked"  # masked by a link to /dev/null or a file without rules
    UNREADABLE = "unreadable"  # the file in force cannot be read (dangling link, EACCES)


@dataclass(frozen=True, slots=True)
class PeerRule:
    """One peer's rule as udev sees it."""

    peer: Peer
    state: PeerState
    effective: Path  # the file udev reads for this name
    shadowed: tuple[Path, ...] = ()  # same-named files it hides, highest precedence first
    # Whether the file in force looks at crash_hotplug (and so skips the reload when the
    # kernel updates the crash kernel itself); None when it has no rules.
    checks_crash_hotplug: bool | None = None

    @property
    def reloads(self) -> bool:
        """True when this rule may reload the crash kernel as well as crashhp."""
        return self.state in (PeerState.ACTIVE, PeerState.REPLACED)

    def describe(self) -> str:
        """One line for ``crashhp status``."""
        who = f"{self.peer.rule} ({self.peer.package}, {self.peer.distributions})"
        if self.state is PeerState.TAKEN_OVER:
            return f"{who}: taken over by crashhp ({self.effective})"
        if self.state is PeerState.MASKED:
            return f"{who}: masked by {self.effective}"
        if self.state is PeerState.UNREADABLE:
            return f"{who}: {self.effective} cannot be read; udev may ignore it or fail"
        where = "local replacement " if self.state is PeerState.REPLACED else ""
        even = "" if self.checks_crash_hotplug else ", even when the kernel updates it itself"
        return (
            f"{who}: {where}{self.effective} also reloads the crash kernel on hotplug{even}; "
            f"to let crashhp take over: ln -s {self.peer.takeover} /etc/udev/rules.d/"
        )


def default_rule_dirs(root: Path = Path("/")) -> list[Path]:
    """udev's rule directories under ``root`` (tests pass a temporary tree)."""
    return [root / d.relative_to("/") for d in UDEV_RULE_DIRS]


def find_peer_rules(rule_dirs: Sequence[Path], peers: Sequence[Peer] = PEERS) -> list[PeerRule]:
    """The peers' rules present in ``rule_dirs`` (highest precedence first), in
    ``peers`` order. A peer none of whose directories has its file is left out."""
    dirs = _distinct(rule_dirs)
    found: list[PeerRule] = []
    for peer in peers:
        files = [d / peer.rule for d in dirs if os.path.lexists(d / peer.rule)]
        if files:
            found.append(_classify(peer, files[0], tuple(files[1:])))
    return found


def _distinct(rule_dirs: Sequence[Path]) -> list[Path]:
    """Drop directories that are another one under a second name (/lib -> usr/lib)."""
    seen: set[str] = set()
    out: list[Path] = []
    for d in rule_dirs:
        real = os.path.realpath(d)
        if real not in seen:
            seen.add(real)
            out.append(d)
    return out


def _classify(peer: Peer, effective: Path, shadowed: tuple[Path, ...]) -> PeerRule:
    def rule(state: PeerState, checks: bool | None = None) -> PeerRule:
        return PeerRule(peer, state, effective, shadowed, checks)

    if effective.is_symlink():
        target = Path(os.path.realpath(effective))
        if target == Path("/dev/null"):
            return rule(PeerState.MASKED)
        if target.parent == TAKEOVER_DIR or Path(os.readlink(effective)).parent == TAKEOVER_DIR:
            return rule(PeerState.TAKEN_OVER)
    try:
        with effective.open("rb") as f:
            text = f.read(MAX_RULE_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return rule(PeerState.UNREADABLE)
    if TAKEOVER_MARKER in text:
        return rule(PeerState.TAKEN_OVER)
    lines = [ln.strip() for ln in text.splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    if not rules:
        return rule(PeerState.MASKED)
    checks = any("crash_hotplug" in ln for ln in rules)
    return rule(PeerState.REPLACED if shadowed else PeerState.ACTIVE, checks)
