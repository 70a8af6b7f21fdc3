"""The parent's side: start one untrusted child, bound everything it sends back, reap it.

:func:`run_child` is the only way aiaas starts a process that handles untrusted input
(uploads, user SQL; next, training jobs and model loading). The child is
``python -B -I -m <module>``: Python's isolated mode (no ``PYTHON*`` variables, no user
site-packages, no current directory on ``sys.path``) with a scrubbed environment — none of the
API process's settings, database URLs, secret keys or cloud credentials. It runs in its own
process group, so a timeout kills it and anything it started.

The request goes in on stdin as one JSON document, together with the limits and paths the
child applies to itself before it reads anything untrusted (:func:`aiaas.sandbox.child.start`).
Everything the child writes is read here through our own pipes and bounded: stdout up to
``limits.max_output_bytes`` (past it the child is killed and the run marked ``overflow``),
stderr as a bounded tail for the log. What comes back is *untrusted*: callers re-validate the
answer (``last_json_line`` only parses it) and accept a file from the child only through
:func:`claim_output`, which refuses links to someone else's data.

Call it from the thread that waits for the result, and let it return only after the child has
exited (it does): the child's parent-death signal fires when the *thread* that forked it ends.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PARENT_PID_ARG = "--parent-pid="
STDERR_TAIL_BYTES = 8000
_CHUNK = 1 << 16
_CANCEL_POLL_S = 0.2  # how often a waiting parent looks at its cancel event


@dataclass(frozen=True)
class ChildLimits:
    """What one child may use. The caller builds it from the settings; no defaults here."""

    timeout_s: float  # wall clock, enforced by the parent (process-group SIGKILL)
    cpu_s: int  # RLIMIT_CPU (soft; the hard limit is 5 s above: SIGXCPU, then SIGKILL)
    address_bytes: int  # RLIMIT_AS; 0 = unlimited
    max_file_bytes: int  # RLIMIT_FSIZE; 0 = the child may write no file at all
    max_output_bytes: int  # what the parent reads from its stdout
    open_files: int  # RLIMIT_NOFILE


@dataclass(frozen=True)
class ChildPaths:
    """Where the child runs and what it may touch (Landlock, where the kernel has it)."""

    cwd: Path
    read: tuple[Path, ...] = ()  # besides the Python installation and system libraries
    write: tuple[Path, ...] = ()
    landlock: bool = True  # an operator may switch it off (a kernel that refuses it)
    tcp: bool = False  # TCP connections allowed (only a Ray driver needs them: its cluster)


@dataclass
class ChildRun:
    """How a child ended. ``output`` is empty when it was streamed to ``on_output``."""

    returncode: int
    timed_out: bool = False
    overflow: bool = False  # it wrote more than ``max_output_bytes``: killed
    cancelled: bool = False  # the caller's ``cancel`` event was set: killed
    output: bytes = b""
    stderr: str = ""

    @property
    def signal(self) -> str | None:
        """The signal that ended it (``SIGKILL``, …), None for a normal exit."""
        rc = self.returncode
        if rc >= 0:
            return None
        return signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)

    @property
    def killed_at_limit(self) -> bool:
        """Stopped by its CPU limit, its memory (the kernel's OOM killer) or our kill."""
        return self.returncode in (-signal.SIGKILL, -signal.SIGXCPU)


def child_command(module: str) -> list[str]:
    """The child's argv; it names this process, so the child can tell it was orphaned early
    (an argument, not a variable: the environment stays exactly :func:`child_env`)."""
    return [sys.executable, "-B", "-I", "-m", module, f"{PARENT_PID_ARG}{os.getpid()}"]


def child_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": "/nonexistent",
    }


def spawn(module: str, cwd: Path) -> subprocess.Popen[bytes]:
    """Start a child of ``module`` that waits for its envelope on stdin (:func:`run_child`
    sends it). A module may import what it needs before :func:`aiaas.sandbox.child.start`
    reads the envelope, so a child spawned ahead of time (``warm``) starts at once; it is
    confined only once it reads its request. It dies with the thread that spawned it."""
    return subprocess.Popen(
        child_command(module),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd=cwd,
        start_new_session=True,  # a kill takes the whole group
    )


def _envelope(request: dict[str, Any], limits: ChildLimits, paths: ChildPaths) -> dict[str, Any]:
    """What the child reads on stdin: its sandbox (applied by ``child.start``) and request."""
    return {
        "sandbox": {
            "limits": asdict(limits),
            "read": [str(p) for p in paths.read],
            "write": [str(p) for p in paths.write],
            "landlock": paths.landlock,
            "tcp": paths.tcp,
            "cwd": str(paths.cwd),
        },
        "request": request,
    }


