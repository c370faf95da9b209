"""The decision, exhaustively: subsystems x crash_hotplug values x loaded x policy x facts;
and the architectures' rules."""

from __future__ import annotations

import itertools
from types import MappingProxyType

import pytest

from crashhp.arch import Arch, arch_of, rules
from crashhp.decision import Action, Facts, Reason, decide
from crashhp.model import Fadump, KernelState, Policy, Subsystem, Verdict

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
    assert decide({CPU}, state(True, ONE, ONE), Policy.AUTO).reason is Reason.KERNEL_HANDLES
    assert decide({CPU}, state(True, ZERO, ONE), Policy.AUTO).action is Action.CONFIRM
    assert decide({CPU}, state(True, ZERO), Policy.AUTO, confirmed=True).action is Action.RELOAD
    assert decide({MEM}, state(True, ZERO, ONE), Policy.AUTO).action is Action.SKIP
    assert decide({MEM}, state(True, ONE, ABSENT), Policy.AUTO).reason is Reason.NO_KERNEL_SUPPORT
    assert decide({CPU}, state(False, ZERO, ZERO), Policy.AUTO).reason is Reason.NOT_LOADED
    assert decide({CPU}, state(False), Policy.AUTO, facts=Facts(owed=True)).reason is Reason.OWED
    assert decide({CPU}, state(None), Policy.ALWAYS).reason is Reason.NO_KEXEC
    assert decide({CPU}, state(True), Policy.ALWAYS).reason is Reason.POLICY_ALWAYS
    assert decide({CPU}, state(True, ZERO), Policy.NEVER).reason is Reason.POLICY_NEVER
    assert decide({CPU}, state(False), Policy.NEVER, facts=Facts(owed=True)).action is Action.SKIP
    # No subsystem named (a resync, or `crashhp reload`): every subsystem counts.
    assert decide(set(), state(True, ONE, ZERO), Policy.AUTO).stale == (MEM,)


VERDICTS = list(Verdict)
SUBSETS = [{CPU}, {MEM}, {CPU, MEM}]
CASES = list(
    itertools.product(
        SUBSETS,
        VERDICTS,
        VERDICTS,
        [None, False, True],
        list(Policy),
        [False, True],
        [Facts(o, r, u, c) for o, r, u, c in itertools.product([False, True], repeat=4)],
    )
)


@pytest.mark.parametrize(("changed", "cpu", "mem", "loaded", "policy", "confirmed", "facts"), CASES)
def test_exhaustive(
    changed: set[Subsystem],
    cpu: Verdict,
    mem: Verdict,
    loaded: bool | None,
    policy: Policy,
    confirmed: bool,
    facts: Facts,
) -> None:
    verdicts = {CPU: cpu, MEM: mem}
    owed = facts.owed
    d = decide(changed, state(loaded, cpu, mem), policy, confirmed=confirmed, facts=facts)
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
    elif facts.unchanged:
        # The topology is what the loaded image describes: nothing to do, whatever it says.
        assert (d.action, d.reason) == (Action.SKIP, Reason.UNCHANGED)
    elif facts.raced:
        # The image missed a change made during its load: crash_hotplug cannot help.
        assert (d.action, d.reason) == (Action.RELOAD, Reason.RACED)
    elif facts.covered:
        assert (d.action, d.reason) == (Action.SKIP, Reason.COVERED)
    elif all(v is ONE for v in relevant):
        # The kernel keeps the header current for every subsystem that changed, even if
        # a subsystem that did not change reads otherwise.
        assert (d.action, d.reason) == (Action.SKIP, Reason.KERNEL_HANDLES)
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


def test_architectures() -> None:
    assert arch_of("x86_64") is Arch.X86_64
    assert arch_of("ppc64le") is Arch.PPC64
    assert arch_of("s390x") is Arch.S390X
    assert arch_of("aarch64") is Arch.OTHER
    # x86: a note per present CPU, online/offline changes nothing; ppc64: the device tree
    # lists online CPUs (a hot-added CPU arrives as `online`).
    assert not rules(Arch.X86_64).online_cpus_count
    assert rules(Arch.PPC64).online_cpus_count
    assert rules(Arch.OTHER).online_cpus_count
    s390 = rules(Arch.S390X)
    assert s390.never_reload is not None
    assert "kdump kernel" in s390.never_reload
    for loaded in (True, False):
        d = decide({MEM}, state(loaded, ZERO, ZERO), Policy.AUTO, confirmed=True, rules=s390)
        assert (d.action, d.reason) == (Action.SKIP, Reason.ARCH_NO_RELOAD)
    x86 = decide(
        {MEM}, state(True, ZERO, ZERO), Policy.AUTO, confirmed=True, rules=rules(Arch.X86_64)
    )
    assert x86.reason is Reason.KERNEL_SAYS_RELOAD


def fadump(enabled: bool, registered: bool, ready: bool) -> KernelState:
    return KernelState(
        crash_loaded=False,
        verdicts=MappingProxyType({CPU: ZERO, MEM: ZERO}),
        fadump=Fadump(enabled, registered, ready),
    )


def test_fadump() -> None:
    """kexec_crash_loaded reads 0 under fadump: protected all the same; a memory change
    needs a re-registration unless hotplug_ready reads 1."""
    assert fadump(True, True, False).protected
    assert not fadump(True, False, False).protected
    d = decide({MEM}, fadump(True, True, False), Policy.AUTO)
    assert (d.action, d.reason) == (Action.RELOAD, Reason.FADUMP_REREGISTER)
    assert decide({MEM}, fadump(True, True, True), Policy.AUTO).reason is Reason.FADUMP_HANDLES
    assert decide({CPU}, fadump(True, True, False), Policy.AUTO).reason is Reason.FADUMP_HANDLES
    assert decide({MEM}, fadump(True, False, False), Policy.AUTO).reason is Reason.NOT_LOADED
    owed = decide({MEM}, fadump(True, False, False), Policy.AUTO, facts=Facts(owed=True))
    assert owed.reason is Reason.OWED
    # Present but not enabled: kexec's rules.
    assert decide({MEM}, fadump(False, False, False), Policy.AUTO).reason is Reason.NOT_LOADED
