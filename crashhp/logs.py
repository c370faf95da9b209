"""structlog set-up: native journald fields under systemd, readable lines on a terminal.

The only module that imports ``systemd.journal``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from crashhp.config import LogFormat

IDENTIFIER = "crashhp"

# Fixed MESSAGE_IDs for the events an admin searches for (`journalctl MESSAGE_ID=...`).
# Never change one: admins' searches and the journal catalog rely on them.
MESSAGE_IDS: dict[str, str] = {
    "reload_done": "ca65ed645d1448f4a277b59b73296b0f",
    "reload_failed": "8c1940186d6f4f908732d893b950e474",
    "kernel_handles": "8915d88b7ad64158a78e715554761def",
    "unprotected": "f66ed305cf264ed29dacf7f75891b052",
    "recovered": "33b18b52718c4db9ae22026fae74ada7",
    "not_loaded": "11d8e2a0517a4f0faac455d082848d73",
    "config_rejected": "db8c5d6d3c34407d9f59b3de7c8acc0f",
    "direct_runner_unprivileged": "c51c494adb1a4d3ea9f660821664eb44",
}

PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}

JournalSend = Callable[..., Any]


def stderr_is_journal(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when systemd connected our stderr to the journal (``$JOURNAL_STREAM``)."""
    env = os.environ if environ is None else environ
    stream = env.get("JOURNAL_STREAM", "")
    dev, _, ino = stream.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError):
        return False


def resolve_format(fmt: LogFormat) -> LogFormat:
    if fmt is not LogFormat.AUTO:
        return fmt
    if stderr_is_journal():
        return LogFormat.JOURNAL
    return LogFormat.CONSOLE if sys.stderr.isatty() else LogFormat.JSON


def _journal_value(value: object) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _message(event_dict: EventDict) -> str:
    """The readable MESSAGE: the event's text, else its key=value pairs."""
    event = str(event_dict.get("event", ""))
    text = event_dict.get("text")
    if text:
        return f"{text}"
    pairs = " ".join(
        f"{k}={_journal_value(v)}"
        for k, v in event_dict.items()
        if k not in {"event", "level", "timestamp"}
    )
    return f"{event} {pairs}".strip()


def journal_fields(
    logger: WrappedLogger, name: str, event_dict: EventDict
) -> tuple[tuple[str], dict[str, str]]:
    """Final processor: the MESSAGE and the native journal fields, for JournalLogger."""
    event = str(event_dict.get("event", ""))
    level = str(event_dict.get("level", name))
    fields: dict[str, str] = {
        "PRIORITY": str(PRIORITY.get(level, 6)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "CRASHHP_EVENT": event,
    }
    if event in MESSAGE_IDS:
        fields["MESSAGE_ID"] = MESSAGE_IDS[event]
    for key, value in event_dict.items():
        if key in {"event", "level", "timestamp", "text"} or value is None:
            continue
        field = "".join(c if c.isalnum() else "_" for c in key.upper()).lstrip("_")
        if field and not field[0].isdigit():
            fields[field] = _journal_value(value)
    return (_message(event_dict),), fields


class JournalLogger:
    """The logger structlog hands each entry to: one ``journal.send`` per entry."""

    def __init__(self, send: JournalSend) -> None:
        self._send = send

    def msg(self, message: str, **fields: str) -> None:
        self._send(message, **fields)

    log = debug = info = warning = warn = error = err = critical = exception = fatal = msg


class JournalLoggerFactory:
    def __init__(self, send: JournalSend) -> None:
        self._logger = JournalLogger(send)

    def __call__(self, *args: Any) -> JournalLogger:
        return self._logger


def _add_message_id(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    message_id = MESSAGE_IDS.get(str(event_dict.get("event", "")))
    if message_id:
        event_dict.setdefault("message_id", message_id)
    return event_dict


def configure(
    fmt: LogFormat = LogFormat.AUTO,
    level: str = "info",
    *,
    send: JournalSend | None = None,
    stream: TextIO | None = None,
) -> LogFormat:
    """Configure structlog for the whole process; returns the format chosen."""
    chosen = resolve_format(fmt)
    shared: list[Any] = [structlog.processors.add_log_level]
    if chosen is LogFormat.JOURNAL:
        if send is None:
            from systemd import journal  # the untyped binding stays behind this edge

            send = journal.send
        processors = [*shared, structlog.processors.format_exc_info, journal_fields]
    elif chosen is LogFormat.JSON:
        processors = [
            *shared,
            _add_message_id,
            structlog.processors.format_exc_info,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        processors = [
            *shared,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=False),
        ]
    factory: Callable[..., Any] = (
        JournalLoggerFactory(send)
        if chosen is LogFormat.JOURNAL and send is not None
        else structlog.PrintLoggerFactory(stream or sys.stderr)
    )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    return chosen


def get_logger() -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(IDENTIFIER)
    return logger