def run_child(
    module: str,
    request: dict[str, Any],
    limits: ChildLimits,
    paths: ChildPaths,
    *,
    on_output: Callable[[bytes], None] | None = None,
    cancel: threading.Event | None = None,
    warm: subprocess.Popen[bytes] | None = None,
) -> ChildRun:
    """Run ``module`` on ``request`` to its end and say how it ended (never raises for the
    child's behaviour: a hang, crash or flood is in the returned :class:`ChildRun`).

    With ``on_output``, stdout is handed over chunk by chunk as it arrives (still bounded by
    ``max_output_bytes``); an exception raised there kills the child and propagates.
    Setting ``cancel`` kills the child (and its group) within ``_CANCEL_POLL_S``.
    ``warm``: a child of ``module`` already started by :func:`spawn` (it has done its
    imports and waits for its envelope; it moves to ``paths.cwd`` itself); used when alive.
    """
    envelope = _envelope(request, limits, paths)
    if warm is not None and warm.poll() is not None:  # it died waiting: start afresh
        _close_pipes(warm)
        warm = None
    proc = warm if warm is not None else spawn(module, paths.cwd)
    output = bytearray()
    stderr = bytearray()
    run = ChildRun(returncode=0)

    def sink(chunk: bytes) -> None:
        if on_output is not None:
            on_output(chunk)
        else:
            output.extend(chunk)

    try:
        deadline = time.monotonic() + limits.timeout_s
        _pump(
            proc,
            json.dumps(envelope).encode(),
            _Io(sink, stderr, deadline, limits.max_output_bytes, cancel),
        )
        proc.wait(max(0.1, deadline - time.monotonic()))  # stdout closed: it is exiting
    except TimeoutError:
        run.timed_out = True
    except subprocess.TimeoutExpired:
        run.timed_out = True
    except _Overflow:
        run.overflow = True
    except _Cancelled:
        run.cancelled = True
    finally:
        discard(proc)
    run.returncode = proc.returncode
    run.output = bytes(output)
    run.stderr = bytes(stderr[-STDERR_TAIL_BYTES:]).decode("utf-8", "replace")
    return run


def last_json_line(output: bytes) -> dict[str, Any] | None:
    """The child's answer when it is one JSON object on the last line, else None.

    Only parsed, not trusted: the caller checks every field it uses.
    """
    lines = output.strip().splitlines()
    if not lines:
        return None
    try:
        reply = json.loads(lines[-1])
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def claim_output(path: Path) -> Path:
    """Accept a file the child says it wrote, if it is one: a regular file (not a symlink),
    with a single link (not a hard link to someone else's data), owned by us. Raises
    ValueError otherwise."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise ValueError("no output") from None
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.getuid():
        raise ValueError("the output is not a file the child wrote")
    return path


class _Overflow(Exception):
    pass


class _Cancelled(Exception):
    pass


@dataclass
class _Io:
    """Where :func:`_pump` hands the child's output, and when it stops."""

    sink: Callable[[bytes], None]
    stderr: bytearray
    deadline: float
    max_output: int
    cancel: threading.Event | None


def discard(proc: subprocess.Popen[bytes]) -> None:
    """Kill a child from :func:`spawn` that will not be used (its whole group) and reap it."""
    _kill_group(proc)
    proc.wait()
    _close_pipes(proc)


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group outlives its leader's exit
    except (ProcessLookupError, PermissionError):
        pass


def _pump(proc: subprocess.Popen[bytes], request: bytes, io: _Io) -> None:
    """Write the request, hand stdout to ``io.sink`` and keep a stderr tail, until both
    close (or the deadline passes, or ``io.cancel`` is set)."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    pending = memoryview(request)
    received = 0
    with selectors.DefaultSelector() as sel:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        while sel.get_map():
            remaining = io.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if io.cancel is not None and io.cancel.is_set():
                raise _Cancelled
            for key, _ in sel.select(min(remaining, _CANCEL_POLL_S)):
                pipe = key.fileobj
                assert not isinstance(pipe, int)
                if pipe is proc.stdin:
                    try:
                        pending = pending[os.write(proc.stdin.fileno(), pending[:_CHUNK]) :]
                    except BrokenPipeError:  # it died early: its exit status says why
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(pipe)
                        proc.stdin.close()
                    continue
                data = os.read(pipe.fileno(), _CHUNK)
                if not data:
                    sel.unregister(pipe)
                elif pipe is proc.stdout:
                    received += len(data)
                    if received > io.max_output:
                        raise _Overflow
                    io.sink(data)
                else:
                    io.stderr += data
                    if len(io.stderr) > 2 * STDERR_TAIL_BYTES:
                        del io.stderr[:-STDERR_TAIL_BYTES]
