"""The metrics textfile follows a real burst: the real daemon on real netlink (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.nshost import FakeHost, wait_until

pytestmark = pytest.mark.netlink


def read_metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the textfile, parsed by Prometheus' own text-format parser."""
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_metrics_follow_a_real_burst(host: FakeHost, tmp_path: Path) -> None:
    textfile = tmp_path / "node-exporter" / "crashhp.prom"
    textfile.parent.mkdir()
    daemon = host.start_daemon(
        {"metrics": {"enabled": "yes", "textfile": str(textfile), "interval_s": 1}}
    )
    wait_until(textfile.exists, 5, "the textfile at start")
    before = read_metrics(textfile)
    assert before[("crashhp_reloads_total", ())] == 0
    assert before[("crashhp_events_total", ())] == 0
    assert before[("crashhp_protection_state", (("state", "protected"),))] == 1
    info = [k for k in before if k[0] == "crashhp_info"]
    assert len(info) == 1
    assert ("method", "command") in info[0][1]

    daemon.send_burst(200, subsystems=("cpu", "memory"))
    host.recorder.wait_calls(1)
    daemon.logs.wait_for("reload_done")

    def settled() -> bool:
        return read_metrics(textfile).get(("crashhp_reloads_total", ())) == 1

    wait_until(settled, 5, "crashhp_reloads_total = 1 after the burst")
    after = read_metrics(textfile)
    assert after[("crashhp_events_total", ())] == 200
    assert after[("crashhp_reload_failures_total", ())] == 0
    bursts = {k[1]: v for k, v in after.items() if k[0] == "crashhp_bursts_total"}
    assert bursts == {(("decision", "kernel_says_reload"),): 1}, bursts
    assert after[("crashhp_last_reload_duration_seconds", ())] > 0
    assert after[("crashhp_last_burst_to_protected_seconds", ())] > 0
    assert after[("crashhp_crash_hotplug", (("subsystem", "cpu"),))] == 0
    assert after[("crashhp_protection_state", (("state", "protected"),))] == 1

    # interval_s = 1: the file is rewritten while nothing happens (node_textfile_mtime).
    mtime = textfile.stat().st_mtime
    wait_until(lambda: textfile.stat().st_mtime > mtime, 5, "a periodic rewrite")
    assert not list(textfile.parent.glob(".*")), "a temp file was left behind"
