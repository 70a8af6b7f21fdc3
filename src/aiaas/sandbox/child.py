"""The child's side: confine this process before it touches anything untrusted.

A sandboxed module's ``main`` calls :func:`start` first thing. It

1. asks the kernel for SIGKILL when the parent dies (Linux ``PR_SET_PDEATHSIG``; it exits at
   once if the parent is already gone), so no child outlives the API process or a restart;
2. reads the parent's envelope from stdin (the request, the limits, the paths);
3. limits itself: CPU seconds, address space, the size of any file it writes (with SIGXFSZ
   ignored, so an oversized write fails with EFBIG instead of killing it; 0 = no writes at
   all), open files, no core dumps;
4. applies Landlock (where the kernel has it): read the Python installation, system libraries
   and ``paths.read``; write ``paths.write`` only; no TCP;

and returns the request. Landlock refused by a kernel that has it raises ``OSError``: a
sandbox that silently did not apply would be worse; the module answers with an error.
:func:`answer` writes one JSON line, the reply shape :func:`~aiaas.sandbox.runner.last_json_line`
reads.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from dataclasses import dataclass
from typing import Any

from aiaas.sandbox.runner import PARENT_PID_ARG

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Started:
    request: dict[str, Any]
    landlock_abi: int  # the Landlock ABI this process confined itself with (0: none)


def start() -> Started:
    """Die with the parent, read the envelope, apply its limits and paths; the request."""
    die_with_parent()
    envelope: dict[str, Any] = json.loads(sys.stdin.buffer.read())
    sandbox = envelope["sandbox"]
    if sandbox.get("cwd"):  # a warm child was started elsewhere (runner.spawn)
        os.chdir(sandbox["cwd"])
    limit(sandbox["limits"])
    abi = 0
    if sandbox.get("landlock", True):
        from aiaas.sandbox import landlock

        abi = landlock.restrict(
            [*landlock.runtime_paths(), *sandbox["read"]],
            [*sandbox["write"], "/dev/null"],
            tcp=bool(sandbox.get("tcp", False)),
        )
    return Started(request=envelope["request"], landlock_abi=abi)


def limit(limits: dict[str, Any]) -> None:
    """Apply :class:`~aiaas.sandbox.runner.ChildLimits` (as a dict) to this process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG
    max_file = int(limits["max_file_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file, max_file))
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    if limits["address_bytes"]:
        size = int(limits["address_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    files = int(limits["open_files"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))


def answer(reply: dict[str, Any]) -> None:
    sys.stdout.buffer.write(json.dumps(reply).encode() + b"\n")
    sys.stdout.buffer.flush()


def peak_rss() -> int:
    """This process's memory high-water mark, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def die_with_parent() -> bool:
    """Ask the kernel for SIGKILL when the parent dies; exit if it already has.

    Returns False where the platform has no parent-death signal (not Linux); the parent's
    own timeout kill still applies there.
    """
    expected = next(
        (a.removeprefix(PARENT_PID_ARG) for a in sys.argv[1:] if a.startswith(PARENT_PID_ARG)),
        None,
    )
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    # The parent may have died before prctl: then we were re-parented already.
    if expected is not None and str(os.getppid()) != expected:
        os._exit(1)
    return True
