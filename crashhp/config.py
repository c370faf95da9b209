"""The admin's config: TOML layers validated by a frozen pydantic model.

Layers, later wins: the model's defaults (packaged) < ``/etc/crashhp/crashhp.toml`` <
``/etc/crashhp/crashhp.d/*.toml`` in name order. ``--config FILE`` replaces the layering.
The config names commands that run as root, so a file is refused when anyone but root
(or the invoking user) can write it or any directory from / down to it; the descriptor
that is read is the one checked (see _open_checked).
"""

from __future__ import annotations

import enum
import os
import stat
import tomllib
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

from crashhp.model import Policy

ETC_DIR = Path("/etc/crashhp")
MAX_FILE_BYTES = 1 << 20
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
        "(systemd-run); direct = a child of the daemon; auto = transient when systemd "
        "is PID 1",
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


class ConfigError(Exception):
    """A config file that cannot be used; ``str()`` is the one line an admin sees."""

    def __init__(self, path: Path | str, key: str | None, reason: str) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        where = f"{_one_line(self.path)}: {_one_line(key)}" if key else _one_line(self.path)
        super().__init__(f"{where}: {_one_line(reason)}")


def _one_line(text: str) -> str:
    """Control characters escaped: a quoted TOML key or a file name may hold a newline."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
            fd = _open_checked(dropins, directory=True)
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
        data = _read_toml(file)
        _validate_alone(file, data)
        _merge(merged, data, origin, str(file))
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        key, reason = _first_error(exc)
        raise ConfigError(origin.get(key, files[-1] if files else DEFAULTS), key, reason) from None
    return LoadedConfig(config=config, files=tuple(files), origin=origin)


def _read_toml(path: Path) -> dict[str, Any]:
    fd = _open_checked(path, directory=False)
    try:
        size = os.fstat(fd).st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(path, None, f"file too large ({size} bytes, limit {MAX_FILE_BYTES})")
        with os.fdopen(os.dup(fd), "rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, None, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:  # grew since the fstat
        raise ConfigError(path, None, f"file too large (limit {MAX_FILE_BYTES} bytes)")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, f"not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"invalid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: `x = [[[[...` a few
        # thousand deep (a few KiB) would otherwise end the daemon with a traceback.
        raise ConfigError(path, None, "invalid TOML: nested too deeply") from None


# Config files name commands that run as root. Like OpenSSH's StrictModes (safe_path()),
# the file and every directory from / down to it must be owned by root (or the caller)
# and writable by no one else; the file is opened by the descriptor walk below and the
# descriptor actually read is the one checked, so nothing can be swapped in between.
# Where OpenSSH refuses any group or other write bit, two cases are accepted: a directory
# with the sticky bit (/tmp: others may add entries but not rename or replace ours, and
# every entry we pass through is checked for its owner), and group write for group 0.
MAX_SYMLINKS = 40  # as the kernel's path walk
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_checked(shown: Path, *, directory: bool) -> int:
    """An fd for ``shown`` (a regular file, or a directory to list), every step checked.

    Each component is opened with O_NOFOLLOW relative to its checked parent. A symbolic
    link (whose owner is checked too) is read and its target walked the same way, so a
    link in /etc/crashhp/crashhp.d to a file elsewhere still works, and the file and the
    directories it is in are what gets checked. Raises ConfigError.
    """
    path = os.path.abspath(shown)
    hops = 0
    while True:
        parts = [p for p in path.split("/") if p]
        if not parts and not directory:
            raise ConfigError(shown, None, "not a regular file")
        fd = os.open("/", _DIR_FLAGS)
        try:
            _check_writers(shown, "/", os.fstat(fd))
            for i, name in enumerate(parts):
                here = "/" + "/".join(parts[: i + 1])
                last = i == len(parts) - 1
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > MAX_SYMLINKS:
                        raise ConfigError(shown, None, "too many levels of symbolic links")
                    _check_writers(shown, here, st)
                    base = "/" + "/".join(parts[:i])
                    target = os.readlink(name, dir_fd=fd)
                    path = os.path.normpath(os.path.join(base, target, *parts[i + 1 :]))
                    break
                if last and not directory:
                    if not stat.S_ISREG(st.st_mode):  # never open a FIFO or a device
                        raise ConfigError(shown, None, "not a regular file")
                    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                    child = os.open(name, flags | os.O_CLOEXEC, dir_fd=fd)
                elif last:
                    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                    child = os.open(name, flags, dir_fd=fd)
                else:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                opened = os.fstat(fd)
                if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                    raise ConfigError(shown, None, f"{here} changed while it was checked")
                if last and not directory and not stat.S_ISREG(opened.st_mode):
                    raise ConfigError(shown, None, "not a regular file")
                _check_writers(shown, here, opened)
            else:
                result, fd = fd, -1
                return result
        except FileNotFoundError:
            raise ConfigError(shown, None, "no such file") from None
        except NotADirectoryError:
            raise ConfigError(shown, None, "a path component is not a directory") from None
        except OSError as exc:
            raise ConfigError(shown, None, exc.strerror or str(exc)) from None
        finally:
            if fd >= 0:
                os.close(fd)


def _check_writers(shown: Path, real: str, st: os.stat_result) -> None:
    """Refuse ``real`` (described by ``st``) if anyone but root or the caller may change it."""
    if stat.S_ISDIR(st.st_mode):
        what = "directory"
    elif stat.S_ISLNK(st.st_mode):
        what = "symbolic link"
    else:
        what = "file"
    if st.st_uid not in {0, os.geteuid()}:
        raise ConfigError(shown, None, f"{what} {real} is owned by uid {st.st_uid}, not root")
    if stat.S_ISLNK(st.st_mode):
        return  # a link's own mode bits mean nothing; its directory and target are checked
    sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if st.st_mode & stat.S_IWOTH and not sticky:
        raise ConfigError(shown, None, f"{what} {real} is writable by everyone")
    if st.st_mode & stat.S_IWGRP and st.st_gid != 0 and not sticky:
        raise ConfigError(shown, None, f"{what} {real} is writable by group {st.st_gid}")


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
