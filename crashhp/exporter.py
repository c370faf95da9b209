"""The metrics textfile, fed from the engine's published snapshot (crashhp.messages.Snapshot).

The daemon writes it at every publish (a burst, a reload, a change of protection) and at
least every ``metrics.interval_s``, so that ``node_textfile_mtime_seconds`` shows a daemon
that stopped. A failed write is logged once per reason, never fatal: the metrics are for
the fleet, the crash kernel is what matters.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

from crashhp import __version__, metrics, reload
from crashhp.config import Config
from crashhp.messages import Snapshot
from crashhp.model import Verdict


def sample(snapshot: Snapshot, *, method: str, kernel: str) -> metrics.MetricsSample:
    """What the textfile says of ``snapshot``."""
    counters = snapshot.counters
    hotplug: dict[str, bool | None] = {}
    for subsystem, verdict in snapshot.crash_hotplug.items():
        if verdict == Verdict.KERNEL_UPDATES.value:
            hotplug[subsystem] = True
        elif verdict == Verdict.NEEDS_RELOAD.value:
            hotplug[subsystem] = False
        else:  # absent or unreadable: no sample
            hotplug[subsystem] = None
    return metrics.MetricsSample(
        version=__version__,
        kernel=kernel,
        method=method,
        sysfs_layout=snapshot.layout,
        protection=snapshot.protection,
        reloads=counters.reloads,
        reload_failures=counters.failed_reloads,
        bursts=dict(counters.bursts),
        events=counters.events,
        overflows=counters.overflows,
        unloaded_seconds=snapshot.unprotected_s,
        last_reload_duration_s=snapshot.last_reload_s,
        last_burst_to_protected_s=snapshot.last_burst_to_protected_s,
        crash_hotplug=hotplug,
    )


def method_name(config: Config) -> str:
    """The reload method in force: ``auto`` resolved to the tool found, or "none"."""
    try:
        return reload.resolve_method(config.reload).value
    except reload.NoReloadMethod:
        return "none"


class Exporter:
    """Writes the textfile when asked and says when it is next due."""

    def __init__(self, warn: Callable[..., Any], kernel: str | None = None) -> None:
        self._warn = warn
        self._kernel = kernel or platform.release()
        self._last_error: str | None = None
        self.due: float | None = None

    def write(self, snapshot: Snapshot, config: Config, now: float) -> None:
        target = metrics.textfile_target(config.metrics)
        if target is None:
            self.due = None
            return
        self.due = now + config.metrics.interval_s
        text = metrics.render(sample(snapshot, method=method_name(config), kernel=self._kernel))
        try:
            metrics.write_textfile(text, target)
        except OSError as exc:
            why = f"{target}: {exc.strerror or exc}"
            if why != self._last_error:
                self._warn("metrics_not_written", path=str(target), reason=why, text=why)
            self._last_error = why
        else:
            self._last_error = None
