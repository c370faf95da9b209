"""Set up the fake host inside a fresh mount namespace, then exec the real program.

Run by :class:`tests.support.nshost.FakeHost` as
``unshare --net --mount --propagation private -- python -m tests.support.nsinit
--bind SRC:DST ... --ready-fd N -- PROGRAM ARGS...``. It bind-mounts the fixture's directories
over the kernel's (``/sys/devices/system/cpu``, ``/sys/devices/system/memory``, ``/sys/kernel``,
``/run``), mounts the requested overlays (``--overlay /etc:UPPER:WORK`` gives the program an
``/etc`` with the fixture's files on top of the host's), tells the fixture it is done on the
ready fd, and replaces itself with the program, so
the program keeps this process id: signals from the test reach it directly.

It imports nothing outside the standard library, so that it stays cheap to start.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def _mount(source: str, target: str, flags: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    rc = libc.mount(source.encode(), target.encode(), None, ctypes.c_ulong(flags), None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _overlay(target: str, upper: str, work: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    options = f"lowerdir={target},upperdir={upper},workdir={work}".encode()
    rc = libc.mount(b"overlay", target.encode(), b"overlay", ctypes.c_ulong(0), options)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"overlay on {target}: {os.strerror(err)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nsinit")
    parser.add_argument("--bind", action="append", default=[], metavar="SRC:DST")
    parser.add_argument("--overlay", action="append", default=[], metavar="DIR:UPPER:WORK")
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")

    # unshare(1) already made every mount private; do it again so that nothing we mount can
    # ever propagate back to the host, whatever unshare's defaults are.
    _mount("none", "/", MS_REC | MS_PRIVATE)
    for spec in args.bind:
        source, _, target = spec.partition(":")
        _mount(source, target, MS_BIND)
    for spec in args.overlay:
        target, upper, work = spec.split(":")
        _overlay(target, upper, work)

    with os.fdopen(args.ready_fd, "w") as ready:
        ready.write(f"{os.getpid()}\n")
    os.execv(command[0], command)  # noqa: S606 - exec, no shell: that is the point
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
