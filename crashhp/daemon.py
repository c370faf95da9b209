"""The service: one thread, one selector loop.

The loop owns the uevent monitor's fd, a signal wake-up fd, the pidfd of a running
reload command, and the next deadline (coalescing, settle, retry, command timeout,
watchdog). Events only mark subsystems dirty; every decision re-reads sysfs.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import gc
import json
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crashhp import kernel, logs, process, reload
from crashhp.coalesce import Coalescer
from crashhp.config import Config, ConfigError, LoadedConfig
from crashhp.decision import Action, Decision, Reason, decide
from crashhp.lock import ReloadLock
from crashhp.logs import get_logger
from crashhp.model import Burst, KernelState, Policy, Subsystem, Verdict
from crashhp.notify import Notifier, watchdog_interval_s
from crashhp.uevents import MonitorOverflow, PyudevSource, Uevent, UeventSource

DRAIN_LIMIT = 4096  # events per loop turn, so timers and signals are never starved
OLD_SOURCE_DRAINS = 64  # a replaced monitor is read this many times DRAIN_LIMIT at most
# UNPROTECTED with no retry left: how often to look whether someone else loaded one.
UNPROTECTED_POLL_S = 1.0
STATE_FILE = "state.json"

SourceFactory = Callable[[Config], UeventSource]
ConfigLoader = Callable[[], LoadedConfig]


def default_source(config: Config) -> UeventSource:
    return PyudevSource(config.events.source.value, config.events.receive_buffer_bytes)


def runtime_dir() -> Path:
    return Path(os.environ.get("RUNTIME_DIRECTORY", "/run/crashhp").split(":")[0])


class Protection(enum.StrEnum):
    PROTECTED = "protected"  # loaded, and current (by the kernel or by our reloads)
    NOT_LOADED = "not-loaded"  # nothing loaded, and not by our doing
    UNPROTECTED = "unprotected"  # our reload left no crash kernel loaded
    STALE = "stale"  # loaded, but a needed reload failed: the header is out of date
    NO_KEXEC = "no-kexec"


@dataclass
class Counters:
    events: int = 0
    ignored: int = 0
    bursts: int = 0
    reloads: int = 0
    failures: int = 0
    overflows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class _Settle:
    """A burst whose crash_hotplug read 0: re-read until ``until`` before trusting it."""

    burst: Burst
    stale: tuple[Subsystem, ...]  # the subsystems whose file read 0
    until: float
    next_read: float
    reads_left: int  # re-reads still owed, however late the loop gets to them
    seen_updating: set[Subsystem] = field(default_factory=set)  # read 1 at least once


@dataclass
class _Attempt:
    """A reload in progress: its burst, plan, step and running command."""

    burst: Burst
    decision: Decision
    plan: reload.Plan
    started_at: float
    step: int = 0
    running: process.Running | None = None
    seqnum: int | None = None  # /sys/kernel/uevent_seqnum when it started
    results: list[process.Result] = field(default_factory=list)


class Daemon:
    def __init__(
        self,
        load: ConfigLoader,
        notifier: Notifier,
        *,
        source_factory: SourceFactory = default_source,
        clock: Callable[[], float] = time.monotonic,
        sysfs: Path = kernel.SYSFS,
        procfs: Path = kernel.PROCFS,
        state_dir: Path | None = None,
    ) -> None:
        self._load = load
        self._loaded = load()
        self.config = self._loaded.config
        self._notifier = notifier
        self._source_factory = source_factory
        self._clock = clock
        self._sysfs = sysfs
        self._procfs = procfs
        self._state_dir = state_dir or runtime_dir()
        self.log = get_logger()
        self.counters = Counters()
        self.coalescer = self._new_coalescer(self.config)
        self.protection = Protection.NOT_LOADED
        self.last_state: KernelState | None = None
        self.last_burst: dict[str, Any] | None = None
        self._owed = False
        self._failures_in_row = 0
        self._settling: _Settle | None = None
        self._retry: tuple[Burst, float] | None = None  # burst, retry at
        self._poll_at: float | None = None  # UNPROTECTED, given up: re-read kexec_crash_loaded
        # The highest SEQNUM in the pending burst (None: some of it has none, e.g. a resync),
        # and uevent_seqnum when the last successful reload started: a burst of events the
        # kernel sent before that is described by the image that reload loaded.
        self._pending_seqnum: int | None = 0
        self._pending_overflows = 0  # monitor rebuilds since the pending burst began
        self._covered_seqnum: int | None = None
        self._attempt: _Attempt | None = None
        self._stop = False
        self._loaded_topology: str | None = None
        self._watchdog_s = watchdog_interval_s()
        self._watchdog_at = 0.0
        self._selector = selectors.DefaultSelector()
        self._source: UeventSource | None = None
        self._sigr, self._sigw = socket.socketpair()
        self._last_status = ""
        self._upgrade_failed = False  # until the next config load: do not retry it
        self._lock = ReloadLock(self._state_dir)

    # ---- set-up -------------------------------------------------------------------

    @staticmethod
    def _new_coalescer(config: Config) -> Coalescer:
        return Coalescer(config.coalesce.quiet_ms / 1000, config.coalesce.max_delay_ms / 1000)

    def _open_source(self) -> None:
        self._source = self._source_factory(self.config)
        self._selector.register(self._source.fileno(), selectors.EVENT_READ, "uevents")
        buffer_error = getattr(self._source, "buffer_error", None)
        if buffer_error:
            self.log.warning("receive_buffer_not_raised", reason=buffer_error)

    def _replace_source(self) -> None:
        """A new [events] section: the new monitor is open before the old one is drained
        and closed, so that no event falls between them (one both read is a harmless
        duplicate: events are hints)."""
        old = self._source
        if old is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(old.fileno())
        self._source = None
        self._open_source()
        if old is None:
            return
        try:
            for _ in range(OLD_SOURCE_DRAINS):
                events, ignored = old.drain(DRAIN_LIMIT)
                if not events and not ignored:
                    return
                self._take(events, ignored)
            why = "the old monitor kept receiving while it was drained"
        except MonitorOverflow as exc:
            why = f"receive buffer overflow ({exc})"
        except OSError as exc:
            why = f"monitor error: {exc.strerror or exc}"
        finally:
            old.close()
        self._resync(why, reopen=False)

    def _close_source(self) -> None:
        if self._source is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._source.fileno())
            self._source.close()
            self._source = None

    def _install_signals(self) -> None:
        for sock in (self._sigr, self._sigw):
            sock.setblocking(False)
        signal.set_wakeup_fd(self._sigw.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)  # the wake-up fd carries the number
        self._selector.register(self._sigr.fileno(), selectors.EVENT_READ, "signals")

    def start(self, *, signals: bool = True) -> None:
        """Open the monitor, read the state once, decide if a fresh start must reload."""
        if signals:
            self._install_signals()
        self._open_source()  # before the first read: nothing between them is missed
        state = self._read_state()
        previous = self._read_previous_state()
        now = self._clock()
        current = kernel.topology(self._sysfs, self._procfs)
        if state.crash_loaded:
            recorded = previous.get("loaded_topology") if previous else None
            if recorded and recorded != current:
                # We died (or were stopped) after the topology changed and before the
                # crash kernel was reloaded for it: treat it as a burst of every subsystem.
                self.log.info("topology_changed_while_down", recorded=recorded, current=current)
                for sub in Subsystem:
                    self._mark(now, sub, None)
            else:
                self._loaded_topology = current
            if self.config.kexec.upgrade and any(
                state.verdict(sub) is Verdict.NEEDS_RELOAD for sub in Subsystem
            ):
                self.log.info(
                    "upgrade_scheduled",
                    text="crash kernel loaded without hotplug support; reloading it "
                    "hotplug-capably (kexec.upgrade = true)",
                )
                for sub in Subsystem:
                    self._mark(now, sub, None)
        elif (
            previous
            and (previous.get("owed") or previous.get("reloading"))
            and state.crash_loaded is False
        ):
            # The previous instance died during a reload (or after a failed one): the
            # unload may have happened and the load not; the crash kernel is owed.
            self._owed = True
            self.protection = Protection.UNPROTECTED
            for sub in Subsystem:
                self._mark(now, sub, None)
        self._report_support(state)
        _release_startup_memory()
        self._watchdog_at = now
        self._write_state()
        self._notifier.notify(f"READY=1\nSTATUS={self.status_line()}")
        self._last_status = self.status_line()
        self.log.info(
            "daemon_ready",
            text=f"crashhp ready: {self.status_line()}",
            source=self.config.events.source.value,
            policy=self.config.policy.value,
            config=",".join(str(f) for f in self._loaded.files) or "(defaults)",
            **_state_fields(state),
        )

    def _report_support(self, state: KernelState) -> None:
        """Say once, clearly, what the kernel cannot tell us."""
        if state.crash_loaded is None:
            self.log.warning(
                "no_kexec",
                text="no /sys/kernel/kexec_crash_loaded: this kernel has no kexec support; "
                "crashhp will only observe",
            )
        for sub in Subsystem:
            verdict = state.verdict(sub)
            if verdict is Verdict.ABSENT:
                self.log.warning(
                    "no_crash_hotplug",
                    subsystem=sub.value,
                    text=f"no /sys/devices/system/{sub.value}/crash_hotplug: this kernel cannot "
                    f"update the crash header on {sub.value} changes (Linux >= 6.6 with "
                    "CONFIG_CRASH_HOTPLUG can); every change will be reloaded",
                )
            elif verdict is Verdict.UNREADABLE:
                self.log.warning(
                    "crash_hotplug_unreadable",
                    subsystem=sub.value,
                    text=f"/sys/devices/system/{sub.value}/crash_hotplug cannot be read "
                    "(root-only on Linux 6.6-6.10); treating it as 'reload needed'",
                )

    # ---- the loop -----------------------------------------------------------------

    def run(self) -> int:
        """The service: start, turn the loop until stopped, then clean up."""
        self.start()
        while not self.finished:
            self.turn()
        return self.close()

    @property
    def finished(self) -> bool:
        """Stopping was requested and no reload command is running any more."""
        return self._stop and self._attempt is None

    def turn(self, max_wait: float | None = None) -> None:
        """One turn of the loop: wait for an fd or the next deadline, then handle both."""
        timeout = self._next_timeout()
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        for key, _ in self._selector.select(timeout):
            if key.data == "uevents":
                self._on_uevents()
            elif key.data == "signals":
                self._on_signals()
            elif key.data == "process":
                self._on_process_exit()
        self._on_timers()

    def close(self) -> int:
        self._notifier.notify("STOPPING=1\nSTATUS=stopping")
        self._write_state()
        self._close_source()
        self._selector.close()
        return 0

    def _next_timeout(self) -> float | None:
        deadlines: list[float] = []
        if self._watchdog_s:
            deadlines.append(self._watchdog_at + self._watchdog_s)
        if self._attempt is not None and self._attempt.running is not None:
            deadlines.append(self._attempt.running.deadline)
        elif self._settling is not None:
            deadlines.append(self._settling.next_read)
        elif not self._stop:
            coalesce = self.coalescer.deadline()
            if coalesce is not None:
                deadlines.append(coalesce)
            if self._retry is not None:
                deadlines.append(self._retry[1])
            if self._poll_at is not None:
                deadlines.append(self._poll_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self._clock())

    def _on_timers(self) -> None:
        now = self._clock()
        if self._watchdog_s and now >= self._watchdog_at + self._watchdog_s:
            self._notifier.notify("WATCHDOG=1")
            self._watchdog_at = now
        attempt = self._attempt
        if attempt is not None:
            if attempt.running is not None and now >= attempt.running.deadline:
                attempt.running.kill()
                self._on_process_exit()
            return
        if self._stop:
            return
        if self._settling is not None:
            self._on_settle_read(self._settling, now)
            return
        if self.coalescer.due(now):
            seqnum = self._pending_seqnum
            burst = self.coalescer.take()
            if seqnum and self._covered_seqnum is not None and seqnum <= self._covered_seqnum:
                self._skip_covered(burst, seqnum)
            else:
                self._retry = None  # a new decision supersedes a scheduled retry
                self._decide(burst, confirmed=False)
        elif self._retry is not None and now >= self._retry[1]:
            burst, _ = self._retry
            self._retry = None
            self._decide(burst, confirmed=True, retry=True)
        self._watch_unprotected(now)

    def _on_settle_read(self, settle: _Settle, now: float) -> None:
        """One of the re-reads of a 0; the last one decides, counting any 1 seen.

        The window is counted in reads at least SETTLE_READ_INTERVAL_S apart as well as in
        time: on a starved CPU a late wake-up must not shrink it to a single read.
        """
        if now < settle.next_read:
            return
        if now < settle.until or settle.reads_left > 0:
            settle.seen_updating.update(
                s
                for s in settle.stale
                if s not in settle.seen_updating
                and kernel.read_verdict(s, self._sysfs) is Verdict.KERNEL_UPDATES
            )
            settle.reads_left -= 1
            settle.next_read = now + kernel.SETTLE_READ_INTERVAL_S
            if settle.reads_left <= 0:
                settle.next_read = max(settle.until, settle.next_read)
            return
        self._settling = None
        self._decide(settle.burst, confirmed=True, seen_updating=frozenset(settle.seen_updating))

    def _watch_unprotected(self, now: float) -> None:
        """Given up and UNPROTECTED: notice at once when someone else loads a crash kernel.

        Nothing else would look before the next hotplug event, and until then STATUS and
        `crashhp status` would keep saying UNPROTECTED about a protected machine.
        """
        idle = (
            self.protection is Protection.UNPROTECTED
            and self._retry is None
            and self._attempt is None
            and self._settling is None
            and not self.coalescer.pending
        )
        if not idle:
            self._poll_at = None
            return
        if self._poll_at is None:
            self._poll_at = now + UNPROTECTED_POLL_S
            return
        if now < self._poll_at:
            return
        self._poll_at = now + UNPROTECTED_POLL_S
        state = self._read_state()
        if state.crash_loaded:
            self._poll_at = None
            # Loaded after the hotplug that needed our reload: it describes this topology.
            self._loaded_topology = kernel.topology(self._sysfs, self._procfs)
            self._recovered("a crash kernel was loaded by someone else")
            self._publish()

    # ---- events -------------------------------------------------------------------

    def _on_uevents(self) -> None:
        if self._source is None:
            return
        try:
            events, ignored = self._source.drain(DRAIN_LIMIT)
        except MonitorOverflow as exc:
            self._resync(f"receive buffer overflow ({exc})")
            return
        except OSError as exc:
            self._resync(f"monitor error: {exc.strerror or exc}")
            return
        self._take(events, ignored)

    def _take(self, events: list[Uevent], ignored: int) -> None:
        now = self._clock()
        self.counters.ignored += ignored
        for event in events:
            self._mark(now, event.subsystem, event.seqnum)
        self.counters.events += len(events)
        if events and self.log.is_enabled_for(10):  # DEBUG
            last = events[-1]
            self.log.debug(
                "uevents",
                count=len(events),
                last_action=last.action,
                last_device=last.sys_name,
                last_seqnum=last.seqnum,
                kernel_updates_at_event=last.kernel_updates,
            )

    def _mark(self, now: float, subsystem: Subsystem, seqnum: int | None) -> None:
        """One event (or a resync) for the pending burst; ``seqnum`` its SEQNUM if known."""
        if not self.coalescer.pending:
            self._pending_seqnum = 0
            self._pending_overflows = 0
        self.coalescer.add(now, subsystem)
        if not seqnum or self._pending_seqnum is None:
            self._pending_seqnum = None
        elif seqnum > self._pending_seqnum:
            self._pending_seqnum = seqnum

    def _resync(self, why: str, *, reopen: bool = True) -> None:
        """Events were lost: rebuild the monitor and treat everything as changed."""
        self.counters.overflows += 1
        if reopen:
            self._close_source()
            self._open_source()
        now = self._clock()
        first = not self.coalescer.pending or not self._pending_overflows
        # Whatever was lost, the kernel had sent it by now.
        seqnum = kernel.read_uevent_seqnum(self._sysfs)
        for sub in Subsystem:
            self._mark(now, sub, seqnum)
        self._pending_overflows += 1
        # A storm into a small buffer overflows it again right after each rebuild: say it
        # once per burst, not dozens of times (state.json's counters.overflows has them all).
        log = self.log.warning if first else self.log.debug
        log("monitor_overflow", reason=why, overflows=self.counters.overflows)

    def _on_signals(self) -> None:
        try:
            data = self._sigr.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.request_stop(signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                self.reconfigure()

    def request_stop(self, why: str) -> None:
        """Stop after the running reload command, if any, has finished."""
        if self._stop:
            return
        self._stop = True
        self._notifier.notify("STOPPING=1")
        self.log.info("daemon_stopping", signal=why, waiting_for_reload=self._attempt is not None)

    def reconfigure(self) -> None:
        """Re-read the config (SIGHUP); a bad one is logged and the old one stays."""
        self._notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(1) // 1000}")
        try:
            loaded = self._load()
        except ConfigError as exc:
            self.log.error(
                "config_rejected",
                text=f"new config rejected, the old one stays in force: {exc}",
                file=exc.path,
                key=exc.key,
                reason=exc.reason,
            )
        else:
            old = self.config
            self._upgrade_failed = False
            self._loaded = loaded
            self.config = loaded.config
            self.coalescer.retune(
                self.config.coalesce.quiet_ms / 1000, self.config.coalesce.max_delay_ms / 1000
            )
            if old.events != self.config.events:
                self._replace_source()
            if old.log != self.config.log:
                logs.configure(self.config.log.format, self.config.log.level.value)
                self.log = get_logger()
            self.log.info(
                "config_loaded",
                files=",".join(str(f) for f in loaded.files) or "(defaults)",
                policy=self.config.policy.value,
            )
        if (
            self.protection in (Protection.UNPROTECTED, Protection.STALE)
            and self._attempt is None
            and self._retry is None
        ):
            # A reload that was given up on is tried again now (reload_given_up says so).
            now = self._clock()
            self._retry = (Burst(0, frozenset(Subsystem), now, now), now)
        self._notifier.notify(f"READY=1\nSTATUS={self.status_line()}")

    # ---- deciding -----------------------------------------------------------------

    def _read_state(self) -> KernelState:
        state = kernel.read_state(self._sysfs)
        self.last_state = state
        if state.crash_loaded is None:
            self.protection = Protection.NO_KEXEC
        elif not state.crash_loaded:
            if not self._owed:
                self.protection = Protection.NOT_LOADED
        elif self.protection in (Protection.NOT_LOADED, Protection.NO_KEXEC):
            self.protection = Protection.PROTECTED
        return state

    def _decide(
        self,
        burst: Burst,
        *,
        confirmed: bool,
        retry: bool = False,
        seen_updating: frozenset[Subsystem] = frozenset(),
    ) -> None:
        state = self._read_state().seen_updating(seen_updating)
        decision = decide(
            burst.subsystems, state, self.config.policy, confirmed=confirmed, owed=self._owed
        )
        if decision.action is Action.CONFIRM:
            now = self._clock()
            until = now + self.config.coalesce.settle_ms / 1000
            reads = int(self.config.coalesce.settle_ms / 1000 / kernel.SETTLE_READ_INTERVAL_S)
            self._settling = _Settle(
                burst,
                decision.stale,
                until,
                min(until, now + kernel.SETTLE_READ_INTERVAL_S),
                reads_left=reads,
            )
            self.log.debug("settling", stale=list(decision.stale), text=decision.text)
            return
        if decision.action is Action.RELOAD:
            self._start_reload(burst, decision, state)
            return
        if state.crash_loaded and self.protection is Protection.UNPROTECTED:
            self._recovered("a crash kernel was loaded by someone else")
        if retry or self.protection is Protection.STALE:
            # Nothing to do any more (someone else reloaded, or the kernel now keeps
            # the image current): the failed reload is no longer owed.
            self._failures_in_row = 0
            if state.crash_loaded:
                self.protection = Protection.PROTECTED
        if decision.reason is Reason.KERNEL_UPDATES:
            # The kernel keeps the loaded image current: it describes this topology.
            self._loaded_topology = kernel.topology(self._sysfs, self._procfs)
        self.counters.bursts += 1
        self.counters.skipped[decision.reason.value] = (
            self.counters.skipped.get(decision.reason.value, 0) + 1
        )
        self._log_skip(burst, decision, state)
        self._summary(burst, decision, state, action="none", reload_ms=None)
        self._publish()

    def _skip_covered(self, burst: Burst, seqnum: int) -> None:
        """Every event of the burst was sent before the last successful reload started.

        A storm read more slowly than it came (a big receive buffer, a slow machine) has
        its tail read after the reload that max_delay_ms forced in its middle; the kernel
        had made those changes before the reload read the topology, so no second reload.
        """
        self.counters.bursts += 1
        self.counters.skipped["covered"] = self.counters.skipped.get("covered", 0) + 1
        now = self._clock()
        state = self.last_state
        summary: dict[str, Any] = {
            "events": burst.events,
            "subsystems": _names(burst.subsystems),
            "verdicts": {s.value: state.verdict(s).value for s in Subsystem} if state else {},
            "crash_loaded": state.crash_loaded if state else None,
            "decision": "covered",
            "action": "none",
            "coalesce_ms": round((now - burst.first_at) * 1000, 1),
            "since_last_event_ms": round((now - burst.last_at) * 1000, 1),
            "reload_ms": None,
            "last_seqnum": seqnum,
            "covered_seqnum": self._covered_seqnum,
        }
        self.last_burst = summary
        self.log.info("burst", **summary)
        self._publish()

    def _log_skip(self, burst: Burst, decision: Decision, state: KernelState) -> None:
        fields = {"events": burst.events, "subsystems": _names(burst.subsystems)}
        if decision.reason is Reason.KERNEL_UPDATES:
            self.log.info("kernel_handles", text=decision.text, **fields)
        elif decision.reason is Reason.NOT_LOADED:
            self.log.info("not_loaded", text=decision.text, **fields)
        else:
            self.log.info("reload_skipped", reason=decision.reason.value, text=decision.text)

    def _summary(
        self,
        burst: Burst,
        decision: Decision,
        state: KernelState,
        *,
        action: str,
        reload_ms: float | None,
    ) -> None:
        now = self._clock()
        summary = {
            "events": burst.events,
            "subsystems": _names(burst.subsystems),
            "verdicts": {s.value: state.verdict(s).value for s in Subsystem},
            "crash_loaded": state.crash_loaded,
            "decision": decision.reason.value,
            "action": action,
            "coalesce_ms": round((now - burst.first_at) * 1000, 1) if burst.events else 0.0,
            "since_last_event_ms": round((now - burst.last_at) * 1000, 1) if burst.events else 0.0,
            "reload_ms": None if reload_ms is None else round(reload_ms, 1),
        }
        self.last_burst = summary
        self.log.info("burst", **summary)

    # ---- reloading ----------------------------------------------------------------

    def _start_reload(self, burst: Burst, decision: Decision, state: KernelState) -> None:
        try:
            plan = self._plan(decision)
        except reload.NoReloadMethod as exc:
            self.counters.bursts += 1
            self.counters.failures += 1
            self.protection = Protection.STALE if state.crash_loaded else Protection.UNPROTECTED
            self.log.error("reload_failed", text=f"cannot reload: {exc}", reason=str(exc))
            self._summary(burst, decision, state, action="failed", reload_ms=None)
            self._publish()
            return
        self._begin(burst, decision, plan)

    def _plan(self, decision: Decision) -> reload.Plan:
        # The kernel supports crash hotplug but the image was loaded without it: if the
        # admin allows, make this reload the one that lets the kernel keep it current.
        if (
            self.config.kexec.upgrade
            and decision.reason is Reason.KERNEL_SAYS_RELOAD
            and not self._upgrade_failed
        ):
            try:
                return reload.upgrade_plan(self.config, sysfs=self._sysfs, procfs=self._procfs)
            except reload.NoReloadMethod as exc:
                self._upgrade_failed = True
                self.log.warning("upgrade_unavailable", reason=str(exc))
        return reload.plan(self.config, sysfs=self._sysfs, procfs=self._procfs)

    def _begin(self, burst: Burst, decision: Decision, plan: reload.Plan) -> None:
        if not self._lock.acquire():
            # `crashhp reload` or `crashhp upgrade` is running by hand: try again later.
            busy = process.Result(
                argv=plan.steps[0],
                returncode=None,
                duration_s=0.0,
                error=f"another crashhp reload holds {self._lock.path}",
            )
            self._finish_attempt(_Attempt(burst, decision, plan, self._clock(), results=[busy]))
            return
        now = self._clock()
        self._attempt = _Attempt(
            burst=burst,
            decision=decision,
            plan=plan,
            started_at=now,
            seqnum=kernel.read_uevent_seqnum(self._sysfs),
        )
        self.log.info(
            "reload_started",
            purpose=plan.purpose,
            method=plan.method.value,
            command=plan.describe(),
            reason=decision.reason.value,
            events=burst.events,
            attempt=self._failures_in_row + 1,
            since_last_event_ms=round((now - burst.last_at) * 1000, 1) if burst.events else 0.0,
        )
        self._publish(f"reloading the crash kernel ({plan.method.value})")
        self._run_step(self._attempt)

    def _run_step(self, attempt: _Attempt) -> None:
        argv = attempt.plan.steps[attempt.step]
        started = process.start(argv, self.config.reload.timeout_s, self._clock)
        if isinstance(started, process.Result):
            attempt.results.append(started)
            self._finish_attempt(attempt)
            return
        attempt.running = started
        self._selector.register(started.fileno(), selectors.EVENT_READ, "process")

    def _on_process_exit(self) -> None:
        attempt = self._attempt
        if attempt is None or attempt.running is None:
            return
        running = attempt.running
        if not running.exited() and not running.deadline <= self._clock():
            return
        self._selector.unregister(running.fileno())
        attempt.running = None
        result = running.finish()
        attempt.results.append(result)
        if result.ok and attempt.step + 1 < len(attempt.plan.steps):
            attempt.step += 1
            self._run_step(attempt)
            return
        self._finish_attempt(attempt)

    def _finish_attempt(self, attempt: _Attempt) -> None:
        self._attempt = None
        self._lock.release()
        result = attempt.results[-1]
        duration_ms = (self._clock() - attempt.started_at) * 1000
        state = self._read_state()
        loaded = bool(state.crash_loaded)
        if result.ok and loaded:
            self.counters.bursts += 1
            self.counters.reloads += 1
            self._failures_in_row = 0
            was_unprotected = self.protection in (Protection.UNPROTECTED, Protection.STALE)
            self._owed = False
            self.protection = Protection.PROTECTED
            self._loaded_topology = kernel.topology(self._sysfs, self._procfs)
            if attempt.seqnum is not None:
                self._covered_seqnum = max(self._covered_seqnum or 0, attempt.seqnum)
            keeps_current = all(state.verdict(s) is Verdict.KERNEL_UPDATES for s in Subsystem)
            if attempt.plan.purpose == "upgrade" and not keeps_current:
                self._upgrade_failed = True
                self.log.warning(
                    "upgrade_ineffective",
                    text="hotplug-capable load done but crash_hotplug still reads 0",
                )
            done = "upgraded" if attempt.plan.purpose == "upgrade" else "reloaded"
            self.log.info(
                "reload_done",
                text=f"crash kernel {done} ({attempt.plan.method.value}, {duration_ms:.0f} ms)",
                purpose=attempt.plan.purpose,
                kernel_keeps_current=keeps_current,
                method=attempt.plan.method.value,
                duration_ms=round(duration_ms, 1),
                reloads=self.counters.reloads,
                **_state_fields(state),
            )
            if was_unprotected:
                self._recovered(f"reload by {attempt.plan.method.value} succeeded")
            self._summary(
                attempt.burst, attempt.decision, state, action="reload", reload_ms=duration_ms
            )
            self._publish()
            return
        self.counters.failures += 1
        why = result.describe() if not result.ok else "the crash kernel is not loaded afterwards"
        if attempt.plan.fallback is not None:
            # Never leave the machine without a crash kernel for an upgrade: load it the
            # way it was loaded before, at once.
            self._upgrade_failed = True
            self.log.warning(
                "upgrade_failed",
                text=f"hotplug-capable load failed ({why}); loading it the previous way",
                reason=why,
                output=result.output[-500:] or None,
                crash_loaded=loaded,
            )
            self._begin(attempt.burst, attempt.decision, attempt.plan.fallback)
            return
        self.counters.bursts += 1
        self._failures_in_row += 1
        retries = self.config.reload.retries
        retry_in = (
            reload.backoff_s(self.config.reload, self._failures_in_row)
            if self._failures_in_row <= retries
            else None
        )
        self.log.error(
            "reload_failed",
            text=f"crash kernel reload failed: {why}",
            reason=why,
            output=result.output[-500:] or None,
            attempt=self._failures_in_row,
            retry_in_s=retry_in,
            crash_loaded=loaded,
        )
        if loaded:
            self.protection = Protection.STALE
        else:
            first = self.protection is not Protection.UNPROTECTED
            self._owed = True
            self.protection = Protection.UNPROTECTED
            if first:
                self.log.error(
                    "unprotected",
                    text="no crash kernel is loaded: a crash now would not be dumped",
                    reason=why,
                )
        self._summary(
            attempt.burst, attempt.decision, state, action="failed", reload_ms=duration_ms
        )
        if retry_in is not None:
            self._retry = (attempt.burst, self._clock() + retry_in)
        else:
            self.log.error(
                "reload_given_up",
                text=f"giving up after {self._failures_in_row} attempts until the next event "
                "or `systemctl reload crashhp`",
                attempts=self._failures_in_row,
            )
            self._failures_in_row = 0
        self._publish()

    def _recovered(self, how: str) -> None:
        self._owed = False
        self.protection = Protection.PROTECTED
        # STATUS= and state.json first: whoever reacts to the journal line (an admin
        # running `crashhp status`, a test) must already see the machine protected.
        self._publish()
        self.log.info("recovered", text=f"a crash kernel is loaded again: {how}")

    # ---- reporting ----------------------------------------------------------------

    def status_line(self) -> str:
        state = self.last_state
        n = self.counters.reloads
        reloads = f"{n} reload{'s' if n != 1 else ''}"
        prefix = "policy never (observing only); " if self.config.policy is Policy.NEVER else ""
        if self.protection is Protection.NO_KEXEC:
            return prefix + "kernel has no kexec support; nothing to protect"
        if self.protection is Protection.UNPROTECTED:
            retry = ""
            if self._retry is not None:
                retry = f"; retry in {max(0.0, self._retry[1] - self._clock()):.0f} s"
            return f"UNPROTECTED: no crash kernel loaded after a failed reload{retry}; {reloads}"
        if self.protection is Protection.STALE:
            return f"crash kernel loaded but STALE: its reload failed; {reloads}"
        if state is None or not state.crash_loaded:
            return prefix + f"no crash kernel loaded; nothing to keep current; {reloads}"
        kernel_subs = [s.value for s in Subsystem if state.verdict(s) is Verdict.KERNEL_UPDATES]
        other = [s.value for s in Subsystem if state.verdict(s) is not Verdict.KERNEL_UPDATES]
        parts = ["crash kernel loaded"]
        if kernel_subs:
            parts.append(f"kernel updates {','.join(kernel_subs)} itself")
        if other:
            parts.append(f"crashhp reloads on {','.join(other)} changes")
        parts.append(reloads)
        return prefix + "; ".join(parts)

    def _publish(self, status: str | None = None) -> None:
        line = status or self.status_line()
        if line != self._last_status:
            self._notifier.notify(f"STATUS={line}")
            self._last_status = line
        self._write_state()

    def snapshot(self) -> dict[str, Any]:
        state = self.last_state
        return {
            "pid": os.getpid(),
            "protection": self.protection.value,
            "status": self.status_line(),
            "owed": self._owed,
            "reloading": self._attempt is not None,
            "policy": self.config.policy.value,
            "counters": {
                "events": self.counters.events,
                "ignored": self.counters.ignored,
                "bursts": self.counters.bursts,
                "reloads": self.counters.reloads,
                "failures": self.counters.failures,
                "overflows": self.counters.overflows,
                "skipped": dict(self.counters.skipped),
            },
            "loaded_topology": self._loaded_topology,
            "last_burst": self.last_burst,
            "state": _state_fields(state) if state else None,
            "updated_at": time.time(),
        }

    def _read_previous_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self._state_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_state(self) -> None:
        path = self._state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        try:
            self._state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.snapshot(), indent=1) + "\n")
            tmp.replace(path)
        except OSError as exc:
            self.log.debug("state_not_written", path=str(path), reason=exc.strerror)


def _release_startup_memory() -> None:
    """Hand the heap that imports and config validation left free back to the kernel.

    The daemon idles for months; glibc keeps freed start-up memory mapped otherwise
    (about 1 MiB of its RSS). Not glibc: nothing to do.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _names(subsystems: frozenset[Subsystem]) -> list[str]:
    return sorted(s.value for s in subsystems)


def _state_fields(state: KernelState) -> dict[str, Any]:
    return {
        "crash_loaded": state.crash_loaded,
        "cpu_crash_hotplug": state.verdict(Subsystem.CPU).value,
        "memory_crash_hotplug": state.verdict(Subsystem.MEMORY).value,
        "elfcorehdr_size": state.elfcorehdr_size,
    }
