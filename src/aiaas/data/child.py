"""How aiaas starts the processes that handle untrusted input (ingest, SQL).

They get a scrubbed environment — no ``AIAAS_*`` settings, database URLs, secret keys or
cloud credentials of the API process — and Python's isolated mode (``-I``: no ``PYTHON*``
variables, no user site-packages, no current directory on ``sys.path``).
"""

from __future__ import annotations

import os
import sys


def child_command(module: str) -> list[str]:
    return [sys.executable, "-B", "-I", "-m", module]


def child_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": "/nonexistent",
    }
