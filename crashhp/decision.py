"""The decision: reload the crash kernel or not. A part of the engine. Pure: no I/O, no
clock, no logger.

The rule at its heart: **an image describes the topology that was read just before its
load started.** A reload is needed when the current topology differs from what the loaded
image describes, unless the kernel kept it current for every change since that image was
installed (crash_hotplug reads 1, and nothing changed while it was being loaded).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from crashhp.arch import Rules, fadump_needs_reregistration
from crashhp.model import KernelState, Policy, Subsystem, Verdict


class Action(enum.StrEnum):
    RELOAD = "reload"
    SKIP = "skip"
    # A crash_hotplug 0 can be a busy kexec lock (the kernel's read uses a trylock):
    # read again after a short settle and decide on that second read.
    CONFIRM = "confirm"


class Reason(enum.StrEnum):
    POLICY_NEVER = "policy_never"
    NO_KEXEC = "no_kexec"
    ARCH_NO_RELOAD = "arch_no_reload"
    FADUMP_HANDLES = "fadump_handles"
    FADUMP_REREGISTER = "fadump_reregister"
    NOT_LOADED = "not_loaded"
    OWED = "owed"
    RACED = "raced"
    POLICY_ALWAYS = "policy_always"
    COVERED = "covered"
    UNCHANGED = "unchanged"
    KERNEL_HANDLES = "kernel_handles"
    NO_KERNEL_SUPPORT = "no_kernel_support"
    UNCONFIRMED_ZERO = "unconfirmed_zero"
    KERNEL_SAYS_RELOAD = "kernel_says_reload"

    @property
    def text(self) -> str:
        return _TEXT[self]


_TEXT = {
    Reason.POLICY_NEVER: "policy = never: observing only, no reload",
    Reason.NO_KEXEC: "this kernel has no kexec support (no kexec crash_loaded file)",
    Reason.ARCH_NO_RELOAD: "this architecture builds the dump's ELF header at dump time",
    Reason.FADUMP_HANDLES: "firmware-assisted dump is registered and needs no reload for this",
    Reason.FADUMP_REREGISTER: "memory changed under fadump without hotplug_ready: "
    "re-registering it",
    Reason.NOT_LOADED: "no crash kernel is loaded; the next load will describe the new topology",
    Reason.OWED: "the last reload left no crash kernel loaded; loading one",
    Reason.RACED: "the topology changed while the crash kernel was being loaded: "
    "loading it once more, whatever crash_hotplug says",
    Reason.POLICY_ALWAYS: "policy = always: reloading whatever the kernel says",
    Reason.COVERED: "every event was sent before the last successful load started",
    Reason.UNCHANGED: "the topology equals the one the loaded crash kernel describes",
    Reason.KERNEL_HANDLES: "the kernel updates the crash kernel's elfcorehdr itself",
    Reason.NO_KERNEL_SUPPORT: "the kernel cannot tell (crash_hotplug absent or unreadable)",
    Reason.UNCONFIRMED_ZERO: "crash_hotplug read 0; re-reading after the settle time",
    Reason.KERNEL_SAYS_RELOAD: "crash_hotplug reads 0: the kernel cannot update the header",
}


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: Reason
    # The changed subsystems whose crash_hotplug did not read 1, in name order.
    stale: tuple[Subsystem, ...] = ()

    @property
    def text(self) -> str:
        return self.reason.text


@dataclass(frozen=True, slots=True)
class Facts:
    """What the engine knows about the loaded image beyond the kernel's files."""

    owed: bool = False  # our last reload left nothing loaded
    raced: bool = False  # the loaded image missed a change made while it was loaded
    unchanged: bool = False  # the topology equals what the loaded image describes
    covered: bool = False  # every event was sent before the last good load started


def decide(
    changed: Iterable[Subsystem],
    state: KernelState,
    policy: Policy,
    *,
    confirmed: bool = False,
    facts: Facts = Facts(),
    rules: Rules | None = None,
) -> Decision:
    """Decide what a burst of changes to ``changed`` calls for.

    ``confirmed``: this state is the re-read after the settle time.
    """
    subsystems = sorted(set(changed)) or sorted(Subsystem)
    stale = tuple(s for s in subsystems if state.verdict(s) is not Verdict.KERNEL_UPDATES)

    def skip(reason: Reason) -> Decision:
        return Decision(Action.SKIP, reason, stale)

    def reload(reason: Reason) -> Decision:
        return Decision(Action.RELOAD, reason, stale)

    if policy is Policy.NEVER:
        return skip(Reason.POLICY_NEVER)
    if rules is not None and rules.never_reload:
        return skip(Reason.ARCH_NO_RELOAD)
    fadump = state.fadump
    if fadump is not None and fadump.enabled:
        if not fadump.registered:
            return reload(Reason.OWED) if facts.owed else skip(Reason.NOT_LOADED)
        if fadump_needs_reregistration(fadump, frozenset(subsystems)):
            return reload(Reason.FADUMP_REREGISTER)
        return skip(Reason.FADUMP_HANDLES)
    if state.crash_loaded is None:
        return skip(Reason.NO_KEXEC)
    if not state.crash_loaded:
        return reload(Reason.OWED) if facts.owed else skip(Reason.NOT_LOADED)
    if policy is Policy.ALWAYS:
        return reload(Reason.POLICY_ALWAYS)
    if facts.unchanged:
        return skip(Reason.UNCHANGED)
    if facts.raced:
        return reload(Reason.RACED)
    if facts.covered:
        return skip(Reason.COVERED)
    if not stale:
        return skip(Reason.KERNEL_HANDLES)
    if any(state.verdict(s) is not Verdict.NEEDS_RELOAD for s in stale):
        return reload(Reason.NO_KERNEL_SUPPORT)
    if not confirmed:
        return Decision(Action.CONFIRM, Reason.UNCONFIRMED_ZERO, stale)
    return reload(Reason.KERNEL_SAYS_RELOAD)
