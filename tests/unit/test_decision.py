"""The decision, exhaustively: subsystems x crash_hotplug values x loaded x policy x flags."""

from __future__ import annotations

import itertools
from types import MappingProxyType

import pytest

from crashhp.decision import Action, Reason, decide
from crashhp.model import KernelState, Policy, Subsystem, Verdict

CPU, MEM = Subsystem.CPU, Subsystem.MEMORY
ONE, ZERO, ABSENT, UNREADABLE = (
    Verdict.KERNEL_UPDATES,
    Verdict.NEEDS_RELOAD,
    Verdict.ABSENT,
    Verdict.UNREADABLE,
)


def state(loaded: bool | None, cpu: Verdict = ONE, mem: Verdict = ONE) -> KernelState:
    return KernelState(crash_loaded=loaded, verdicts=MappingProxyType({CPU: cpu, MEM: mem}))


def test_examples() -> None:
    assert decide({CPU}, state(True, ONE, ONE), Policy.AUTO).reason is Reason.KERNEL_UPDATES
    assert decide({CPU}, state(True, ZERO, ONE), Policy.AUTO).action is Action.CONFIRM
    assert decide({CPU}, state(True, ZERO), Policy.AUTO, confirmed=True).action is Action.RELOAD
    assert decide({MEM}, state(True, ZERO, ONE), Policy.AUTO).action is Action.SKIP
    assert decide({MEM}, state(True, ONE, ABSENT), Policy.AUTO).reason is Reason.NO_KERNEL_SUPPORT
    assert decide({CPU}, state(False, ZERO, ZERO), Policy.AUTO).reason is Reason.NOT_LOADED
    assert decide({CPU}, state(False), Policy.AUTO, owed=True).reason is Reason.OWED
    assert decide({CPU}, state(None), Policy.ALWAYS).reason is Reason.NO_KEXEC
    assert decide({CPU}, state(True), Policy.ALWAYS).reason is Reason.POLICY_ALWAYS
    assert decide({CPU}, state(True, ZERO), Policy.NEVER).reason is Reason.POLICY_NEVER
    assert decide({CPU}, state(False), Policy.NEVER, owed=True).action is Action.SKIP
    # No subsystem named (a resync, or `crashhp reload`): every subsystem counts.
    assert decide(set(), state(True, ONE, ZERO), Policy.AUTO).stale == (MEM,)


VERDICTS = list(Verdict)
SUBSETS = [{CPU}, {MEM}, {CPU, MEM}]
CASES = list(
    itertools.product(
        SUBSETS, VERDICTS, VERDICTS, [None, False, True], list(Policy), [False, True], [False, True]
    )
)


@pytest.mark.parametrize(("changed", "cpu", "mem", "loaded", "policy", "confirmed", "owed"), CASES)
def test_exhaustive(
    changed: set[Subsystem],
    cpu: Verdict,
    mem: Verdict,
    loaded: bool | None,
    policy: Policy,
    confirmed: bool,
    owed: bool,
) -> None:
    verdicts = {CPU: cpu, MEM: mem}
    d = decide(changed, state(loaded, cpu, mem), policy, confirmed=confirmed, owed=owed)
    relevant = [verdicts[s] for s in sorted(changed)]
    assert d.stale == tuple(s for s in sorted(changed) if verdicts[s] is not ONE)
    if policy is Policy.NEVER:
        assert (d.action, d.reason) == (Action.SKIP, Reason.POLICY_NEVER)
    elif loaded is None:
        assert (d.action, d.reason) == (Action.SKIP, Reason.NO_KEXEC)
    elif loaded is False:
        expected = (Action.RELOAD, Reason.OWED) if owed else (Action.SKIP, Reason.NOT_LOADED)
        assert (d.action, d.reason) == expected
    elif policy is Policy.ALWAYS:
        assert (d.action, d.reason) == (Action.RELOAD, Reason.POLICY_ALWAYS)
    elif all(v is ONE for v in relevant):
        # The kernel keeps the header current for every subsystem that changed, even if
        # a subsystem that did not change reads otherwise.
        assert (d.action, d.reason) == (Action.SKIP, Reason.KERNEL_UPDATES)
    elif any(v in (ABSENT, UNREADABLE) for v in relevant):
        assert (d.action, d.reason) == (Action.RELOAD, Reason.NO_KERNEL_SUPPORT)
    elif not confirmed:
        assert (d.action, d.reason) == (Action.CONFIRM, Reason.UNCONFIRMED_ZERO)
    else:
        assert (d.action, d.reason) == (Action.RELOAD, Reason.KERNEL_SAYS_RELOAD)
    # Safety properties, whatever the branch:
    if d.action is Action.RELOAD:
        assert policy is not Policy.NEVER
        assert loaded or owed
    assert d.text  # every reason has words for the admin


def test_a_zero_is_only_trusted_after_confirmation() -> None:
    for changed in SUBSETS:
        first = decide(changed, state(True, ZERO, ZERO), Policy.AUTO)
        assert first.action is Action.CONFIRM
        # The kernel's trylock failed the first time; the re-read says 1: no reload.
        again = decide(changed, state(True, ONE, ONE), Policy.AUTO, confirmed=True)
        assert again.action is Action.SKIP


def test_a_one_seen_while_settling_wins_over_a_later_zero() -> None:
    zero = state(True, ZERO, ZERO)
    assert zero.seen_updating([]) is zero
    mixed = zero.seen_updating([MEM])
    assert (mixed.verdict(CPU), mixed.verdict(MEM)) == (ZERO, ONE)
    assert decide({MEM}, mixed, Policy.AUTO, confirmed=True).action is Action.SKIP
    assert decide({CPU}, mixed, Policy.AUTO, confirmed=True).action is Action.RELOAD
