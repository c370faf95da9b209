"""The guest agent: line-delimited JSON requests over a virtio-serial port.

Runs inside the guest (Debian trixie's python3, standard library only), started by
crashhp-test-agent.service. One request at a time, one reply line per request:

    {"id": 1, "op": "ping"}                       -> {"id": 1, "mono_ns": ...}
    {"id": 2, "op": "run", "argv": [...], "timeout_s": 30, "input": "..."}
        -> {"id": 2, "rc": 0, "stdout": "...", "stderr": "..."}
    {"id": 3, "op": "read", "path": "/x"}         -> {"id": 3, "data": "<base64>"}
    {"id": 5, "op": "wait_path", "path": "/x", "timeout_s": 10, "exists": true}
                                                  -> {"id": 5, "ok": true}
    {"id": 4, "op": "write", "path": "/x", "data": "<base64>", "mode": 420}
                                                  -> {"id": 4}
Errors come back as {"id": N, "error": "..."}.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PORT_NAME = "org.crashhp.agent"


def find_port() -> str:
    while True:
        for name_file in Path("/sys/class/virtio-ports").glob("*/name"):
            if name_file.read_text().strip() == PORT_NAME:
                dev = Path("/dev") / name_file.parent.name
                if dev.exists():
                    return str(dev)
        time.sleep(0.05)


def handle(req: dict[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    if op == "ping":
        return {"mono_ns": time.monotonic_ns()}
    if op == "run":
        try:
            proc = subprocess.run(
                [str(a) for a in req["argv"]],
                input=req.get("input", "").encode(),
                capture_output=True,
                timeout=float(req.get("timeout_s", 60)),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return {
                "rc": None,
                "stdout": (exc.stdout or b"").decode(errors="replace"),
                "stderr": (exc.stderr or b"").decode(errors="replace"),
                "timeout": True,
            }
        except OSError as exc:
            return {"rc": 127, "stdout": "", "stderr": str(exc)}
        return {
            "rc": proc.returncode,
            "stdout": proc.stdout.decode(errors="replace"),
            "stderr": proc.stderr.decode(errors="replace"),
        }
    if op == "wait_path":
        deadline = time.monotonic() + float(req.get("timeout_s", 10))
        want = bool(req.get("exists", True))
        while Path(req["path"]).exists() != want:
            if time.monotonic() > deadline:
                return {"ok": False}
            time.sleep(0.005)
        return {"ok": True}
    if op == "read":
        data = Path(req["path"]).read_bytes()
        return {"data": base64.b64encode(data).decode()}
    if op == "write":
        path = Path(req["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        data = base64.b64decode(req["data"])
        if req.get("append"):
            with path.open("ab") as f:
                f.write(data)
        else:
            # One write(2): sysfs attributes need the value in a single call.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, int(req.get("mode", 0o644)))
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return {}
    raise ValueError(f"unknown op {op!r}")


def write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def main() -> int:
    fd = os.open(find_port(), os.O_RDWR)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = b""
    while True:
        events = poller.poll(1000)
        if not events:
            continue
        if any(ev & select.POLLHUP for _, ev in events):
            # Host side not connected: reads would return nothing; wait for it.
            buf = b""
            time.sleep(0.1)
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            time.sleep(0.05)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                req = json.loads(line)
            except ValueError:
                continue  # a partial line from before the host connected
            try:
                reply = handle(req)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            reply["id"] = req.get("id")
            write_all(fd, json.dumps(reply).encode() + b"\n")


if __name__ == "__main__":
    sys.exit(main())
