"""A child that misbehaves on request: the sandbox's own tests drive every hostile case
(flood, hang, crash, out of memory, links for answers, writes outside) through the real
runner with it. ``python -I -m aiaas.sandbox.probe``; it does nothing unless asked.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from aiaas.sandbox import child


def main() -> int:
    started = child.start()
    request = started.request
    act = request["act"]
    if act == "echo":
        child.answer({"ok": True, "echo": request.get("value"), "abi": started.landlock_abi})
    elif act == "flood":  # far more output than the parent reads
        chunk = b"x" * 65536
        while True:
            sys.stdout.buffer.write(chunk)
    elif act == "hang":
        time.sleep(3600)
    elif act == "hang_group":  # a grandchild in our group, then hang
        if os.fork() == 0:
            time.sleep(3600)
        child.answer({"ok": True, "pid": os.getpid()})
        time.sleep(3600)
    elif act == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif act == "oom":
        hoard = []
        while True:
            hoard.append(bytearray(64 << 20))
    elif act == "spin":  # burn CPU until RLIMIT_CPU stops us
        while True:
            pass
    elif act in ("symlink", "hardlink"):
        target, link = Path(request["target"]), Path(request["link"])
        (os.symlink if act == "symlink" else os.link)(target, link)
        child.answer({"ok": True})
    elif act == "write":
        try:
            Path(request["path"]).write_bytes(b"y" * int(request.get("size", 1)))
        except OSError as exc:
            child.answer({"ok": False, "errno": exc.errno})
        else:
            child.answer({"ok": True})
    elif act == "read":
        try:
            data = Path(request["path"]).read_bytes()
        except OSError as exc:
            child.answer({"ok": False, "errno": exc.errno})
        else:
            child.answer({"ok": True, "bytes": len(data)})
    elif act == "connect":  # a TCP connection (to exfiltrate, or to reach a database)
        import socket

        try:
            socket.create_connection((request["host"], int(request["port"])), timeout=5).close()
        except OSError as exc:
            child.answer({"ok": False, "errno": exc.errno})
        else:
            child.answer({"ok": True})
    elif act == "env":
        child.answer({"ok": True, "env": dict(os.environ), "path": sys.path})
    return 0


if __name__ == "__main__":
    sys.exit(main())
