"""``make bench``: run every benchmark in this folder, one after another, in one run.

    python benchmarks/run_all.py            # all
    python benchmarks/run_all.py auth       # only the named ones

Each benchmark prints its table and writes it to benchmarks/results/<name>.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ORDER = ["auth", "ingest", "automl", "jobs", "serving", "drift"]


def main() -> int:
    wanted = sys.argv[1:] or ORDER
    failed = []
    for name in wanted:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"== {name}: no benchmarks/{name}.py yet, skipped")
            continue
        print(f"== {name}")
        started = time.monotonic()
        done = subprocess.run([sys.executable, str(script)], check=False)
        print(f"== {name}: exit {done.returncode} after {time.monotonic() - started:.0f} s")
        if done.returncode:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
