"""How aiaas starts the processes that handle untrusted input (ingest, SQL).

They get a scrubbed environment — no ``AIAAS_*`` settings, database URLs, secret keys or
cloud credentials of the API process — and Python's isolated mode (``-I``: no ``PYTHON*``
variables, no user site-packages, no current directory on ``sys.path``).

A child also dies with the process that started it (``die_with_parent``, Linux
``PR_SET_PDEATHSIG``): when the API process is killed, its ingest and query processes do
not keep running, and a restart finds none of them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_PID_ARG = "--parent-pid="
_PR_SET_PDEATHSIG = 1


def child_command(module: str) -> list[str]:
    """The child's argv; it names this process, so the child can tell it was orphaned early
    (an argument, not a variable: the environment stays exactly ``child_env()``)."""
    return [sys.executable, "-B", "-I", "-m", module, f"{PARENT_PID_ARG}{os.getpid()}"]


def child_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": "/nonexistent",
    }


def die_with_parent() -> bool:
    """In a child: ask the kernel for SIGKILL when the parent dies; exit if it already has.

    Call first thing in a child's ``main``. Returns False where the platform has no
    parent-death signal (not Linux); the parent's own timeout kill still applies there.
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
