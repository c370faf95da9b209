"""crashhp.peers: which distribution hotplug rules are in force, on temporary trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from crashhp import peers
from crashhp.peers import PEERS, PeerState, default_rule_dirs, find_peer_rules

REPO = Path(__file__).resolve().parents[2]
TAKEOVER_SRC = REPO / "packaging" / "udev-takeover"

# Rules written for these tests (not the distributions' text): one that reloads on
# every event, one that first checks what the kernel says.
RELOADS = 'SUBSYSTEM=="memory", ACTION=="online", RUN+="/usr/sbin/reload-kdump"\n'
CHECKS = (
    'SUBSYSTEM=="memory", ATTRS{crash_hotplug}=="1", GOTO="end"\n'
    'SUBSYSTEM=="memory", ACTION=="online", RUN+="/usr/sbin/reload-kdump"\n'
    'LABEL="end"\n'
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for d in default_rule_dirs(tmp_path):
        d.mkdir(parents=True)
    return tmp_path


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _dirs(root: Path) -> dict[str, Path]:
    etc, run, local, usr, lib = default_rule_dirs(root)
    return {"etc": etc, "run": run, "local": local, "usr": usr, "lib": lib}


def test_default_rule_dirs_keep_udev_precedence() -> None:
    assert [str(d) for d in default_rule_dirs()] == [
        "/etc/udev/rules.d",
        "/run/udev/rules.d",
        "/usr/local/lib/udev/rules.d",
        "/usr/lib/udev/rules.d",
        "/lib/udev/rules.d",
    ]
    assert default_rule_dirs(Path("/x"))[0] == Path("/x/etc/udev/rules.d")


def test_no_peer_rules(root: Path) -> None:
    _write(_dirs(root)["usr"] / "60-crashhp.rules", RELOADS)
    assert find_peer_rules(default_rule_dirs(root)) == []


def test_missing_directories_are_fine(tmp_path: Path) -> None:
    assert find_peer_rules(default_rule_dirs(tmp_path / "nothing")) == []


def test_debian_rule_active_reloads_even_when_kernel_updates(root: Path) -> None:
    rule = _write(_dirs(root)["lib"] / "50-kdump-tools.rules", RELOADS)
    [found] = find_peer_rules(default_rule_dirs(root))
    assert found.peer.package == "kdump-tools"
    assert found.state is PeerState.ACTIVE
    assert found.effective == rule
    assert found.shadowed == ()
    assert found.checks_crash_hotplug is False
    assert found.reloads
    line = found.describe()
    assert "even when the kernel updates it itself" in line
    assert "ln -s /usr/share/crashhp/udev-takeover/50-kdump-tools.rules" in line


def test_fedora_rule_that_checks_crash_hotplug(root: Path) -> None:
    _write(_dirs(root)["usr"] / "98-kexec.rules", CHECKS)
    [found] = find_peer_rules(default_rule_dirs(root))
    assert (found.peer.package, found.state) == ("kdump-utils", PeerState.ACTIVE)
    assert found.checks_crash_hotplug is True
    assert "even when" not in found.describe()


def test_opensuse_runtime_rule_in_run(root: Path) -> None:
    rule = _write(_dirs(root)["run"] / "70-kdump.rules", CHECKS)
    [found] = find_peer_rules(default_rule_dirs(root))
    assert (found.peer.package, found.state, found.effective) == (
        "kdump",
        PeerState.ACTIVE,
        rule,
    )


def test_takeover_link_into_the_package_masks_the_rule(root: Path) -> None:
    d = _dirs(root)
    vendor = _write(d["usr"] / "50-kdump-tools.rules", RELOADS)
    link = d["etc"] / "50-kdump-tools.rules"
    link.symlink_to(peers.TAKEOVER_DIR / "50-kdump-tools.rules")  # dangling here: by path
    [found] = find_peer_rules(default_rule_dirs(root))
    assert found.state is PeerState.TAKEN_OVER
    assert (found.effective, found.shadowed) == (link, (vendor,))
    assert not found.reloads
    assert "taken over by crashhp" in found.describe()


@pytest.mark.parametrize("rule", sorted(p.name for p in TAKEOVER_SRC.glob("*.rules")))
def test_shipped_takeover_files_are_recognised_when_copied(root: Path, rule: str) -> None:
    d = _dirs(root)
    _write(d["usr"] / rule, RELOADS)
    _write(d["etc"] / rule, (TAKEOVER_SRC / rule).read_text(encoding="utf-8"))
    [found] = find_peer_rules(default_rule_dirs(root))
    assert found.peer.rule == rule
    assert found.state is PeerState.TAKEN_OVER


def test_shipped_takeover_files_cover_every_peer_and_hold_no_rules() -> None:
    shipped = {p.name: p.read_text(encoding="utf-8") for p in TAKEOVER_SRC.glob("*.rules")}
    assert set(shipped) == {p.rule for p in PEERS}
    for name, text in shipped.items():
        assert f"{peers.TAKEOVER_MARKER} {name}" in text
        assert all(not ln.strip() or ln.startswith("#") for ln in text.splitlines()), name


def test_dev_null_link_masks(root: Path) -> None:
    d = _dirs(root)
    _write(d["usr"] / "98-kexec.rules", RELOADS)
    (d["etc"] / "98-kexec.rules").symlink_to("/dev/null")
    [found] = find_peer_rules(default_rule_dirs(root))
    assert found.state is PeerState.MASKED
    assert not found.reloads


def test_comment_only_file_masks(root: Path) -> None:
    d = _dirs(root)
    _write(d["usr"] / "98-kexec.rules", RELOADS)
    _write(d["etc"] / "98-kexec.rules", "# no thanks\n\n")
    [found] = find_peer_rules(default_rule_dirs(root))
    assert (found.state, found.checks_crash_hotplug) == (PeerState.MASKED, None)


def test_local_copy_with_rules_replaces_and_still_reloads(root: Path) -> None:
    d = _dirs(root)
    vendor = _write(d["usr"] / "50-kdump-tools.rules", RELOADS)
    local = _write(d["etc"] / "50-kdump-tools.rules", CHECKS)
    [found] = find_peer_rules(default_rule_dirs(root))
    assert (found.state, found.effective, found.shadowed) == (
        PeerState.REPLACED,
        local,
        (vendor,),
    )
    assert found.reloads
    assert found.checks_crash_hotplug is True
    assert "local replacement" in found.describe()


def test_dangling_link_elsewhere_is_unreadable(root: Path) -> None:
    d = _dirs(root)
    (d["etc"] / "70-kdump.rules").symlink_to(root / "gone.rules")
    [found] = find_peer_rules(default_rule_dirs(root))
    assert found.state is PeerState.UNREADABLE
    assert not found.reloads


def test_lib_linked_to_usr_lib_counts_once(tmp_path: Path) -> None:
    """Merged /usr: /lib is a link to usr/lib, so the same file is not shadowing itself."""
    (tmp_path / "usr/lib/udev/rules.d").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    _write(tmp_path / "usr/lib/udev/rules.d/50-kdump-tools.rules", RELOADS)
    [found] = find_peer_rules(default_rule_dirs(tmp_path))
    assert found.state is PeerState.ACTIVE
    assert found.shadowed == ()


def test_result_follows_peer_order_and_precedence(root: Path) -> None:
    d = _dirs(root)
    for p in reversed(PEERS):
        _write(d["local"] / p.rule, RELOADS)
    high = _write(d["run"] / PEERS[1].rule, CHECKS)
    found = find_peer_rules(default_rule_dirs(root))
    assert [f.peer for f in found] == list(PEERS)
    assert found[1].effective == high
    assert found[1].state is PeerState.REPLACED
