"""Ingest benchmark: aiaas's whole upload path vs pandas vs bare DuckDB, in one run.

    python benchmarks/ingest.py [--rows 10000000] [--workdir DIR] [--keep]

1. Generates the CSV with ../shared/bench/ingest/gen_csv.py (10M rows ≈ 1.1 GB; cached in
   the work dir between runs). gen_csv.py writes through polars, a bench-only dependency:
   it runs in ``.venv-bench`` (``requirements-bench.lock``) unless this Python has polars.
2. Measures, each in its own process:
   a. aiaas: ``aiaas serve`` (uvicorn) on 127.0.0.1, and a streamed httpx multipart upload to
      ``POST /api/v1/datasets`` — stream to disk + SHA-256, convert to Parquet (in the
      ingest subprocess), profile, store, commit; again with ``curl -F``. Peak memory is the
      server's VmHWM (peak RSS) from /proc, plus the ingest process's own peak (logged).
   b. pandas ``read_csv`` + ``to_parquet``;
   c. DuckDB ``COPY (SELECT * FROM read_csv_auto(...)) TO ... (FORMAT parquet)`` with
      ``memory_limit='1GB'`` and ``preserve_insertion_order=false``;
   d. the profile alone (aiaas.data.profile over the Parquet file), and pandas ``describe``.
3. Prints a markdown table and writes it to benchmarks/results/ingest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from _benchenv import bench_python

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GEN_CSV = REPO.parent / "shared" / "bench" / "ingest" / "gen_csv.py"
MiB = 1024 * 1024


# --------------------------------------------------------------------------- data


def generate(path: Path, rows: int) -> None:
    """Write the anchor CSV with gen_csv.py (polars, from the bench environment)."""
    if path.exists():
        return
    python = bench_python("polars", "pyarrow", "numpy")
    print(f"generating {rows:,} rows with gen_csv.py ...", flush=True)
    tmp = path.with_suffix(".partial")
    subprocess.run([python, str(GEN_CSV), str(tmp), "--rows", str(rows)], check=True)
    tmp.replace(path)


# --------------------------------------------------------------------------- measured children

CHILD_PANDAS = """
import json, resource, sys, time
import pandas as pd
t = time.perf_counter()
df = pd.read_csv(sys.argv[1])
df.to_parquet(sys.argv[2])
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

