"""An ingest process dies with the process that started it (PR_SET_PDEATHSIG).

A separate Python process stands in for the API process: it converts a file on a worker
thread (as the API does, through anyio's thread pool) with the real ``convert_isolated``.
The test freezes the ingest process mid-conversion (SIGSTOP, so it can neither finish nor
notice anything by itself), SIGKILLs the stand-in, and expects the kernel to kill the
ingest process within a couple of seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only"
)

PARENT = r"""
import sys, threading
from dataclasses import replace
from pathlib import Path
from aiaas.data import ingest_worker
from aiaas.data.ingest import IngestOptions
from aiaas.data.limits import ingest_isolation, ingest_limits
from aiaas.settings import Settings

work = Path(sys.argv[1])

def convert():  # like a request's worker thread: it waits for its ingest process
    ingest_worker.convert_isolated(
        work / "upload", work, filename="big.csv", options=IngestOptions(),
        limits=ingest_limits(Settings()),
        isolation=replace(ingest_isolation(Settings()), timeout_s=600),
    )

thread = threading.Thread(target=convert, name="worker")
thread.start()
thread.join()
"""


def _children(ppid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid and b"ingest_worker" in cmdline:
            found.append(int(entry.name))
    return found


def _limited(pid: int) -> bool:
    """The ingest process has read its request and limited itself (so it is past
    ``die_with_parent``, which comes first): its open-files limit is 256."""
    try:
        limits = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return False
    return any(
        line.startswith("Max open files") and " 256 " in line for line in limits.splitlines()
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie is dead, only not yet reaped


def test_the_ingest_process_dies_when_the_api_process_is_killed(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    row = b"%d,some text to convert,%d.5,2024-01-02\n"
    (work / "upload").write_bytes(b"a,b,c,d\n" + b"".join(row % (i, i) for i in range(400_000)))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(work)])
    child = None
    try:
        deadline = time.monotonic() + 30
        while child is None and time.monotonic() < deadline:
            child = next((pid for pid in _children(parent.pid) if _limited(pid)), None)
            time.sleep(0.002)
        assert child is not None, "the ingest process did not start (or finished at once)"
        os.kill(child, signal.SIGSTOP)  # mid-conversion: it cannot finish on its own now
        parent.kill()  # SIGKILL: no cleanup code of the parent runs
        parent.wait(10)
        deadline = time.monotonic() + 2
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child), "the ingest process outlived the API process"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
