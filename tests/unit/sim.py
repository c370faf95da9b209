"""A simulated machine for the engine: topology, kexec files, a reload tool, a fake clock.

The truth is kept here: ``World.image`` is the topology the loaded crash kernel really
describes. The reload tool reads the topology when it starts (as kexec-tools reads
/proc/iomem, or the kernel builds the header at the start of kexec_file_load) and
installs that at its end; the kernel keeps a hotplug-capable image current on every change
made while no load holds the kexec lock. :class:`Driver` carries out the engine's effects
against it, synchronously, as crashhp.shell does against the real machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from crashhp import persist
from crashhp.arch import Arch, rules
from crashhp.config import Config, ReloadMethod
from crashhp.messages import (
    UNKNOWN,
    Effect,
    Exited,
    Input,
    KernelRead,
    Kill,
    Log,
    Lost,
    MakePlan,
    Planned,
    Publish,
    Purpose,
    ReadKernel,
    Reconfigured,
    Spawn,
    Tick,
    Uevents,
    Unlock,
    WakeAt,
)
from crashhp.model import Fadump, KernelState, Protection, Subsystem, Uevent, Verdict, fingerprint
from crashhp.process import Result
from crashhp.reload import Plan

CPU, MEM = Subsystem.CPU, Subsystem.MEMORY
TOOL = ("/usr/sbin/reload-crash-kernel",)


def config(**reload: Any) -> Config:
    return Config.model_validate(
        {
            "coalesce": {"quiet_ms": 500, "max_delay_ms": 5000, "settle_ms": 200},
            "reload": {
                "method": "command",
                "command": list(TOOL),
                "timeout_s": 30,
                "retries": 3,
                "backoff_initial_s": 1.0,
                "backoff_max_s": 8.0,
                **reload,
            },
        }
    )


@dataclass
class Load:
    started: float
    ends: float
    reads: tuple[int, int]  # the topology (cpus, memory blocks) the tool read at its start
    outcome: str  # ok, fail, unloaded (exit 0, nothing loaded)


@dataclass
class World:
    now: float = 100.0
    cpus: int = 4
    online: int = 4
    blocks: int = 8
    loaded: bool = True
    hotplug: bool = False  # the loaded image is hotplug-capable: crash_hotplug reads 1
    image: tuple[int, int] | None = None  # what the loaded crash kernel describes (cpus, blocks)
    seqnum: int = 1000
    load: Load | None = None
    duration: float = 0.5  # how long the next loads take
    fail_next: int = 0
    unload_next: int = 0
    makes_hotplug: bool = False  # the tool loads hotplug-capably (kexec -s, kdump-config)
    fail_keeps: bool = False  # a failing tool fails before it unloads: the old image stays
    fadump: bool = False  # ppc64 firmware-assisted dump: `loaded` is its registration
    fadump_ready: bool = False  # /sys/kernel/fadump/hotplug_ready
    loads: list[Load] = field(default_factory=list)
    overlaps: int = 0

    def __post_init__(self) -> None:
        if self.loaded and self.image is None:
            self.image = self.topology()

    def topology(self) -> tuple[int, int]:
        return (self.cpus, self.blocks)

    def fp(self) -> str:
        cpu = hashlib.sha256(f"present 0-{self.cpus - 1}".encode()).hexdigest()
        ram = hashlib.sha256(f"ram {self.blocks}".encode()).hexdigest()
        return fingerprint(cpu, ram)

    def state(self) -> KernelState:
        verdict = Verdict.KERNEL_UPDATES if self.loaded and self.hotplug else Verdict.NEEDS_RELOAD
        verdicts = MappingProxyType({CPU: verdict, MEM: verdict})
        if self.fadump:  # kexec_crash_loaded reads 0 under fadump
            fadump = Fadump(enabled=True, registered=self.loaded, hotplug_ready=self.fadump_ready)
            return KernelState(False, verdicts, fadump=fadump)
        return KernelState(self.loaded, verdicts)

    def change(self, *, cpus: int = 0, blocks: int = 0) -> None:
        """A hotplug; and the kernel's own update of a hotplug-capable image, which applies
        this change only (it needs the kexec lock: none while a load holds it)."""
        self.cpus += cpus
        self.blocks += blocks
        if self.loaded and self.hotplug and self.load is None and self.image is not None:
            self.image = (self.image[0] + cpus, self.image[1] + blocks)

    def event(self, sub: Subsystem, action: str, *, synthetic: bool = False) -> Uevent:
        self.seqnum += 1
        return Uevent(action, sub, f"{sub.value}1", self.seqnum, synthetic=synthetic)

    def start(self) -> None:
        if self.load is not None:
            self.overlaps += 1
        outcome = "ok"
        if self.fail_next:
            self.fail_next, outcome = self.fail_next - 1, "fail"
        elif self.unload_next:
            self.unload_next, outcome = self.unload_next - 1, "unloaded"
        self.load = Load(self.now, self.now + self.duration, self.topology(), outcome)
        self.loads.append(self.load)
        if not (outcome == "fail" and self.fail_keeps):
            self.loaded, self.image = False, None  # a reload unloads first

    def end(self) -> Result:
        load = self.load
        assert load is not None
        self.load = None
        if load.outcome == "ok":
            self.loaded, self.image, self.hotplug = True, load.reads, self.makes_hotplug
        return Result(TOOL, 0 if load.outcome != "fail" else 1, self.now - load.started)

    def killed(self) -> Result:
        load = self.load
        assert load is not None
        self.load = None
        return Result(TOOL, None, self.now - load.started, timed_out=True)

    @property
    def current(self) -> bool:
        """A crash now would give a dump of this very topology."""
        return self.loaded and self.image == self.topology()


class Driver:
    """The engine and its effects against a World: the shell, in a test."""

    def __init__(self, world: World, cfg: Config | None = None, *, fresh: bool = True) -> None:
        self.world = world
        self.config = cfg or config()
        self.logs: list[Log] = []
        self.published: dict[str, Any] | None = None
        self.wake: float | None = None
        self.needless = 0  # loads started while the loaded image described the topology
        self.busy_next = 0  # the reload lock is held by `crashhp reload` for so many tries
        if fresh:
            self.restart(saved=None)

    # ---- start, restart ---------------------------------------------------------------

    def restart(self, *, saved: persist.Saved | str | None = "published") -> None:
        """A start (a restart after SIGKILL: systemd kills the running tool with us)."""
        if self.world.load is not None:
            self.world.load = None  # killed half-way: it had unloaded
        if saved == "published":
            text = json.dumps(self.published) if self.published else "{}"
            saved = persist.Saved.model_validate(json.loads(text)) if self.published else None
        read = self._read(Purpose.DECIDE)
        assert not isinstance(saved, str)
        self.engine, effects = persist.resume(saved, read, self.config, rules(Arch.X86_64))
        for effect in effects:
            self._perform(effect)
        self._perform(Publish(self.engine.snapshot(self.world.now)))
        self.feed(Tick(self.world.now))

    # ---- inputs -----------------------------------------------------------------------

    def feed(self, first: Input) -> None:
        queue = [first]
        while queue:
            for effect in self.engine.handle(queue.pop(0)):
                answer = self._perform(effect)
                if answer is not None:
                    queue.append(answer)

    def events(self, *events: Uevent) -> None:
        self.feed(Uevents(self.world.now, tuple(events)))

    def lost(self) -> None:
        self.feed(Lost(self.world.now, self.world.seqnum, "overflow"))

    def sighup(self) -> None:
        self.feed(Reconfigured(self.world.now, self.config))

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: the tool ends and the engine wakes when they are due."""
        until = self.world.now + seconds
        while True:
            load = self.world.load
            due = [t for t in (self.wake, load.ends if load else None) if t is not None]
            nxt = min(due) if due else None
            if nxt is None or nxt > until:
                break
            self.world.now = max(self.world.now, nxt)
            if load is not None and self.world.now >= load.ends:
                self.feed(Exited(self.world.now, self.world.end()))
            self.feed(Tick(self.world.now))
        self.world.now = until

    def settle(self) -> None:
        """Quiescence: long enough for every retry and poll."""
        for _ in range(8):
            self.advance(30.0)

    # ---- effects ----------------------------------------------------------------------

    def _read(self, purpose: Purpose) -> KernelRead:
        w = self.world
        return KernelRead(w.now, purpose, w.state(), w.fp(), w.seqnum)

    def _perform(self, effect: Effect) -> Input | None:
        w = self.world
        match effect:
            case ReadKernel(purpose=purpose):
                return self._read(purpose)
            case MakePlan():
                return Planned(w.now, Plan(ReloadMethod.COMMAND, (TOOL,)))
            case Spawn():
                if self.busy_next:
                    self.busy_next -= 1
                    return Exited(w.now, Result(TOOL, None, 0.0, error="held", busy=True))
                if w.current and self.engine.image != UNKNOWN:
                    # (After someone else loaded one at a moment the engine cannot place
                    # among the changes, it loads once more: that one is not needless.)
                    self.needless += 1
                w.start()
            case Kill():
                if w.load is not None:
                    return Exited(w.now, w.killed())
            case Log():
                self.logs.append(effect)
            case Publish(snapshot=snapshot):
                self.published = persist.document(snapshot, pid=1, invocation_id=None)
            case WakeAt(at=at):
                self.wake = at
            case Unlock():
                pass
        return None

    # ---- what happened ----------------------------------------------------------------

    def protection(self) -> Protection:
        return self.engine.protection

    def decisions(self) -> list[str]:
        return [str(e.fields["decision"]) for e in self.logs if e.event == "burst"]

    def events_named(self, name: str) -> list[Log]:
        return [e for e in self.logs if e.event == name]
