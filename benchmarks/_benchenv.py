"""The benchmark-only environment: ``.venv-bench`` from ``requirements-bench.lock``.

Anchors that are not aiaas dependencies (FLAML for AutoML, polars for the ingest CSV
generator) live in the ``bench`` extra. A benchmark that needs one runs that part with the
Python this returns: the running one when it already has the modules, else ``.venv-bench``
(created on first use, with aiaas installed into it in editable mode).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".venv-bench"


def bench_python(*modules: str) -> str:
    """A Python interpreter that can import every module in ``modules`` (and aiaas)."""
    if all(importlib.util.find_spec(m) is not None for m in (*modules, "aiaas")):
        return sys.executable
    py = BENCH_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {BENCH_VENV} from requirements-bench.lock (first run only)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "uv==0.13.9"], check=True)
    uv = str(BENCH_VENV / "bin" / "uv")
    lock = str(ROOT / "requirements-bench.lock")
    # sync every time: cheap when nothing changed, and picks up a lock that gained a package
    subprocess.run([uv, "pip", "sync", "-q", "--python", str(py), lock], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(py), "--no-deps", "-e", str(ROOT)],
        check=True,
    )
    return str(py)
