"""Log output: native journald fields through an injected send, JSON lines, console."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from crashhp import logs
from crashhp.config import LogFormat


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_journal_fields() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    logs.configure(LogFormat.JOURNAL, "info", send=lambda m, **f: sent.append((m, f)))
    log = logs.get_logger()
    log.info("reload_done", text="crash kernel reloaded (command, 812 ms)", duration_ms=812.4)
    log.error("unprotected", text="no crash kernel", reason="kdumpctl exited with status 1")
    log.info(
        "burst",
        events=1000,
        subsystems=["cpu", "memory"],
        reload_ms=None,
        verdicts={"memory": "needs-reload", "cpu": "kernel-updates"},
    )
    log.debug("uevents", count=3)  # below the level: dropped
    assert len(sent) == 3
    message, fields = sent[0]
    assert message == "crash kernel reloaded (command, 812 ms)"
    assert fields["MESSAGE_ID"] == "ca65ed645d1448f4a277b59b73296b0f"
    assert fields["PRIORITY"] == "6"
    assert fields["SYSLOG_IDENTIFIER"] == "crashhp"
    assert fields["CRASHHP_EVENT"] == "reload_done"
    assert fields["DURATION_MS"] == "812.4"
    assert sent[1][1]["PRIORITY"] == "3"
    assert sent[1][1]["MESSAGE_ID"] == "f66ed305cf264ed29dacf7f75891b052"
    message, fields = sent[2]
    assert message.startswith("burst events=1000 subsystems=cpu,memory reload_ms=None")
    assert fields["SUBSYSTEMS"] == "cpu,memory"
    assert json.loads(fields["VERDICTS"]) == {"cpu": "kernel-updates", "memory": "needs-reload"}
    assert "MESSAGE_ID" not in fields
    assert "RELOAD_MS" not in fields  # None values are not sent


def test_every_message_id_is_unique_and_well_formed() -> None:
    ids = list(logs.MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_json_lines() -> None:
    out = io.StringIO()
    logs.configure(LogFormat.JSON, "debug", stream=out)
    logs.get_logger().warning("kernel_handles", events=2)
    record = json.loads(out.getvalue())
    assert record["event"] == "kernel_handles"
    assert record["level"] == "warning"
    assert record["message_id"] == logs.MESSAGE_IDS["kernel_handles"]
    assert record["events"] == 2


def test_console_lines() -> None:
    out = io.StringIO()
    logs.configure(LogFormat.CONSOLE, "info", stream=out)
    logs.get_logger().info("not_loaded", events=1)
    line = out.getvalue()
    assert "not_loaded" in line
    assert "events=1" in line


def test_auto_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert logs.resolve_format(LogFormat.JSON) is LogFormat.JSON
    # stderr of a test run is neither a terminal nor the journal
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not logs.stderr_is_journal()


def test_exceptions_keep_their_traceback() -> None:
    out = io.StringIO()
    logs.configure(LogFormat.JSON, "info", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logs.get_logger().exception("daemon_crashed")
    record = json.loads(out.getvalue())
    assert "RuntimeError: boom" in record["exception"]
    sent: list[dict[str, Any]] = []
    logs.configure(LogFormat.JOURNAL, "info", send=lambda m, **f: sent.append(f))
    try:
        raise RuntimeError("bang")
    except RuntimeError:
        logs.get_logger().exception("daemon_crashed")
    assert "RuntimeError: bang" in sent[0]["EXCEPTION"]
