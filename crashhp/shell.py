"""Carrying out the engine's effects: each kind by exactly one module.

The daemon (crashhp.service) and `crashhp reload`/`upgrade` (crashhp.oneshot) drive the
same engine through this; they differ only in how they wait.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path

from crashhp import kernel, reload, runners
from crashhp.config import Config
from crashhp.engine import Engine
from crashhp.lock import ReloadLock
from crashhp.messages import (
    Effect,
    Exited,
    Input,
    KernelRead,
    Kill,
    Log,
    MakePlan,
    Planned,
    Publish,
    Purpose,
    ReadKernel,
    Spawn,
    Unlock,
    WakeAt,
)
from crashhp.process import Process, Result, Runner


class Shell:
    """The effect side of an engine: kernel reads, plans, commands, the reload lock."""

    engine: Engine

    def __init__(
        self,
        state_dir: Path,
        *,
        reader: kernel.Reader,
        clock: Callable[[], float] = time.monotonic,
        runner: Runner | None = None,
    ) -> None:
        self.reader = reader
        self.clock = clock
        # None: the runner reload.runner asks for, chosen at each step (config can change).
        self.runner: Runner | None = runner
        self.state_dir = state_dir
        self.lock = ReloadLock(state_dir)
        self.running: Process | None = None
        self.wake: float | None = None

    @property
    def config(self) -> Config:
        return self.engine.config

    def feed(self, first: Input) -> None:
        """Hand ``first`` to the engine and carry out what it asks, answers included."""
        queue: collections.deque[Input] = collections.deque([first])
        while queue:
            for effect in self.engine.handle(queue.popleft()):
                answer = self.perform(effect)
                if answer is not None:
                    queue.append(answer)

    def perform(self, effect: Effect) -> Input | None:
        match effect:
            case ReadKernel(purpose=purpose):
                return self.read_kernel(purpose)
            case MakePlan(upgrade=upgrade):
                return self.make_plan(upgrade)
            case Spawn(argv=argv, timeout_s=timeout):
                return self.spawn(argv, timeout)
            case Kill():
                if self.running is not None:
                    self.running.kill()
            case Unlock():
                self.lock.release()
            case Log():
                self.log(effect)
            case Publish():
                self.publish(effect)
            case WakeAt(at=at):
                self.wake = at
        return None

    def read_kernel(self, purpose: Purpose) -> KernelRead:
        # uevent_seqnum first: every event up to it changed what the fingerprint reads.
        seqnum = self.reader.seqnum()
        fingerprint = self.reader.fingerprint()
        return KernelRead(self.clock(), purpose, self.reader.state(), fingerprint, seqnum)

    def make_plan(self, upgrade: bool) -> Planned:
        now = self.clock()
        sysfs, procfs = self.reader.sysfs, self.reader.procfs
        unavailable = None
        if upgrade:
            try:
                return Planned(now, reload.upgrade_plan(self.config, sysfs=sysfs, procfs=procfs))
            except reload.NoReloadMethod as exc:
                unavailable = str(exc)
        try:
            plan = reload.plan(self.config, sysfs=sysfs, procfs=procfs)
        except reload.NoReloadMethod as exc:
            return Planned(now, None, str(exc), upgrade_unavailable=unavailable)
        return Planned(now, plan, upgrade_unavailable=unavailable)

    def spawn(self, argv: tuple[str, ...], timeout_s: float) -> Exited | None:
        now = self.clock()
        if not self.lock.held:
            try:
                free = self.lock.acquire()
            except OSError as exc:
                why = f"cannot make the reload lock {self.lock.path}: {exc.strerror or exc}"
                return Exited(now, Result(argv, None, 0.0, error=why))
            if not free:
                why = f"another crashhp reload holds {self.lock.path}"
                return Exited(now, Result(argv, None, 0.0, error=why, busy=True))
        runner = self.runner or runners.for_config(self.config, self.clock)
        started = runner.start(argv, timeout_s)
        if isinstance(started, Result):
            return Exited(now, started)
        self.running = started
        self.started(started)
        return None

    def reap(self) -> Exited | None:
        """The running command's end, if it has ended."""
        running = self.running
        if running is None or not running.exited():
            return None
        self.stopped(running)
        self.running = None
        return Exited(self.clock(), running.finish())

    # ---- for the two shells -----------------------------------------------------------

    def started(self, process: Process) -> None:
        """A command is running (register its fd)."""

    def stopped(self, process: Process) -> None:
        """A command has exited (unregister its fd)."""

    def log(self, entry: Log) -> None:
        raise NotImplementedError

    def publish(self, effect: Publish) -> None:
        raise NotImplementedError