CHILD_DUCKDB = """
import json, resource, sys, time
import duckdb
con = duckdb.connect()
con.execute("SET memory_limit='1GB'")
con.execute("SET preserve_insertion_order=false")
con.execute(f"SET temp_directory='{sys.argv[3]}'")
t = time.perf_counter()
src, dst = sys.argv[1], sys.argv[2]
con.execute(f"COPY (SELECT * FROM read_csv_auto('{src}')) TO '{dst}' (FORMAT parquet)")
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

CHILD_PROFILE = """
import json, resource, sys, time
from pathlib import Path
import sklearn.ensemble  # imported once per server process; not part of a profile's cost
from aiaas.data.limits import profile_limits
from aiaas.data.profile import profile_parquet
from aiaas.settings import Settings
t = time.perf_counter()
report = profile_parquet(Path(sys.argv[1]), profile_limits(Settings()))
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "rows": report["row_count"]}))
"""

CHILD_DESCRIBE = """
import json, resource, sys, time
import pandas as pd
df = pd.read_parquet(sys.argv[1])
t = time.perf_counter()
df.describe(include="all")
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def run_child(code: str, *args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_aiaas(
    csv: Path, work: Path, extra_env: dict[str, str], client: str = "httpx"
) -> dict[str, float]:
    import httpx

    data_dir = work / "aiaas-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    env = {
        **os.environ,
        "AIAAS_DATA_DIR": str(data_dir),
        "AIAAS_LOG_LEVEL": "INFO",
        "AIAAS_LIMITS__MAX_UPLOAD_BYTES": str(64 * 1024 * MiB),
        **extra_env,
    }
    aiaas = [sys.executable, "-m", "aiaas.cli.main"]
    subprocess.run(
        [*aiaas, "admin", "create-org", "bench"], env=env, check=True, capture_output=True
    )
    key = subprocess.run(
        [*aiaas, "admin", "create-api-key", "--org", "bench", "--role", "owner"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = _free_port()
    log_path = work / "server.log"
    log_file = log_path.open("w")
    server = subprocess.Popen(
        [*aiaas, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # warm-up (imports on first use), not measured
        headers = {"Authorization": f"Bearer {key}"}
        warm = httpx.post(
            f"{base}/api/v1/datasets",
            headers=headers,
            files={"file": ("warm.csv", b"a,b\n1,2\n3,4\n")},
            data={"name": "warm"},
            timeout=60,
        )
        warm.raise_for_status()
        baseline = _vm_hwm(server.pid)
        t = time.perf_counter()
        if client == "curl":  # what a user types for a big file: curl -F file=@data.csv
            done = subprocess.run(
                ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-H",
                 f"Authorization: Bearer {key}", "-F", f"file=@{csv};type=text/csv",
                 "-F", "name=bench", f"{base}/api/v1/datasets"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            text, _, status = done.stdout.rpartition("\n")
        else:
            with csv.open("rb") as handle:
                response = httpx.post(
                    f"{base}/api/v1/datasets",
                    headers=headers,
                    files={"file": (csv.name, handle, "text/csv")},
                    data={"name": "bench"},
                    timeout=3600,
                )
            text, status = response.text, str(response.status_code)
        seconds = time.perf_counter() - t
        if status != "201":
            raise RuntimeError(f"upload failed: {status} {text[:500]}")
        peak = _vm_hwm(server.pid)
        created = json.loads(text)
        version = created["version"]
        prof = httpx.get(
            f"{base}/api/v1/datasets/{created['id']}/versions/1/profile",
            headers=headers,
            timeout=60,
        ).json()
        stages = _stages(log_path.read_text())
        return {
            **stages,
            "seconds": seconds,
            "rss": peak,
            "baseline_rss": baseline,
            "rows": version["row_count"],
            "profile_ms": prof["duration_ms"],
        }
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log_file.close()


def _median_run(found: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median time (its memory and stages come with it)."""
    ordered = sorted(found, key=lambda r: r["seconds"])
    return ordered[(len(ordered) - 1) // 2]


def _stages(log: str) -> dict[str, float]:
    """The last upload's stage timings from the server's log lines."""
    import re

    found: dict[str, float] = {}
    for key in ("receive_s", "convert_s", "profile_s", "store_s", "convert_peak_rss_mib"):
        values = re.findall(rf"{key}=([0-9.]+)", log)
        if values:
            found[key] = float(values[-1])
    return found


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (and CSV cache)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="rounds of every path; the median is reported"
    )
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="aiaas-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        csv = work / f"gen_{args.rows}.csv"
        generate(csv, args.rows)
        size = csv.stat().st_size
        mib = size / MiB
        print(f"CSV: {args.rows:,} rows, {mib:,.0f} MiB", flush=True)

        (work / "spill").mkdir(exist_ok=True)
        measures: dict[str, Callable[[], dict[str, float]]] = {
            "aiaas": lambda: measure_aiaas(csv, work, {}),
            "aiaas_curl": lambda: measure_aiaas(csv, work, {}, client="curl"),
            "aiaas_unordered": lambda: measure_aiaas(
                csv, work, {"AIAAS_DATA__INGEST_PRESERVE_ORDER": "false"}
            ),
            "pandas": lambda: run_child(CHILD_PANDAS, str(csv), str(work / "pandas.parquet")),
            "duckdb": lambda: run_child(
                CHILD_DUCKDB, str(csv), str(work / "duckdb.parquet"), str(work / "spill")
            ),
        }
        if not shutil.which("curl"):
            del measures["aiaas_curl"]
        runs: dict[str, list[dict[str, float]]] = {key: [] for key in measures}
        for round_no in range(1, args.repeat + 1):  # interleaved: drift hits every path alike
            for key, measure in measures.items():
                print(f"round {round_no}/{args.repeat}: {key} ...", flush=True)
                runs[key].append(measure())
        results = {key: _median_run(found) for key, found in runs.items()}
        spread = {
            key: (min(r["seconds"] for r in found), max(r["seconds"] for r in found))
            for key, found in runs.items()
        }
        print("profile alone ...", flush=True)
        results["profile"] = run_child(CHILD_PROFILE, str(work / "duckdb.parquet"))
        print("pandas describe ...", flush=True)
        results["describe"] = run_child(CHILD_DESCRIBE, str(work / "pandas.parquet"))

        pandas_rate = mib / results["pandas"]["seconds"]
        prof, up = results["profile"], results["aiaas"]
        lines = [
            f"# Ingest benchmark ({args.rows:,} rows, {mib:,.0f} MiB CSV from gen_csv.py)",
            "",
            f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
            f"run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            "",
            f"Each path ran {args.repeat} times, interleaved; the table shows the median run "
            "(seconds min–max in brackets).",
            "",
            "| path | seconds | MiB/s | × pandas | peak RSS (MiB) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        labels = {
            "aiaas": "aiaas upload (HTTP stream → disk + SHA-256 → Parquet → profile → commit)",
            "aiaas_curl": "aiaas upload, sent with `curl -F` instead of httpx",
            "aiaas_unordered": "aiaas upload, `ingest_preserve_order=false`",
            "pandas": "pandas read_csv + to_parquet",
            "duckdb": "DuckDB COPY read_csv_auto → Parquet (1 GB limit, no order)",
        }
        for key, label in labels.items():
            if key not in results:
                continue
            r = results[key]
            rate = mib / r["seconds"]
            lines.append(
                f"| {label} | {r['seconds']:.1f} ({spread[key][0]:.1f}–{spread[key][1]:.1f}) | "
                f"{rate:.0f} | {rate / pandas_rate:.2f} | "
                f"{r['rss'] / MiB:.0f} |"
            )
        lines += [
            "",
            "| profile | seconds | peak RSS (MiB) |",
            "| --- | ---: | ---: |",
            f"| aiaas profile alone (DuckDB over the Parquet, {int(prof['rows']):,} "
            f"rows) | {prof['seconds']:.2f} | {prof['rss'] / MiB:.0f} |",
            f"| (same, inside the upload above) | {up['profile_ms'] / 1000:.2f} | — |",
            f"| pandas describe(include='all') | {results['describe']['seconds']:.2f} | "
            f"{results['describe']['rss'] / MiB:.0f} |",
            "",
            f"aiaas server RSS before the upload: {up['baseline_rss'] / MiB:.0f} MiB "
            "(peak RSS is the process high-water mark, VmHWM). The upload is parsed and "
            "converted in a separate ingest process; its own peak: "
            f"{up.get('convert_peak_rss_mib', 0):.0f} MiB. Server and ingest process at "
            f"their peaks together: {up['rss'] / MiB + up.get('convert_peak_rss_mib', 0):.0f}"
            " MiB.",
            "",
            "aiaas upload stages (server log): "
            + "; ".join(
                f"{label}: "
                + ", ".join(
                    f"{k.removesuffix('_s')} {r[k]:.2f} s"
                    for k in ("receive_s", "convert_s", "profile_s", "store_s")
                    if k in r
                )
                for label, r in (
                    ("httpx", up),
                    ("curl", results.get("aiaas_curl", {})),
                    ("unordered", results["aiaas_unordered"]),
                )
                if r
            )
            + ".",
            "",
            "Targets: aiaas upload ≥ 2× pandas throughput with peak memory < 1 GiB; "
            "profile < 5 s on 10M rows.",
        ]
        table = "\n".join(lines) + "\n"
        print()
        print(table)
        out = HERE / "results" / "ingest.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        return 0
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    _ = resource  # (children report their own getrusage)
    sys.exit(main())
