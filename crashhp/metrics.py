"""Metrics for node_exporter's textfile collector: a pure renderer and one atomic write.

``render(sample)`` turns a frozen :class:`MetricsSample` into the Prometheus text format
(0.0.4: HELP and TYPE lines, base units, ``_total`` counters); ``write_textfile`` puts it
in place so that node_exporter never reads half a file. The daemon fills the sample from
its state; nothing here reads the system or the clock.

node_exporter reads ``*.prom`` files from one directory (Debian:
``/var/lib/prometheus/node-exporter``) at every scrape and exports each file's mtime as
``node_textfile_mtime_seconds``, which is how an alert sees a file that stopped changing.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from crashhp import config

# The daemon's protection states, in the order they are exported (one-hot).
PROTECTION_STATES = ("protected", "fadump", "not-loaded", "unprotected", "stale", "no-kexec")
TEXTFILE_MODE = 0o644
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True, slots=True)
class MetricsSample:
    """What the metrics file says, as of one moment. Counters count since the daemon started."""

    version: str  # crashhp's
    kernel: str  # the running kernel's release (uname -r)
    method: str  # the reload method in force (reload.method, resolved)
    sysfs_layout: str  # which kexec files the kernel has, e.g. "legacy" or "kexec-dir"
    protection: str  # one of PROTECTION_STATES
    reloads: int  # reload attempts that succeeded
    reload_failures: int  # reload attempts that failed
    bursts: Mapping[str, int]  # bursts by decision (the decision's reason string)
    events: int  # cpu/memory uevents received
    overflows: int  # netlink overflows (monitor rebuilt, sysfs re-read)
    unloaded_seconds: float  # cumulative seconds with no crash kernel loaded
    last_reload_duration_s: float | None  # None: no reload yet
    last_burst_to_protected_s: float | None  # last event of the last burst -> protected
    crash_hotplug: Mapping[str, bool | None]  # subsystem -> file reads 1; None: absent

    def __post_init__(self) -> None:
        if self.protection not in PROTECTION_STATES:
            raise ValueError(f"unknown protection state {self.protection!r}")
        counts = {
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "events": self.events,
            "overflows": self.overflows,
        }
        counts.update({f"bursts[{k!r}]": v for k, v in self.bursts.items()})
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a count (an int >= 0), not {value!r}")
        seconds = {
            "unloaded_seconds": self.unloaded_seconds,
            "last_reload_duration_s": self.last_reload_duration_s,
            "last_burst_to_protected_s": self.last_burst_to_protected_s,
        }
        for name, s in seconds.items():
            if s is not None and not (math.isfinite(s) and s >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, not {s!r}")


@dataclass(frozen=True, slots=True)
class _Family:
    name: str  # counters include _total, as in the exposition format's HELP/TYPE lines
    kind: str  # counter | gauge
    help: str
    samples: tuple[tuple[Mapping[str, str], float], ...]


def _families(s: MetricsSample) -> Iterator[_Family]:
    info = {
        "version": s.version,
        "kernel": s.kernel,
        "method": s.method,
        "sysfs_layout": s.sysfs_layout,
    }
    yield _Family(
        "crashhp_info",
        "gauge",
        "crashhp's version, the running kernel, the reload method and the kexec sysfs layout",
        ((info, 1),),
    )
    yield _Family(
        "crashhp_protection_state",
        "gauge",
        "1 for the daemon's current protection state, 0 for the others",
        tuple(({"state": st}, int(st == s.protection)) for st in PROTECTION_STATES),
    )
    for name, help_, value in (
        ("crashhp_reloads_total", "Crash kernel reloads that succeeded", s.reloads),
        ("crashhp_reload_failures_total", "Crash kernel reloads that failed", s.reload_failures),
        ("crashhp_events_total", "CPU and memory hotplug uevents received", s.events),
        (
            "crashhp_monitor_overflows_total",
            "Uevent socket overflows (monitor rebuilt, state re-read from sysfs)",
            s.overflows,
        ),
        (
            "crashhp_crash_kernel_unloaded_seconds_total",
            "Seconds with no crash kernel loaded while crashhp ran",
            s.unloaded_seconds,
        ),
    ):
        yield _Family(name, "counter", help_, (({}, value),))
    yield _Family(
        "crashhp_bursts_total",
        "counter",
        "Bursts of hotplug events, by what crashhp decided",
        tuple(({"decision": d}, n) for d, n in sorted(s.bursts.items())),
    )
    if s.last_reload_duration_s is not None:
        yield _Family(
            "crashhp_last_reload_duration_seconds",
            "gauge",
            "How long the last reload took",
            (({}, s.last_reload_duration_s),),
        )
    if s.last_burst_to_protected_s is not None:
        yield _Family(
            "crashhp_last_burst_to_protected_seconds",
            "gauge",
            "From the last event of the last burst until the crash kernel was current again",
            (({}, s.last_burst_to_protected_s),),
        )
    hotplug = sorted((sub, v) for sub, v in s.crash_hotplug.items() if v is not None)
    yield _Family(
        "crashhp_crash_hotplug",
        "gauge",
        "/sys/devices/system/<subsystem>/crash_hotplug: 1 = the kernel updates the crash "
        "kernel's header itself",
        tuple(({"subsystem": sub}, int(v)) for sub, v in hotplug),
    )


def render(sample: MetricsSample) -> str:
    """The Prometheus text format (version 0.0.4) for ``sample``."""
    lines: list[str] = []
    for fam in _families(sample):
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in fam.samples:
            lines.append(f"{fam.name}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    for name in labels:
        if not _LABEL_NAME.fullmatch(name):
            raise ValueError(f"invalid label name {name!r}")
    inner = ",".join(f'{k}="{_escape_value(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape_value(text: str) -> str:
    return text.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))  # shortest exact form: 0.1 stays 0.1


def write_textfile(text: str, path: Path) -> None:
    """Replace ``path`` with ``text`` atomically: a temp file in the same directory, written,
    fsynced and mode 0644, then renamed over it. Raises OSError; leaves no temp file behind.

    The temp name starts with a dot and does not end in ``.prom``, so node_exporter skips it.
    """
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp_name = f".{path.name}.{os.getpid()}.tmp"
        tmp_fd = os.open(
            tmp_name,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            TEXTFILE_MODE,
            dir_fd=fd,
        )
        try:
            try:
                os.fchmod(tmp_fd, TEXTFILE_MODE)  # whatever the umask
                data = text.encode("utf-8")
                view = memoryview(data)
                while view:
                    view = view[os.write(tmp_fd, view) :]
                os.fsync(tmp_fd)
            finally:
                os.close(tmp_fd)
            os.replace(tmp_name, path.name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=fd)
            raise
        with contextlib.suppress(OSError):  # the rename on disk; not all file systems allow
            os.fsync(fd)
    finally:
        os.close(fd)


def textfile_target(
    settings: config.Metrics, is_dir: Callable[[Path], bool] = Path.is_dir
) -> Path | None:
    """Where to write the metrics, or None: ``enabled = "auto"`` writes only into a
    directory that exists (node_exporter's package creates it; crashhp never does)."""
    path = Path(settings.textfile)
    if settings.enabled is config.MetricsEnabled.NO:
        return None
    if settings.enabled is config.MetricsEnabled.AUTO and not is_dir(path.parent):
        return None
    return path
