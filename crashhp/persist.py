"""state.json: a versioned model of what a restart needs, plus the published snapshot;
and the pure resume of an engine from it.

What a restart needs: what the loaded image describes (``image``, also written as
``loaded_topology`` for readers of version 1), whether a crash kernel is owed (``owed``,
``reloading``), and whether the upgrade was given up. The record is never overwritten by
nothing: a restart that finds the topology changed keeps the old record, so that a second
restart before the owed reload still knows.

The fingerprint's RAM part changed (crashhp.kernel.topology: memory blocks instead of
/proc/iomem) without a new version: a record from before never matches its RAM part, so
the first start after that upgrade takes it for a memory change while it was down, and
reloads once unless the kernel keeps the image current. That costs one reload where a
new version (dropping the old fingerprint, taking the loaded image for current) could
have missed a change made while no crashhp ran, and an older crashhp still reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from crashhp.arch import Rules
from crashhp.coalesce import Gathering
from crashhp.config import Config
from crashhp.engine import POLL_S, Engine, protection_of
from crashhp.messages import UNKNOWN, Effect, Image, KernelRead, Log, Snapshot
from crashhp.model import Protection, Subsystem, Verdict
from crashhp.phase import Coalescing, Idle
from crashhp.runtime import STATE_FILE

__all__ = ["STATE_FILE", "VERSION", "Saved", "document", "read", "read_report", "resume", "write"]

VERSION: Literal[2] = 2


class ImageRecord(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    fingerprint: str
    seqnum: int | None = None
    complete: bool = True


class Saved(BaseModel):
    """The part of state.json that a restart reads."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    version: Literal[2]
    image: ImageRecord | None = None
    owed: bool = False
    reloading: bool = False
    upgrade_given_up: bool = False


class _SavedV1(BaseModel):
    """Version 1 (no ``version`` key). Its fingerprint hashed online CPUs on every
    architecture, so its ``loaded_topology`` cannot be compared and is dropped."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    owed: bool = False
    reloading: bool = False


def read(directory: Path) -> Saved | None:
    """The previous instance's record, or None when there is none or it is damaged."""
    try:
        data = json.loads((directory / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        if "version" not in data:
            old = _SavedV1.model_validate(data)
            return Saved(version=VERSION, owed=old.owed, reloading=old.reloading)
        return Saved.model_validate(data)
    except ValidationError:
        return None


def read_report(directory: Path) -> dict[str, Any] | None:
    """The whole state.json as a dict (for `crashhp status`), or None."""
    try:
        data = json.loads((directory / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _plain(value: Any) -> Any:
    """Dataclasses and read-only mappings as JSON's dicts."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def document(
    snapshot: Snapshot, *, pid: int, invocation_id: str | None, runner_error: str | None = None
) -> dict[str, Any]:
    """``runner_error``: why the reload runner cannot reload here (crashhp.runners)."""
    image = snapshot.image
    return {
        "version": VERSION,
        "loaded_topology": None if image is None else image.fingerprint,
        "pid": pid,
        "invocation_id": invocation_id,
        "runner_error": runner_error,
        **_plain(snapshot),
    }


def write(
    directory: Path,
    snapshot: Snapshot,
    *,
    pid: int,
    invocation_id: str | None,
    runner_error: str | None = None,
) -> None:
    """Replace state.json whole (a temporary file renamed over it); OSError on failure."""
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    text = json.dumps(
        document(snapshot, pid=pid, invocation_id=invocation_id, runner_error=runner_error),
        indent=1,
    )
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def resume(
    saved: Saved | None, read_now: KernelRead, config: Config, rules: Rules
) -> tuple[Engine, list[Effect]]:
    """The engine a start begins with, from the previous record and one kernel read."""
    now, state = read_now.now, read_now.state
    record = saved.image if saved else None
    image = None if record is None else Image(record.fingerprint, record.seqnum, record.complete)
    engine = Engine(
        config,
        rules,
        image=image,
        upgrade_given_up=bool(saved and saved.upgrade_given_up),
    )
    engine.ledger.observe(state, now)
    effects: list[Effect] = []
    everything = Coalescing(Gathering.everything(now))
    if state.crash_loaded is None and not state.fadump:
        engine.protection = Protection.NO_KEXEC
    elif state.protected:
        engine.protection = protection_of(state)
        if saved is not None and (saved.owed or saved.reloading):
            # We left nothing loaded (or died loading) and someone else loaded one since,
            # at a moment we cannot place among the changes: loaded once more.
            engine.image = UNKNOWN
            engine.phase = everything
        elif image is None:
            # First start: the loaded image is taken to describe the topology of now.
            engine.image = Image(read_now.fingerprint, read_now.seqnum)
        elif image.fingerprint != read_now.fingerprint or not image.complete:
            # We died (or were stopped) after the topology changed and before the crash
            # kernel was reloaded for it: a burst of every subsystem. The old record stays.
            effects.append(
                Log(
                    "info",
                    "topology_changed_while_down",
                    {
                        "text": "the topology differs from the one the loaded crash kernel "
                        "was recorded to describe (changed while crashhp was not running, "
                        "or recorded by an older crashhp): deciding as after a burst",
                        "recorded": image.fingerprint,
                        "current": read_now.fingerprint,
                        "complete": image.complete,
                    },
                )
            )
            engine.phase = everything
        wants_upgrade = any(state.verdict(s) is Verdict.NEEDS_RELOAD for s in Subsystem)
        if config.kexec.upgrade and wants_upgrade and not engine.upgrade_given_up:
            effects.append(
                Log(
                    "info",
                    "upgrade_scheduled",
                    {
                        "text": "crash kernel loaded without hotplug support; reloading it "
                        "hotplug-capably (kexec.upgrade = true)"
                    },
                )
            )
            engine.upgrade_wanted = True
            engine.phase = everything
    elif saved is not None and (saved.owed or saved.reloading):
        # The previous instance died during a reload (or after a failed one): the unload
        # may have happened and the load not; the crash kernel is owed.
        engine.owed = True
        engine.protection = Protection.UNPROTECTED
        engine.phase = everything
    else:
        engine.protection = Protection.NOT_LOADED
        engine.phase = Idle(poll_at=now + POLL_S)
    return engine, effects
