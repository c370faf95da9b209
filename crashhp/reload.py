"""How a reload is done: the configured method as argv steps, and the retry policy."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from crashhp.config import Reload, ReloadMethod
from crashhp.process import SAFE_PATH

# What each distribution's tool calls its own unload-then-load.
TOOL_STEPS: dict[ReloadMethod, tuple[str, ...]] = {
    ReloadMethod.KDUMPCTL: ("kdumpctl", "reload"),  # Fedora, RHEL, CentOS (kdump-utils)
    ReloadMethod.KDUMP_CONFIG: ("kdump-config", "reload"),  # Debian, Ubuntu (kdump-tools)
}


class NoReloadMethod(Exception):
    """No way to reload was configured or found."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The commands one reload runs, in order; each must succeed."""

    method: ReloadMethod
    steps: tuple[tuple[str, ...], ...]

    def describe(self) -> str:
        return " && ".join(" ".join(step) for step in self.steps)


def which(program: str, path: str | None = None) -> str | None:
    return shutil.which(program, path=path or SAFE_PATH)


def resolve_method(reload: Reload, path: str | None = None) -> ReloadMethod:
    """The method ``auto`` stands for here: the distro tool that is installed."""
    if reload.method is not ReloadMethod.AUTO:
        return reload.method
    for method, (tool, *_) in TOOL_STEPS.items():
        if which(tool, path):
            return method
    raise NoReloadMethod(
        "no kdumpctl or kdump-config found; set reload.method "
        '(for example method = "command" with command = [...])'
    )


def plan(reload: Reload, path: str | None = None) -> Plan:
    method = resolve_method(reload, path)
    if method is ReloadMethod.COMMAND:
        return Plan(method, (reload.command,))
    tool, *args = TOOL_STEPS[method]
    found = which(tool, path)
    if found is None:
        raise NoReloadMethod(f"reload.method = {method.value!r} but {tool} is not installed")
    return Plan(method, ((found, *args),))


def backoff_s(reload: Reload, attempt: int) -> float:
    """Delay before retry number ``attempt`` (1-based): doubling, capped."""
    delay: float = reload.backoff_initial_s * 2.0 ** max(0, attempt - 1)
    return min(delay, reload.backoff_max_s)
