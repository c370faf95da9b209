"""The service shell: one thread, one selector loop, and the engine.

The loop owns the uevent monitor's fd, a signal wake-up fd, the pidfd of a running
reload command, the watchdog and the next deadline the engine asked for. It turns what
happens into the engine's inputs and carries out its effects (crashhp.shell); it decides
nothing itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crashhp import kernel, logs, persist, runners
from crashhp.arch import rules as arch_rules
from crashhp.config import ConfigError, LoadedConfig
from crashhp.exporter import Exporter
from crashhp.logs import get_logger
from crashhp.machine import state_fields
from crashhp.messages import Log, Lost, Publish, Purpose, Reconfigured, Stop, Tick, Uevents
from crashhp.model import KernelState, Layout, Subsystem, Verdict
from crashhp.monitor import Batch, Monitor, SourceFactory, default_source
from crashhp.notify import Notifier, watchdog_interval_s
from crashhp.process import Process, Runner
from crashhp.runtime import InstanceLock, runtime_dir
from crashhp.shell import Shell

ConfigLoader = Callable[[], LoadedConfig]


class Service(Shell):
    def __init__(
        self,
        load: ConfigLoader,
        notifier: Notifier,
        *,
        source_factory: SourceFactory = default_source,
        clock: Callable[[], float] = time.monotonic,
        reader: kernel.Reader | None = None,
        state_dir: Path | None = None,
        runner: Runner | None = None,
    ) -> None:
        super().__init__(
            state_dir or runtime_dir(), reader=reader or kernel.Reader(), clock=clock, runner=runner
        )
        self._load = load
        self._loaded = load()
        self._notifier = notifier
        self.logger = get_logger()
        self._instance = InstanceLock(self.state_dir)
        self._selector = selectors.DefaultSelector()
        self.monitor = Monitor(source_factory, self._selector, self._buffer_not_raised)
        self._sigr, self._sigw = socket.socketpair()
        self._watchdog_s = watchdog_interval_s()
        self._watchdog_at = 0.0
        self._last_status = ""
        self._invocation = os.environ.get("INVOCATION_ID") or None
        self._runner_error: str | None = None
        self._exporter = Exporter(self._warn)

    # ---- start and stop ---------------------------------------------------------------

    def start(self, *, signals: bool = True) -> None:
        """Refuse a second daemon, open the monitor, read the kernel once, resume."""
        self._instance.acquire()
        if signals:
            self._install_signals()
        self.monitor.open(self._loaded.config)  # before the first read: nothing is missed
        rules = arch_rules(self.reader.arch or kernel.host_arch())
        first = self.read_kernel(Purpose.DECIDE)
        self.engine, effects = persist.resume(
            persist.read(self.state_dir), first, self._loaded.config, rules
        )
        for effect in effects:
            self.perform(effect)
        report_support(self.logger, first.state, rules.never_reload)
        self._check_runner()
        _release_startup_memory()
        now = self.clock()
        self._watchdog_at = now
        snapshot = self.engine.snapshot(now)
        self._last_status = snapshot.status  # STATUS= goes with READY=1, below
        self.publish(Publish(snapshot))  # state.json first: a restart right after READY=1
        self._notifier.notify(f"READY=1\nSTATUS={snapshot.status}")  # must find it
        self.feed(Tick(now))
        status = snapshot.status
        self.logger.info(
            "daemon_ready",
            text=f"crashhp ready: {status}",
            source=self.config.events.source.value,
            policy=self.config.policy.value,
            config=",".join(str(f) for f in self._loaded.files) or "(defaults)",
            kexec_layout=first.state.layout.value,
            arch=rules.arch.value,
            **state_fields(first.state),
        )

    def run(self) -> int:
        """The service: start, turn the loop until stopped, then clean up."""
        self.start()
        while not self.engine.finished:
            self.turn()
        return self.close()

    def close(self) -> int:
        self._notifier.notify("STOPPING=1\nSTATUS=stopping")
        self.publish(Publish(self.engine.snapshot(self.clock())))
        self.monitor.close()
        self._selector.close()
        self._instance.release()
        return 0

    # ---- the loop ---------------------------------------------------------------------

    def turn(self, max_wait: float | None = None) -> None:
        """One turn: wait for an fd or the next deadline, then hand both to the engine."""
        due = (self.wake, self._watchdog_due(), self._exporter.due)
        deadlines = [d for d in due if d is not None]
        timeout = max(0.0, min(deadlines) - self.clock()) if deadlines else None
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        for key, _ in self._selector.select(timeout):
            if key.data == "uevents":
                self._on_uevents()
            elif key.data == "signals":
                self._on_signals()
            elif key.data == "process" and (exited := self.reap()) is not None:
                self.feed(exited)
        now = self.clock()
        if self._watchdog_s and now >= self._watchdog_at + self._watchdog_s:
            self._notifier.notify("WATCHDOG=1")
            self._watchdog_at = now
        if self._exporter.due is not None and now >= self._exporter.due:
            self._exporter.write(self.engine.snapshot(now), self.config, now)
        self.feed(Tick(now))

    def _watchdog_due(self) -> float | None:
        return self._watchdog_at + self._watchdog_s if self._watchdog_s else None

    def started(self, process: Process) -> None:
        self._selector.register(process.fileno(), selectors.EVENT_READ, "process")

    def stopped(self, process: Process) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(process.fileno())

    # ---- effects ----------------------------------------------------------------------

    def log(self, entry: Log) -> None:
        getattr(self.logger, entry.level)(entry.event, **entry.fields)

    def publish(self, effect: Publish) -> None:
        snapshot = effect.snapshot
        if snapshot.status != self._last_status:
            self._notifier.notify(f"STATUS={snapshot.status}")
            self._last_status = snapshot.status
        try:
            persist.write(
                self.state_dir,
                snapshot,
                pid=os.getpid(),
                invocation_id=self._invocation,
                runner_error=self._runner_error,
            )
        except OSError as exc:
            # Restart safety depends on this file: say so at error level.
            self.logger.error(
                "state_not_written",
                text=f"cannot write {self.state_dir / persist.STATE_FILE}: restarts will not "
                f"know what the crash kernel describes ({exc.strerror or exc})",
                path=str(self.state_dir / persist.STATE_FILE),
                reason=exc.strerror or str(exc),
            )
        self._exporter.write(snapshot, self.config, self.clock())

    # ---- events -----------------------------------------------------------------------

    def _on_uevents(self) -> None:
        self._deliver([self.monitor.read(self._loaded.config)])

    def _deliver(self, batches: list[Batch]) -> None:
        for batch in batches:
            if batch.events or batch.ignored:
                self.feed(Uevents(self.clock(), batch.events, batch.ignored))
            if batch.lost is not None:  # whatever was lost, the kernel had sent it by now
                self.feed(Lost(self.clock(), self.reader.seqnum(), batch.lost))

    # ---- signals ----------------------------------------------------------------------

    def _install_signals(self) -> None:
        for sock in (self._sigr, self._sigw):
            sock.setblocking(False)
        signal.set_wakeup_fd(self._sigw.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)  # the wake-up fd carries the number
        self._selector.register(self._sigr.fileno(), selectors.EVENT_READ, "signals")

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
        if self.engine.stopping:
            return
        self._notifier.notify("STOPPING=1")
        self.feed(Stop(self.clock(), why))

    def reconfigure(self) -> None:
        """Re-read the config (SIGHUP); a bad or unreadable one is logged, the old stays."""
        self._notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(1) // 1000}")
        try:
            loaded = self._load()
        except ConfigError as exc:
            self.logger.error(
                "config_rejected",
                file=exc.path,
                key=exc.key,
                reason=exc.reason,
                text=f"new config rejected, the old one stays in force: {exc}",
            )
        except OSError as exc:  # a drop-in directory swapped under us, for example
            why = exc.strerror or str(exc)
            self.logger.error(
                "config_rejected",
                file=exc.filename,
                reason=why,
                text=f"new config unreadable, the old one stays in force: {why}",
            )
        else:
            old = self._loaded.config
            self._loaded = loaded
            if old.events != loaded.config.events:
                self._deliver(self.monitor.replace(loaded.config))
            if old.log != loaded.config.log:
                logs.configure(loaded.config.log.format, loaded.config.log.level.value)
                self.logger = get_logger()
            files = ",".join(str(f) for f in loaded.files) or "(defaults)"
            self.logger.info("config_loaded", files=files, policy=loaded.config.policy.value)
            self._check_runner()
            self.feed(Reconfigured(self.clock(), loaded.config))
        self._notifier.notify(f"READY=1\nSTATUS={self._last_status}")

    def _check_runner(self) -> None:
        """Say at start (and after each config reload), not at the first hotplug, when the
        runner reload.runner resolves to cannot reload under this unit."""
        under_systemd = self._invocation is not None
        self._runner_error = (
            None
            if self.runner is not None  # injected (tests): not the config's
            else runners.direct_check(self._loaded.config, under_systemd=under_systemd)
        )
        if self._runner_error:
            self.logger.error(
                "direct_runner_unprivileged", runner="direct", text=self._runner_error
            )

    def _warn(self, event: str, **fields: Any) -> None:
        self.logger.warning(event, **fields)  # self.logger changes at SIGHUP

    def _buffer_not_raised(self, why: str) -> None:
        self.logger.warning("receive_buffer_not_raised", reason=why)


def report_support(logger: Any, state: KernelState, never_reload: str | None) -> None:
    """Say once, clearly, what the kernel cannot tell us."""
    if never_reload:
        logger.info("arch_no_reload", text=never_reload)
    if state.layout is Layout.NONE and not state.fadump:
        logger.warning(
            "no_kexec",
            text="no /sys/kernel/kexec/crash_loaded nor "
            "/sys/kernel/kexec_crash_loaded: this kernel has no kexec "
            "support; crashhp will only observe",
        )
    for sub in Subsystem:
        verdict = state.verdict(sub)
        path = f"/sys/devices/system/{sub.value}/crash_hotplug"
        if verdict is Verdict.ABSENT:
            logger.warning(
                "no_crash_hotplug",
                subsystem=sub.value,
                text=f"no {path}: this kernel cannot update the crash "
                f"header on {sub.value} changes (Linux >= 6.6 with "
                "CONFIG_CRASH_HOTPLUG can); every change will be reloaded",
            )
        elif verdict is Verdict.UNREADABLE:
            logger.warning(
                "crash_hotplug_unreadable",
                subsystem=sub.value,
                text=f"{path} cannot be read (root-only on Linux "
                "6.6-6.10); treating it as 'reload needed'",
            )


def _release_startup_memory() -> None:
    """Hand the heap that imports and config validation left free back to the kernel.

    Measured after the engine split (the netlink fake host, RSS 1 s after READY=1, three
    starts each): 38.3-38.4 MiB without, 37.9-38.0 MiB with. The README's goal is 40 MB
    (38.1 MiB): kept because only with it does the daemon meet it. Not glibc: nothing.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
