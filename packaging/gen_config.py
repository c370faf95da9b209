#!/usr/bin/env python3
"""Write the admin's /etc/crashhp/crashhp.toml from crashhp's config model.

Every key of ``crashhp.config.Config`` appears commented out at its default, with a
one-line explanation, so the shipped file never drifts from the model:
``tests/unit/test_packaging.py`` fails when ``packaging/crashhp.toml`` differs from
what this script writes. After changing the model, run::

    .venv/bin/python packaging/gen_config.py          # rewrite packaging/crashhp.toml
    .venv/bin/python packaging/gen_config.py --check  # exit 1 if it is stale

The explanation of a key is its ``Field(description=...)`` in the model if it has one,
else the entry in EXPLAIN below. Choices (enums) and bounds are added from the model.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from crashhp.config import Config

SHIPPED = Path(__file__).resolve().parent / "crashhp.toml"

# One line per key, for the admin reading /etc/crashhp/crashhp.toml. Keys the model
# does not have are an error, and so are model keys missing here (unless described).
EXPLAIN: dict[str, str] = {
    "policy": "When to reload after hotplug: auto = only when the kernel cannot update "
    "the crash kernel itself",
    "coalesce.quiet_ms": "Act on a burst of events after this many ms without a new one",
    "coalesce.max_delay_ms": "Act at the latest this many ms after a burst's first event",
    "coalesce.settle_ms": "Re-read a crash_hotplug of 0 over this many ms; any 1 read wins",
    "reload.method": "How to reload: auto = kdumpctl or kdump-config, whichever is installed",
    "reload.command": 'argv for method = "command", absolute program path first, no shell',
    "reload.timeout_s": "Seconds one reload command may take; then its process group is killed",
    "reload.retries": "Further attempts after a failed reload",
    "reload.backoff_initial_s": "Seconds before the first retry; doubles for each further one",
    "reload.backoff_max_s": "Upper bound of the retry delay, in seconds",
    "kexec.program": "kexec-tools binary, looked up in the sbin directories unless absolute",
    "kexec.kernel": 'Crash kernel ("" = /boot/vmlinuz-<release>); all three "" = the distro\'s '
    "recorded command",
    "kexec.initrd": "Crash kernel initrd: required once kernel or cmdline is set (never guessed)",
    "kexec.cmdline": '"" = /proc/cmdline without crashkernel= and the like, plus append',
    "kexec.append": "Added to the crash kernel's command line built from /proc/cmdline",
    "kexec.syscall": "auto = kexec -c --hotplug where allowed, else kexec -a; "
    "file = kexec -s; classic = kexec -c",
    "kexec.hotplug": "Pass --hotplug to kexec_load when both the kernel and kexec-tools allow it",
    "kexec.upgrade": "Reload a crash kernel loaded without hotplug support once, hotplug-capably, "
    "so later events need no reload",
    "events.source": "udev = events after udev processed them; kernel = raw kernel uevents",
    "events.receive_buffer_bytes": "Netlink receive buffer; an overflow rebuilds the monitor "
    "and re-reads sysfs",
    "log.level": "Least severe messages logged",
    "log.format": "auto = journal under systemd, console on a terminal, json otherwise",
}

HEADER = """\
# crashhp: keep the kdump crash kernel valid across CPU and memory hotplug.
#
# Every key is shown commented out at its default. To change one, uncomment it
# here, or better, put it in a drop-in /etc/crashhp/crashhp.d/NAME.toml (read
# after this file, in name order; later files win). Check the result with
# `crashhp check-config`, apply it with `systemctl reload crashhp`.
# The files must be owned by root and writable by no one else. See crashhp.toml(5).
#
# This file is generated from crashhp's config model (packaging/gen_config.py).
"""


class ModelDrift(Exception):
    """The model and EXPLAIN disagree: a key without explanation, or a stale one."""


def toml_value(value: object) -> str:
    """``value`` as a TOML literal (the subset the model's defaults use)."""
    if isinstance(value, enum.Enum):
        return toml_value(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _bounds(info: FieldInfo) -> str:
    """``0 to 600000``, ``> 0, <= 3600``: the limits the model enforces."""
    limits: dict[str, object] = {}
    for meta in info.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if getattr(meta, attr, None) is not None:
                limits[attr] = getattr(meta, attr)
    if limits.keys() == {"ge", "le"}:
        return f"{limits['ge']} to {limits['le']}"
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return ", ".join(f"{signs[attr]} {value}" for attr, value in limits.items())


def _explain(dotted: str, info: FieldInfo, default: object) -> str:
    text = info.description or EXPLAIN.get(dotted)
    if not text:
        raise ModelDrift(f"{dotted}: no explanation (add it to EXPLAIN in {__file__})")
    if isinstance(default, enum.Enum):
        text += " (" + " | ".join(str(m.value) for m in type(default)) + ")"
    elif bounds := _bounds(info):
        text += f" ({bounds})"
    return f"# {text}."


def iter_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """(dotted key, field) for every leaf key of ``model``, in declaration order."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def render(model: type[BaseModel] = Config) -> str:
    """The shipped file's text for ``model``."""
    defaults = model()
    fields = list(iter_fields(model))
    # Top-level keys first: in TOML a key after a [table] header belongs to that table.
    keys = dict(sorted(fields, key=lambda item: "." in item[0]))
    stale = sorted(set(EXPLAIN) - set(keys))
    if stale:
        raise ModelDrift(f"EXPLAIN has keys the model does not: {', '.join(stale)}")
    out = [HEADER]
    section = ""
    for dotted, info in keys.items():
        parent, _, name = dotted.rpartition(".")
        value: object = defaults
        for part in dotted.split("."):
            value = getattr(value, part)
        if parent != section:
            section = parent
            out.append(f"\n[{section}]\n")
        else:
            out.append("\n")
        out.append(f"{_explain(dotted, info, value)}\n#{name} = {toml_value(value)}\n")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=SHIPPED, metavar="FILE")
    args = parser.parse_args(argv)
    try:
        text = render()
    except ModelDrift as exc:
        print(f"gen_config: {exc}", file=sys.stderr)
        return 1
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"gen_config: {args.output} is stale; run {__file__}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
