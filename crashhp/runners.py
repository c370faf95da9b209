"""Which runner a reload step runs under: directly, or as a transient systemd unit.

``reload.runner = "auto"`` runs each step as its own transient service where systemd is
PID 1 (crashhp.transient builds the argv), and as a child of crashhp elsewhere (the
netlink and fault test hosts, containers). A transient step is supervised twice: PID 1
kills its cgroup when ``RuntimeMaxSec=`` expires, and the engine's own timeout stops the
unit and kills the waiting ``systemd-run`` client.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from crashhp import process, transient
from crashhp.config import Config, Runner
from crashhp.process import DirectRunner, Process, Result

# systemctl kill/stop of a unit that runs away: they only ask PID 1, which answers at once.
SYSTEMCTL_TIMEOUT_S = 10.0
_ids = itertools.count(1)
CAP_SYS_BOOT = 22  # linux/capability.h: kexec_load and kexec_file_load need it
DIRECT_DROPIN = "/usr/share/doc/crashhp/examples/direct-runner.conf"


class TransientProcess:
    """A reload step running as ``crashhp-reload-<id>.service``; the client is our child."""

    def __init__(self, argv: Sequence[str], plan: transient.TransientReload, client: Process):
        self.argv = tuple(argv)
        self.plan = plan
        self._client = client
        self._killed = False

    def fileno(self) -> int:
        return self._client.fileno()

    def exited(self) -> bool:
        return self._client.exited()

    def kill(self) -> None:
        """The engine's timeout: kill the unit's whole cgroup, then the waiting client."""
        self._killed = True
        process.run(self.plan.kill_argv, SYSTEMCTL_TIMEOUT_S)
        process.run(self.plan.stop_argv, SYSTEMCTL_TIMEOUT_S)
        self._client.kill()

    def finish(self) -> Result:
        client = self._client.finish()
        summary = transient.parse_summary(client.output)
        timed_out = self._killed or client.timed_out or bool(summary and summary.timed_out)
        error = client.error
        if error is None and summary is None and not timed_out and client.returncode != 0:
            # systemd-run never started the unit: its own message says why.
            lines = client.output.strip().splitlines()
            error = f"systemd-run: {lines[-1] if lines else f'exit status {client.returncode}'}"
        output = f"{client.output}\n(the tool's own output: journalctl -u {self.plan.unit})"
        return Result(
            argv=self.argv,
            returncode=None if timed_out or error else client.returncode,
            duration_s=client.duration_s,
            output=output.strip(),
            timed_out=timed_out,
            error=error,
        )


class TransientRunner:
    """Each step a transient unit of its own, started and awaited by ``systemd-run``."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        systemd_run: str = transient.SYSTEMD_RUN,
        systemctl: str = transient.SYSTEMCTL,
    ) -> None:
        self._clock = clock
        self._programs = {"systemd_run": systemd_run, "systemctl": systemctl}

    def start(self, argv: Sequence[str], timeout_s: float) -> Process | Result:
        env = {k: v for k, v in process.environment().items() if k != "PATH"}
        reload_id = f"{os.getpid()}-{next(_ids)}-{int(time.time())}"
        try:
            plan = transient.plan(
                argv, reload_id=reload_id, timeout_s=timeout_s, env=env, **self._programs
            )
        except ValueError as exc:
            return Result(tuple(argv), None, 0.0, error=str(exc))
        client = process.start(plan.argv, plan.wait_timeout_s, self._clock)
        if isinstance(client, Result):
            return Result(tuple(argv), None, 0.0, error=client.error)
        return TransientProcess(argv, plan, client)


def for_config(config: Config, clock: Callable[[], float] = time.monotonic) -> process.Runner:
    """The runner ``reload.runner`` asks for here."""
    kind = transient.resolve_runner(config.reload.runner, transient.systemd_available())
    if kind is Runner.TRANSIENT:
        return TransientRunner(clock)
    return DirectRunner(clock)


def direct_unprivileged(runner: Runner, *, under_systemd: bool, cap_eff: int | None) -> str | None:
    """Why reload steps run as crashhp's children cannot reload here; None if they can.

    ``runner`` is the resolved one (never ``auto``); ``cap_eff`` the effective capability
    set (None: unknown). Only under systemd: crashhp.service grants no CAP_SYS_BOOT, so
    every kexec a direct step runs fails with EPERM. Elsewhere (a container, a test host
    with stand-in tools) the admin chose the privileges and crashhp does not guess.
    """
    if runner is not Runner.DIRECT or not under_systemd or cap_eff is None:
        return None
    if cap_eff >> CAP_SYS_BOOT & 1:
        return None
    return (
        'reload.runner = "direct", but crashhp.service has no CAP_SYS_BOOT: every reload '
        'will fail with EPERM; use reload.runner = "auto" (a transient unit per reload), '
        f"or install {DIRECT_DROPIN} as a drop-in for crashhp.service"
    )


def effective_capabilities(procfs: Path = Path("/proc")) -> int | None:
    """This process' CapEff from ``/proc/self/status``; None if it cannot be read."""
    try:
        with (procfs / "self" / "status").open() as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split(":", 1)[1], 16)
    except (OSError, ValueError):
        return None
    return None


def direct_check(
    config: Config, *, under_systemd: bool, procfs: Path = Path("/proc")
) -> str | None:
    """``direct_unprivileged`` for this process and ``config``: the I/O around it."""
    runner = transient.resolve_runner(config.reload.runner, transient.systemd_available())
    cap_eff = effective_capabilities(procfs) if runner is Runner.DIRECT else None
    return direct_unprivileged(runner, under_systemd=under_systemd, cap_eff=cap_eff)
