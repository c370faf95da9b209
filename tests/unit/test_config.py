"""Config loading: layering, provenance, and one clear line per bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crashhp.config import (
    Config,
    ConfigError,
    Metrics,
    MetricsEnabled,
    ReloadMethod,
    Runner,
    flatten,
    load_config,
)
from crashhp.model import Policy


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def error(path: Path | None = None, etc: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, etc=etc or Path("/nonexistent"))
    text = str(info.value)
    assert "\n" not in text
    return text


def test_defaults_without_files(tmp_path: Path) -> None:
    loaded = load_config(etc=tmp_path)
    assert loaded.config == Config()
    assert loaded.files == ()
    assert loaded.config.coalesce.quiet_ms == 500
    assert loaded.config.coalesce.max_delay_ms == 5000
    assert loaded.config.reload.timeout_s == 120
    assert loaded.source_of("policy") == "(defaults)"


def test_layers_in_order_with_provenance(tmp_path: Path) -> None:
    main = write(tmp_path / "crashhp.toml", 'policy = "always"\n[coalesce]\nquiet_ms = 100\n')
    d10 = write(tmp_path / "crashhp.d/10-a.toml", "[coalesce]\nquiet_ms = 200\n")
    d20 = write(tmp_path / "crashhp.d/20-b.toml", '[reload]\nmethod = "kdump-config"\n')
    write(tmp_path / "crashhp.d/30-ignored.conf", "this is not toml")
    loaded = load_config(etc=tmp_path)
    assert loaded.files == (main, d10, d20)
    assert loaded.config.policy is Policy.ALWAYS
    assert loaded.config.coalesce.quiet_ms == 200
    assert loaded.config.coalesce.max_delay_ms == 5000
    assert loaded.config.reload.method is ReloadMethod.KDUMP_CONFIG
    assert loaded.source_of("policy") == str(main)
    assert loaded.source_of("coalesce.quiet_ms") == str(d10)
    assert loaded.source_of("reload.method") == str(d20)


def test_cross_field_rule_is_checked_after_merging(tmp_path: Path) -> None:
    write(tmp_path / "crashhp.toml", '[reload]\nmethod = "command"\n')
    write(tmp_path / "crashhp.d/50-cmd.toml", '[reload]\ncommand = ["/usr/bin/true"]\n')
    assert load_config(etc=tmp_path).config.reload.command == ("/usr/bin/true",)


def test_explicit_file_replaces_layering(tmp_path: Path) -> None:
    write(tmp_path / "crashhp.toml", 'policy = "never"\n')
    other = write(tmp_path / "trial.toml", 'policy = "always"\n')
    loaded = load_config(other, etc=tmp_path)
    assert loaded.files == (other,)
    assert loaded.config.policy is Policy.ALWAYS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('policy = "sometimes"\n', "policy: Input should be 'auto', 'always' or 'never'"),
        ("[reload]\ncomand = []\n", "reload.comand: unknown key"),
        ("surprise = 1\n", "surprise: unknown key"),
        ("[coalesce]\nquiet_ms = -1\n", "coalesce.quiet_ms: Input should be greater than or equal"),
        ('[coalesce]\nquiet_ms = "fast"\n', "coalesce.quiet_ms: Input should be a valid integer"),
        ("[coalesce]\nquiet_ms = 9000\n", "coalesce.max_delay_ms: must be >= coalesce.quiet_ms"),
        ('[reload]\nmethod = "command"\n', 'reload.command: method = "command" needs a command'),
        ('[reload]\ncommand = ["kdumpctl"]\n', "reload.command: Value error, the program must be"),
        ("[reload]\ntimeout_s = 0\n", "reload.timeout_s: Input should be greater than 0"),
        ('[events]\nsource = "carrier-pigeon"\n', "events.source: Input should be 'udev' or"),
        ('[log]\nlevel = "loud"\n', "log.level: Input should be"),
        ("coalesce = 3\n", "coalesce: Input should be a valid dictionary"),
        ('[reload]\nrunner = "cron"\n', "reload.runner: Input should be 'auto', 'transient' or"),
        ("[metrics]\nenabled = true\n", "metrics.enabled: Input should be 'auto', 'yes' or 'no'"),
        ('[metrics]\ntextfile = "crashhp.prom"\n', "metrics.textfile: Value error, must be an"),
        ('[metrics]\ntextfile = "/tmp/crashhp.txt"\n', "metrics.textfile: Value error, must be"),
        ("[metrics]\ninterval_s = 0.5\n", "metrics.interval_s: Input should be greater than or"),
        ("[coalesce\n", "invalid TOML: "),
        ("policy = \n", "invalid TOML: "),
    ],
)
def test_bad_values_name_file_key_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    message = error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_runner_and_metrics_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.toml",
        '[reload]\nrunner = "direct"\n[metrics]\nenabled = "yes"\n'
        'textfile = "/run/m/crashhp.prom"\ninterval_s = 10\n',
    )
    config = load_config(path).config
    assert config.reload.runner is Runner.DIRECT
    assert config.metrics == Metrics(
        enabled=MetricsEnabled.YES, textfile="/run/m/crashhp.prom", interval_s=10.0
    )
    assert Config().reload.runner is Runner.AUTO
    assert Config().metrics.textfile == "/var/lib/prometheus/node-exporter/crashhp.prom"


def test_error_in_a_dropin_names_the_dropin(tmp_path: Path) -> None:
    write(tmp_path / "crashhp.toml", 'policy = "auto"\n')
    bad = write(tmp_path / "crashhp.d/10-bad.toml", "[reload]\nretries = -2\n")
    assert error(etc=tmp_path).startswith(f"{bad}: reload.retries: ")


def test_not_utf8_missing_and_directory(tmp_path: Path) -> None:
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'policy = "\xff"\n')
    assert "not UTF-8" in error(binary)
    assert error(tmp_path / "missing.toml").endswith("no such file")
    assert error(tmp_path).endswith("not a regular file")


def test_huge_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "huge.toml", "# padding\n" * 200_000)
    assert "file too large" in error(path)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "empty.toml", "")).config == Config()


def test_world_writable_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "open.toml", 'policy = "auto"\n', mode=0o666)
    assert error(path) == f"{path}: file {path} is writable by everyone"


def test_symlink_to_world_writable_file_is_refused(tmp_path: Path) -> None:
    target = write(tmp_path / "target/open.toml", 'policy = "auto"\n', mode=0o666)
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    assert "writable by everyone" in error(link)


def test_writable_dropin_directory_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "crashhp.d/10-a.toml", 'policy = "auto"\n')
    (tmp_path / "crashhp.d").chmod(0o777)
    assert "crashhp.d is writable by everyone" in error(etc=tmp_path)


def test_writable_parent_directory_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "open/c.toml", 'policy = "auto"\n')
    (tmp_path / "open").chmod(0o777)
    assert "writable by everyone" in error(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "theirs.toml", 'policy = "auto"\n')
    os.chown(path, 12345, 12345)
    assert "owned by uid 12345, not root" in error(path)


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def test_every_ancestor_is_checked_not_only_the_parent(tmp_path: Path) -> None:
    path = write(tmp_path / "open/a/b/c.toml", 'policy = "auto"\n')
    (tmp_path / "open").chmod(0o777)
    assert error(path) == f"{path}: directory {tmp_path / 'open'} is writable by everyone"


@ROOT_ONLY
def test_ancestor_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "theirs/a/c.toml", 'policy = "auto"\n')
    os.chown(tmp_path / "theirs", 12345, 0)
    assert error(path) == (
        f"{path}: directory {tmp_path / 'theirs'} is owned by uid 12345, not root"
    )


@ROOT_ONLY
def test_group_write_is_judged_by_the_group_not_the_owner(tmp_path: Path) -> None:
    path = write(tmp_path / "g.toml", 'policy = "always"\n', mode=0o664)
    os.chown(path, 0, 12345)  # root's file, but group 12345 may write it
    assert error(path) == f"{path}: file {path} is writable by group 12345"
    os.chown(path, 0, 0)  # group root: only root is in it
    assert load_config(path).config.policy is Policy.ALWAYS
    (tmp_path / "gdir").mkdir()
    (tmp_path / "gdir").chmod(0o775)
    os.chown(tmp_path / "gdir", 0, 12345)
    inner = write(tmp_path / "gdir/c.toml", 'policy = "auto"\n')
    assert error(inner) == f"{inner}: directory {tmp_path / 'gdir'} is writable by group 12345"


def test_sticky_world_writable_directory_is_passed_through(tmp_path: Path) -> None:
    # /tmp's case: others may add entries, but not replace ours; ours are checked.
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    path = write(sticky / "mine/c.toml", 'policy = "never"\n')
    assert load_config(path).config.policy is Policy.NEVER


@ROOT_ONLY
def test_someone_elses_symlink_in_a_sticky_directory_is_refused(tmp_path: Path) -> None:
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    good = write(tmp_path / "good.toml", 'policy = "never"\n')
    link = sticky / "planted.toml"
    link.symlink_to(good)
    os.lchown(link, 12345, 12345)
    assert error(link) == f"{link}: symbolic link {link} is owned by uid 12345, not root"


def test_symlinks_are_followed_hop_by_hop_and_the_target_checked(tmp_path: Path) -> None:
    good = write(tmp_path / "real/dir/good.toml", 'policy = "never"\n')
    (tmp_path / "alias").symlink_to("real/dir")  # a relative link to a directory
    (tmp_path / "link.toml").symlink_to(tmp_path / "alias" / "good.toml")
    assert load_config(tmp_path / "link.toml").config.policy is Policy.NEVER
    (tmp_path / "real").chmod(0o777)  # the target's ancestors count, not the link's
    assert error(tmp_path / "link.toml") == (
        f"{tmp_path / 'link.toml'}: directory {tmp_path / 'real'} is writable by everyone"
    )
    (tmp_path / "real").chmod(0o755)
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    assert error(loop).endswith("too many levels of symbolic links")
    assert good.exists()


def test_a_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo, 0o644)
    assert error(fifo) == f"{fifo}: not a regular file"  # would block if it were opened


def test_dropin_directory_behind_a_symlink_is_listed_after_its_check(tmp_path: Path) -> None:
    write(tmp_path / "shared/dropins/10-a.toml", 'policy = "never"\n')
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "crashhp.d").symlink_to(tmp_path / "shared/dropins")
    assert load_config(etc=etc).config.policy is Policy.NEVER
    (tmp_path / "shared").chmod(0o777)
    assert "shared is writable by everyone" in error(etc=etc)


def test_the_descriptor_checked_is_the_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker who could swap the file between the check and the read (the old
    stat-then-reopen-by-path window) gains nothing: the content read is the checked one."""
    path = write(tmp_path / "c.toml", 'policy = "never"\n')
    checked_inode = path.stat().st_ino
    real_fstat = os.fstat
    swapped: list[bool] = []

    def fstat_then_swap(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if st.st_ino == checked_inode and not swapped:
            evil = write(tmp_path / "evil.toml", 'policy = "always"\n', mode=0o666)
            evil.replace(path)  # the path now names a world-writable file
            swapped.append(True)
        return st

    monkeypatch.setattr(os, "fstat", fstat_then_swap)
    assert load_config(path).config.policy is Policy.NEVER
    assert swapped
    monkeypatch.undo()
    assert "writable by everyone" in error(path)  # and the next load sees the swap


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValueError, match="frozen"):
        setattr(config, "policy", Policy.NEVER)  # noqa: B010


def test_flatten_lists_every_key() -> None:
    flat = flatten(Config())
    assert flat["policy"] == "auto"
    assert flat["reload.command"] == []
    assert flat["events.source"] == "udev"
    assert set(flat) >= {
        "coalesce.quiet_ms",
        "coalesce.max_delay_ms",
        "reload.retries",
        "log.level",
    }
