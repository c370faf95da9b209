"""The decision: reload the crash kernel or not. Pure: no I/O, no clock, no logger."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

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
    NOT_LOADED = "not_loaded"
    OWED = "owed"
    POLICY_ALWAYS = "policy_always"
    KERNEL_UPDATES = "kernel_handles"
    NO_KERNEL_SUPPORT = "no_kernel_support"
    UNCONFIRMED_ZERO = "unconfirmed_zero"
    KERNEL_SAYS_RELOAD = "kernel_says_reload"

    @property
    def text(self) -> str:
        return _TEXT[self]


_TEXT = {
    Reason.POLICY_NEVER: "policy = never: observing only, no reload",
    Reason.NO_KEXEC: "this kernel has no kexec support (no /sys/kernel/kexec_crash_loaded)",
    Reason.NOT_LOADED: "no crash kernel is loaded; the next load will describe the new topology",
    Reason.OWED: "the last reload left no crash kernel loaded; loading one",
    Reason.POLICY_ALWAYS: "policy = always: reloading whatever the kernel says",
    Reason.KERNEL_UPDATES: "the kernel updates the crash kernel's elfcorehdr itself",
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


def decide(
    changed: Iterable[Subsystem],
    state: KernelState,
    policy: Policy,
    *,
    confirmed: bool = False,
    owed: bool = False,
) -> Decision:
    """Decide what a burst of changes to ``changed`` calls for.

    ``confirmed``: this state is the re-read after the settle time.
    ``owed``: an earlier reload of ours failed and left no crash kernel loaded.
    """
    subsystems = sorted(set(changed)) or sorted(Subsystem)
    stale = tuple(s for s in subsystems if state.verdict(s) is not Verdict.KERNEL_UPDATES)

    if policy is Policy.NEVER:
        return Decision(Action.SKIP, Reason.POLICY_NEVER, stale)
    if state.crash_loaded is None:
        return Decision(Action.SKIP, Reason.NO_KEXEC, stale)
    if not state.crash_loaded:
        if owed:
            return Decision(Action.RELOAD, Reason.OWED, stale)
        return Decision(Action.SKIP, Reason.NOT_LOADED, stale)
    if policy is Policy.ALWAYS:
        return Decision(Action.RELOAD, Reason.POLICY_ALWAYS, stale)
    if not stale:
        return Decision(Action.SKIP, Reason.KERNEL_UPDATES, stale)
    if any(state.verdict(s) is not Verdict.NEEDS_RELOAD for s in stale):
        return Decision(Action.RELOAD, Reason.NO_KERNEL_SUPPORT, stale)
    if not confirmed:
        return Decision(Action.CONFIRM, Reason.UNCONFIRMED_ZERO, stale)
    return Decision(Action.RELOAD, Reason.KERNEL_SAYS_RELOAD, stale)
