"""sd_notify: the only module that imports systemd.daemon."""

from __future__ import annotations

import os
from typing import Protocol


class Notifier(Protocol):
    def notify(self, state: str) -> None: ...


class SystemdNotifier:
    """Sends to ``$NOTIFY_SOCKET`` through systemd-python; a no-op without it."""

    def __init__(self) -> None:
        from systemd import daemon  # the untyped binding stays behind this edge

        self._daemon = daemon

    def notify(self, state: str) -> None:
        self._daemon.notify(state)


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of ``WatchdogSec=`` when the watchdog is meant for this process, else None."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
