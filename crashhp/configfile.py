"""Reading one config file safely: the descriptor walk, the owner checks, the TOML parse.

The config names commands that run as root, so a file is refused when anyone but root
(or the invoking user) can write it or any directory from / down to it, and the
descriptor that is read is the one checked. Every failure is a ConfigError: one line
naming the file, the key where there is one, and the reason.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 1 << 20


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


def read_toml(path: Path) -> dict[str, Any]:
    fd = open_checked(path, directory=False)
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


def open_checked(shown: Path, *, directory: bool) -> int:
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
