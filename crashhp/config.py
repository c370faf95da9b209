"""The admin's config: TOML layers validated by a frozen pydantic model.

Layers, later wins: the model's defaults (packaged) < ``/etc/crashhp/crashhp.toml`` <
``/etc/crashhp/crashhp.d/*.toml`` in name order. ``--config FILE`` replaces the layering.
The config names commands that run as root, so a file is refused when anyone but root
(or the invoking user) can write it or any directory from / down to it; the descriptor
that is read is the one checked (crashhp.configfile).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from crashhp.configfile import MAX_FILE_BYTES, ConfigError, open_checked, read_toml
from crashhp.model import Policy

__all__ = ["MAX_FILE_BYTES", "ConfigError", "LoadedConfig", "load_config"]

ETC_DIR = Path("/etc/crashhp")
DEFAULTS = "(defaults)"


class ReloadMethod(enum.StrEnum):
    AUTO = "auto"
    KDUMPCTL = "kdumpctl"
    KDUMP_CONFIG = "kdump-config"
    COMMAND = "command"
    KEXEC = "kexec"  # crashhp's own load with kexec-tools, from the [kexec] section


class EventSource(enum.StrEnum):
    UDEV = "udev"
    KERNEL = "kernel"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(enum.StrEnum):
    AUTO = "auto"
    JOURNAL = "journal"
    CONSOLE = "console"
    JSON = "json"


class Runner(enum.StrEnum):
    AUTO = "auto"  # transient when systemd is PID 1 and reachable, else direct
    TRANSIENT = "transient"  # each reload step as a transient unit (systemd-run)
    DIRECT = "direct"  # a child of the daemon, in its own process group


class MetricsEnabled(enum.StrEnum):
    AUTO = "auto"  # write the textfile when its directory exists
    YES = "yes"
    NO = "no"


class KexecSyscall(enum.StrEnum):
    AUTO = "auto"  # kexec -c --hotplug where allowed, else kexec -a (see kexec.py)
    FILE = "file"  # kexec -s: kexec_file_load (the kernel keeps the header current)
    CLASSIC = "classic"  # kexec -c: kexec_load (+ --hotplug where kernel and tools allow)


# TOML is typed: a number where a number belongs. Without Strict(), pydantic would take
# `quiet_ms = true` for 1, `timeout_s = "10"` for 10.0 and `upgrade = "yes"` for True.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # an integer is a number too: timeout_s = 10 is fine
Bool = Annotated[bool, Strict()]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class Coalesce(_Section):
    quiet_ms: Annotated[Int, Field(ge=0, le=600_000)] = 500
    max_delay_ms: Annotated[Int, Field(ge=0, le=3_600_000)] = 5000
    settle_ms: Annotated[Int, Field(ge=0, le=60_000)] = 200


class Reload(_Section):
    method: ReloadMethod = ReloadMethod.AUTO
    command: tuple[str, ...] = ()
    timeout_s: Annotated[Float, Field(gt=0, le=3600)] = 120.0
    retries: Annotated[Int, Field(ge=0, le=100)] = 5
    backoff_initial_s: Annotated[Float, Field(gt=0, le=3600)] = 1.0
    backoff_max_s: Annotated[Float, Field(gt=0, le=86_400)] = 60.0
    runner: Runner = Field(
        default=Runner.AUTO,
        description="Where a reload command runs: transient = its own systemd unit "
        "(systemd-run); direct = a child of the daemon (under the packaged unit only with "
        "/usr/share/doc/crashhp/examples/direct-runner.conf as a drop-in); auto = "
        "transient when systemd is PID 1",
    )

    @field_validator("command")
    @classmethod
    def _command_absolute(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value and not value[0].startswith("/"):
            raise ValueError("the program must be an absolute path (nothing is looked up on PATH)")
        if any("\0" in arg for arg in value):
            raise ValueError("arguments may not contain NUL bytes")
        return value


class Kexec(_Section):
    """How crashhp loads a crash kernel itself (``reload.method = "kexec"``, upgrades).

    With kernel, initrd and cmdline all "", the load is the distribution's own dump
    command (kdump-tools' recorded one; see distro.py). Set any of them and crashhp loads
    from these keys alone, with kernel defaulting to /boot/vmlinuz-<running release> and
    cmdline to /proc/cmdline without crashkernel= and the like plus ``append``; the
    initrd must then be given.
    """

    program: str = "kexec"  # looked up in the sbin directories unless absolute
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    append: str = "irqpoll nr_cpus=1 reset_devices"
    syscall: KexecSyscall = KexecSyscall.AUTO
    hotplug: Bool = True  # pass --hotplug to kexec_load when the kernel and kexec allow it
    # Reload a crash kernel that was loaded without hotplug support once, hotplug-capably,
    # so that the kernel keeps it current and later events need no reload.
    upgrade: Bool = False

    # All of them end up in kexec's argv; a NUL would stop the reload from starting.
    @field_validator("kernel", "initrd", "program", "cmdline", "append")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("may not contain NUL bytes")
        return value


class Events(_Section):
    source: EventSource = EventSource.UDEV
    receive_buffer_bytes: Annotated[Int, Field(ge=1 << 16, le=1 << 30)] = 128 << 20


class Metrics(_Section):
    """The node_exporter textfile (see crashhp.metrics)."""

    enabled: MetricsEnabled = Field(
        default=MetricsEnabled.AUTO,
        description="Write the metrics textfile; auto = only when its directory exists "
        "(node_exporter's package creates it)",
    )
    textfile: str = Field(
        default="/var/lib/prometheus/node-exporter/crashhp.prom",
        description="The file node_exporter's textfile collector reads; absolute, ending in .prom",
    )
    interval_s: Annotated[Float, Field(ge=1, le=3600)] = Field(
        default=30.0,
        description="Rewrite it at least this often, so that an alert on "
        "node_textfile_mtime_seconds sees a stopped daemon",
    )

    @field_validator("textfile")
    @classmethod
    def _textfile_path(cls, value: str) -> str:
        if not value.startswith("/") or not value.endswith(".prom") or "\0" in value:
            raise ValueError("must be an absolute path ending in .prom")
        return value


class Log(_Section):
    level: LogLevel = LogLevel.INFO
    format: LogFormat = LogFormat.AUTO


class Config(_Section):
    policy: Policy = Policy.AUTO
    coalesce: Coalesce = Coalesce()
    reload: Reload = Reload()
    kexec: Kexec = Kexec()
    events: Events = Events()
    metrics: Metrics = Metrics()
    log: Log = Log()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.coalesce.max_delay_ms < self.coalesce.quiet_ms:
            raise _CrossFieldError("coalesce.max_delay_ms", "must be >= coalesce.quiet_ms")
        if self.reload.method is ReloadMethod.COMMAND and not self.reload.command:
            raise _CrossFieldError("reload.command", 'method = "command" needs a command')
        if self.reload.backoff_max_s < self.reload.backoff_initial_s:
            raise _CrossFieldError("reload.backoff_max_s", "must be >= reload.backoff_initial_s")
        return self


class _CrossFieldError(ValueError):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where each of its set keys came from."""

    config: Config
    files: tuple[Path, ...]
    origin: Mapping[str, str] = field(default_factory=dict)

    def source_of(self, key: str) -> str:
        return self.origin.get(key, DEFAULTS)


def load_config(path: Path | None = None, *, etc: Path = ETC_DIR) -> LoadedConfig:
    """Load ``path`` alone, or the layered files under ``etc``. Raises ConfigError."""
    if path is not None:
        files = [path]
    else:
        files = []
        main = etc / "crashhp.toml"
        if main.exists() or main.is_symlink():
            files.append(main)
        dropins = etc / "crashhp.d"
        if dropins.is_dir():
            fd = open_checked(dropins, directory=True)
            try:
                names = os.listdir(fd)
            finally:
                os.close(fd)
            files.extend(
                dropins / name
                for name in sorted(names)
                if name.endswith(".toml") and not name.startswith(".")
            )
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for file in files:
        data = read_toml(file)
        _validate_alone(file, data)
        _merge(merged, data, origin, str(file))
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        key, reason = _first_error(exc)
        raise ConfigError(origin.get(key, files[-1] if files else DEFAULTS), key, reason) from None
    return LoadedConfig(config=config, files=tuple(files), origin=origin)


def _validate_alone(path: Path, data: Mapping[str, Any]) -> None:
    """Type-check one layer on its own so an error names the file that has it."""
    try:
        Config.model_validate(data)
    except ValidationError as exc:
        key, reason = _first_error(exc)
        if _is_cross_field(exc):
            return  # may be completed by another layer; checked after merging
        raise ConfigError(path, key, reason) from None


def _is_cross_field(exc: ValidationError) -> bool:
    return all(
        isinstance((err.get("ctx") or {}).get("error"), _CrossFieldError) for err in exc.errors()
    )


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    cross = (err.get("ctx") or {}).get("error")
    if isinstance(cross, _CrossFieldError):
        return cross.key, cross.reason
    key = ".".join(str(part) for part in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return key, "unknown key"
    if err["type"] == "missing":
        return key, "missing"
    reason = err["msg"]
    if err["type"] not in {"model_type", "dict_type"} and "input" in err:
        reason += f" (got {_short(err['input'])})"
    return key, reason


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _merge(
    into: dict[str, Any],
    layer: Mapping[str, Any],
    origin: dict[str, str],
    source: str,
    prefix: str = "",
) -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, source, dotted + ".")
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
            _record(origin, dotted, value, source)


def _record(origin: dict[str, str], dotted: str, value: object, source: str) -> None:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _record(origin, f"{dotted}.{key}", sub, source)
    else:
        origin[dotted] = source


def flatten(config: Config) -> dict[str, object]:
    """``{"reload.method": "auto", ...}``: the effective values, for ``status``."""
    out: dict[str, object] = {}

    def walk(prefix: str, model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(f"{prefix}{name}.", value)
            elif isinstance(value, enum.Enum):
                out[f"{prefix}{name}"] = value.value
            elif isinstance(value, tuple):
                out[f"{prefix}{name}"] = list(value)
            else:
                out[f"{prefix}{name}"] = value

    walk("", config)
    return out


def describe_sources(loaded: LoadedConfig) -> Sequence[tuple[str, object, str]]:
    """(key, value, where it came from) for every key, in order."""
    return [(k, v, loaded.source_of(k)) for k, v in flatten(loaded.config).items()]
