"""The metrics textfile: Prometheus' own parser reads what render() writes."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from crashhp.config import Metrics, MetricsEnabled
from crashhp.metrics import (
    PROTECTION_STATES,
    MetricsSample,
    render,
    textfile_target,
    write_textfile,
)

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "docs" / "crashhp-alerts.yml"

SAMPLE = MetricsSample(
    version="0.1.0",
    kernel="6.12.48+deb13-amd64",
    method="kdump-config",
    sysfs_layout="legacy",
    protection="protected",
    reloads=3,
    reload_failures=1,
    bursts={"kernel_says_reload": 3, "kernel_handles": 2},
    events=42,
    overflows=0,
    unloaded_seconds=2.75,
    last_reload_duration_s=2.41,
    last_burst_to_protected_s=3.9,
    crash_hotplug={"cpu": False, "memory": True},
)


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            assert isinstance(s, Sample)
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_parser_reads_every_family_with_its_type() -> None:
    fams = families(render(SAMPLE))
    assert {name: f.type for name, f in fams.items()} == {
        "crashhp_info": "gauge",
        "crashhp_protection_state": "gauge",
        "crashhp_reloads": "counter",
        "crashhp_reload_failures": "counter",
        "crashhp_events": "counter",
        "crashhp_monitor_overflows": "counter",
        "crashhp_crash_kernel_unloaded_seconds": "counter",
        "crashhp_bursts": "counter",
        "crashhp_last_reload_duration_seconds": "gauge",
        "crashhp_last_burst_to_protected_seconds": "gauge",
        "crashhp_crash_hotplug": "gauge",
    }
    assert all(f.documentation for f in fams.values())


def test_values_and_labels() -> None:
    got = samples(render(SAMPLE))
    info = (
        ("kernel", "6.12.48+deb13-amd64"),
        ("method", "kdump-config"),
        ("sysfs_layout", "legacy"),
        ("version", "0.1.0"),
    )
    assert got[("crashhp_info", info)] == 1
    assert got[("crashhp_reloads_total", ())] == 3
    assert got[("crashhp_reload_failures_total", ())] == 1
    assert got[("crashhp_events_total", ())] == 42
    assert got[("crashhp_monitor_overflows_total", ())] == 0
    assert got[("crashhp_crash_kernel_unloaded_seconds_total", ())] == 2.75
    assert got[("crashhp_bursts_total", (("decision", "kernel_handles"),))] == 2
    assert got[("crashhp_bursts_total", (("decision", "kernel_says_reload"),))] == 3
    assert got[("crashhp_last_reload_duration_seconds", ())] == 2.41
    assert got[("crashhp_last_burst_to_protected_seconds", ())] == 3.9
    assert got[("crashhp_crash_hotplug", (("subsystem", "cpu"),))] == 0
    assert got[("crashhp_crash_hotplug", (("subsystem", "memory"),))] == 1


@pytest.mark.parametrize("state", PROTECTION_STATES)
def test_protection_state_is_one_hot(state: str) -> None:
    got = samples(render(dataclasses.replace(SAMPLE, protection=state)))
    shown = {
        dict(labels)["state"]: v
        for (name, labels), v in got.items()
        if name == "crashhp_protection_state"
    }
    assert shown == {s: (1 if s == state else 0) for s in PROTECTION_STATES}


def test_unknown_values_are_left_out_not_invented() -> None:
    text = render(
        dataclasses.replace(
            SAMPLE,
            last_reload_duration_s=None,
            last_burst_to_protected_s=None,
            crash_hotplug={"cpu": None, "memory": None},
            bursts={},
        )
    )
    names = {name for name, _ in samples(text)}
    assert "crashhp_last_reload_duration_seconds" not in names
    assert "crashhp_last_burst_to_protected_seconds" not in names
    assert "crashhp_crash_hotplug" not in names
    assert not any(n.startswith("crashhp_bursts") for n in names)
    assert "crashhp_reloads_total" in names


def test_help_and_type_precede_each_family_and_names_are_valid() -> None:
    text = render(SAMPLE)
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            continue
        if line.startswith("# TYPE "):
            assert line.split()[2] == current, line
            continue
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        assert name, line
        assert name.group(0) == current, line
    assert text.endswith("\n")
    assert "\n\n" not in text


def test_label_values_are_escaped() -> None:
    odd = 'v1 "quoted" back\\slash\nnewline'
    got = samples(render(dataclasses.replace(SAMPLE, version=odd)))
    [info] = [dict(labels) for (name, labels) in got if name == "crashhp_info"]
    assert info["version"] == odd


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"protection": "fine"}, "unknown protection state"),
        ({"reloads": -1}, "reloads must be a count"),
        ({"events": True}, "events must be a count"),
        ({"bursts": {"x": 1.5}}, "bursts['x'] must be a count"),
        ({"unloaded_seconds": math.nan}, "unloaded_seconds must be a finite"),
        ({"last_reload_duration_s": -0.1}, "last_reload_duration_s must be a finite"),
        ({"last_burst_to_protected_s": math.inf}, "last_burst_to_protected_s must be"),
    ],
)
def test_nonsense_samples_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(SAMPLE, **change)


# ---- the atomic write ------------------------------------------------------------------


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_077")
def test_write_textfile_is_0644_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "crashhp.prom"
    write_textfile(render(SAMPLE), target)
    assert target.read_text() == render(SAMPLE)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["crashhp.prom"]


def test_write_textfile_replaces_by_rename(tmp_path: Path) -> None:
    target = tmp_path / "crashhp.prom"
    target.write_text("old\n")
    with target.open() as reader:  # node_exporter reading the old file meanwhile
        write_textfile("new\n", target)
        assert reader.read() == "old\n"
    assert target.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["crashhp.prom"]


def test_write_textfile_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "crashhp.prom"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_textfile("bad \udcff\n", target)
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["crashhp.prom"]
    with pytest.raises(FileNotFoundError):
        write_textfile("x\n", tmp_path / "missing" / "crashhp.prom")


def test_textfile_target(tmp_path: Path) -> None:
    path = str(tmp_path / "crashhp.prom")
    missing = str(tmp_path / "nope" / "crashhp.prom")
    assert textfile_target(Metrics(textfile=path)) == Path(path)
    assert textfile_target(Metrics(textfile=missing)) is None
    assert textfile_target(Metrics(textfile=missing, enabled=MetricsEnabled.YES)) == Path(missing)
    assert textfile_target(Metrics(textfile=path, enabled=MetricsEnabled.NO)) is None


# ---- the shipped alert rules -------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(doc) == {"groups"}, doc.keys()
    rules = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules"}, group.keys()
        assert isinstance(group["name"], str)
        rules += group["rules"]
    return rules


def test_alert_rules_have_prometheus_rule_structure() -> None:
    rules = _rules()
    assert rules
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), rule
        assert isinstance(rule["expr"], str), rule
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule
        assert {"summary", "description"} <= set(rule["annotations"]), rule
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule


def test_alert_rules_use_only_metrics_that_exist() -> None:
    exported = {name for name, _ in samples(render(SAMPLE))} | {"node_textfile_mtime_seconds"}
    states = set(PROTECTION_STATES)
    by_name = {r["alert"]: r["expr"] for r in _rules()}
    for name, expr in by_name.items():
        used = set(re.findall(r"\b(crashhp_[a-z_]+|node_[a-z_]+)\b", expr))
        assert used, name
        assert used <= exported, (name, used - exported)
        for state in re.findall(r'state=~?"([^"]+)"', expr):
            assert set(state.split("|")) <= states, (name, state)
    # What issue 13 asks for: UNPROTECTED, STALE, and a file nobody rewrites any more.
    exprs = " ".join(by_name.values())
    assert "unprotected" in exprs
    assert "stale" in exprs
    assert "node_textfile_mtime_seconds" in exprs
