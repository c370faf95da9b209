"""A stand-in reload command: records each call, then "loads" the fake crash kernel.

The daemon under test runs it as ``[python, reload_recorder.py, STATE_DIR]`` (method
``command``). Each call:

1. takes a non-blocking exclusive lock on ``STATE_DIR/running.lock``: if another call holds it,
   this call overlaps a running one and says so in its record (crashhp must never run two);
2. reads the topology the "loaded image" will describe, as kexec-tools reads /proc/iomem
   and the CPUs before it loads (and the kernel builds a file load's header at its start);
3. appends a ``start`` record (JSON line) to ``STATE_DIR/calls.jsonl`` with its pid, process
   group, monotonic time and whether it overlapped;
4. writes 0 to ``SYSFS/kernel/kexec_crash_loaded`` (a real reload unloads first), then follows
   the knobs in ``STATE_DIR/knobs.json``, read fresh at every call:

   - ``duration_ms``: how long the "load" takes (default 0);
   - ``fail``: how many calls from now fail (exit 1, crash kernel left unloaded); decremented
     by each failing call;
   - ``hang``: start a child in the same process group, record its pid, and sleep for ever
     (the daemon's timeout must kill the whole group);
   - ``leave_unloaded``: exit 0 but leave ``kexec_crash_loaded`` at 0;
   - ``ebusy_lock``: a path; while another process holds an flock on it (a concurrent kexec
     holding the kernel's kexec lock), fail as kexec-tools does on EBUSY: the message
     ``kexec_file_load failed: Device or resource busy`` and exit 255, nothing loaded;
   - ``fail_before_unload``: fail (exit 1) before step 4: the old image stays loaded;
   - ``hotplug_after``: a hotplug-capable load (``kexec -s``, ``kexec --hotplug``, trixie's
     kdump-config): both ``crash_hotplug`` files read 1 afterwards;
5. otherwise writes 1 to ``kexec_crash_loaded`` and records the topology read in step 3 (the
   "System RAM" lines of ``/proc/iomem`` and the cpu ``present``/``online`` masks) in
   ``STATE_DIR/image.json`` and in its ``end`` record.

Standard library only; monotonic times are comparable with the test's (same clock, same boot).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _append(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _take_failure(state: Path) -> bool:
    """Consume one of the ``fail`` budget under a lock; True if this call must fail."""
    knobs_path = state / "knobs.json"
    with open(state / "knobs.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        knobs = json.loads(knobs_path.read_text()) if knobs_path.exists() else {}
        left = int(knobs.get("fail", 0))
        if left <= 0:
            return False
        knobs["fail"] = left - 1
        tmp = knobs_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(knobs))
        tmp.replace(knobs_path)
        return True


def _lock_held_elsewhere(path: str) -> bool:
    """True if another process holds an flock on ``path`` (we do not keep it)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our lock, if we got it
    return False


def _topology(sysfs: Path) -> dict[str, Any]:
    """What a kexec load would put in the crash kernel's elfcorehdr, as seen from here."""
    image: dict[str, Any] = {}
    try:
        with open("/proc/iomem", "rb") as iomem:
            image["ram"] = [
                line.decode(errors="replace").strip() for line in iomem if b"System RAM" in line
            ]
    except OSError as exc:
        image["ram"] = f"unreadable: {exc.strerror}"
    for name in ("present", "online"):
        try:
            image[name] = (sysfs / "devices/system/cpu" / name).read_text().strip()
        except OSError as exc:
            image[name] = f"unreadable: {exc.strerror}"
    return image


def _put(path: Path, text: str) -> None:
    """Replace a file atomically: its readers see the old text or the new, never none."""
    tmp = path.with_name(f".{path.name}.recorder-tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str]) -> int:
    state = Path(argv[0])
    sysfs = Path(argv[1]) if len(argv) > 1 else Path("/sys")
    loaded = sysfs / "kernel" / "kexec" / "crash_loaded"  # Linux 6.19 and later
    if not loaded.exists():
        loaded = sysfs / "kernel" / "kexec_crash_loaded"
    calls = state / "calls.jsonl"
    knobs_path = state / "knobs.json"
    knobs: dict[str, Any] = json.loads(knobs_path.read_text()) if knobs_path.exists() else {}

    running = open(state / "running.lock", "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)
        overlap = False
    except BlockingIOError:
        overlap = True
    base = {"pid": os.getpid(), "pgid": os.getpgid(0), "argv": argv}
    # What this load will describe: read before it loads, and before the start record, so
    # that a test that waits for the start record changes the topology after the read.
    image = _topology(sysfs)
    _append(calls, {**base, "phase": "start", "t": time.monotonic(), "overlap": overlap})

    if knobs.get("fail_before_unload") and _take_failure(state):
        _append(calls, {**base, "phase": "end", "t": time.monotonic(), "rc": 1})
        print("reload_recorder: simulated failure before the unload", file=sys.stderr)
        return 1
    _put(loaded, "0\n")
    if knobs.get("hang"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        _append(calls, {**base, "phase": "hang", "t": time.monotonic(), "child": child.pid})
        time.sleep(3600)
        return 0
    duration_ms = float(knobs.get("duration_ms", 0))
    if duration_ms > 0:
        time.sleep(duration_ms / 1000)
    busy = knobs.get("ebusy_lock")
    if busy and _lock_held_elsewhere(str(busy)):
        _append(calls, {**base, "phase": "end", "t": time.monotonic(), "rc": 255, "ebusy": True})
        print("kexec_file_load failed: Device or resource busy", file=sys.stderr)
        return 255
    if _take_failure(state):
        _append(calls, {**base, "phase": "end", "t": time.monotonic(), "rc": 1})
        print("reload_recorder: simulated failure", file=sys.stderr)
        return 1
    end: dict[str, Any] = {**base, "phase": "end", "rc": 0}
    if not knobs.get("leave_unloaded"):
        # The kernel's order: loaded reads 1 once the image is in, so a test that waits for
        # the image sees it loaded (image.json first left a window where loaded read 0, or
        # empty while write_text truncated it: a fault test flaked on a busy host).
        _put(loaded, "1\n")
        if knobs.get("hotplug_after"):
            for sub in ("cpu", "memory"):
                _put(sysfs / "devices/system" / sub / "crash_hotplug", "1\n")
        _put(state / "image.json", json.dumps(image, sort_keys=True))
        end["image"] = image
    _append(calls, {**end, "t": time.monotonic()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
