"""Peak memory of a real `aiaas serve` under the issue-8 memory attacks (items 1 and 3).

    python benchmarks/attack_memory.py               # this checkout
    python benchmarks/attack_memory.py --src /old/src   # another tree (e.g. a git worktree)

Starts the server on a fresh data dir, then measures its peak resident set (VmHWM) before
and after each attack:

- ``bodies``: unauthenticated and authenticated 128 MiB bodies declared as octet-stream or
  multipart to JSON and form routes (8 at once);
- ``sql``: a viewer's query whose result has near-zero Arrow bytes but millions of elements.

Writes benchmarks/results/attack_memory.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

MiB = 1024 * 1024
HERE = Path(__file__).parent


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(src: Path | None, data_dir: Path) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    port = free_port()
    env = {**os.environ, "AIAAS_DATA_DIR": str(data_dir), "AIAAS_AUTH__ARGON2_MEMORY_KIB": "1024"}
    env.pop("AIAAS_DATABASE_URL", None)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    log = (data_dir.parent / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiaas.cli.main", "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return proc, base, env
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def api_key(env: dict[str, str], role: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "aiaas.cli.main", "admin", "create-api-key"]
        + ["--org", "default", "--role", role, "--name", f"bench-{role}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def body(mib: int) -> Iterator[bytes]:
    block = b"x" * MiB
    for _ in range(mib):
        yield block


def attack_bodies(base: str, key: str) -> list[int]:
    cases = [
        (path, ctype, auth)
        for path in ("/api/v1/api-keys", "/api/v1/auth/token")
        for ctype in ("application/octet-stream", "multipart/form-data; boundary=x")
        for auth in (None, key)
    ]

    def one(case: tuple[str, str, str | None]) -> int:
        path, ctype, auth = case
        headers = {"Content-Type": ctype}
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        try:
            return httpx.post(
                base + path, content=body(128), headers=headers, timeout=300
            ).status_code
        except httpx.HTTPError:
            return -1

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, cases))


def attack_sql(base: str, key: str) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"}
    files = {"file": ("t.csv", b"a,b\n1,2\n3,4\n", "text/csv")}
    httpx.post(base + "/api/v1/datasets", headers=headers, files=files, data={"name": "t"})
    queries = [
        "SELECT list_resize([], 20000) AS l FROM range(10000)",  # lists of NULLs: ~0 Arrow bytes
        "SELECT " + ", ".join(f"NULL AS c{i}" for i in range(1000)) + " FROM range(10000)",
        "SELECT true AS a, false AS b, true AS c FROM range(10000)",
    ]
    statuses = []
    for query in queries:
        response = httpx.post(
            base + "/api/v1/sql", headers=headers, json={"query": query}, timeout=600
        )
        statuses.append(response.status_code)
    return statuses


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", type=Path, default=None, help="source tree to run (its src/)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        proc, base, env = start(args.src, data_dir)
        try:
            admin, viewer = api_key(env, "admin"), api_key(env, "viewer")
            httpx.get(base + "/api/v1/me", headers={"Authorization": f"Bearer {admin}"})
            for name, attack, key in (
                ("bodies (item 1)", attack_bodies, admin),
                ("sql (item 3)", attack_sql, viewer),
            ):
                before = vm_hwm(proc.pid)
                started = time.monotonic()
                statuses = attack(base, key)
                after = vm_hwm(proc.pid)
                rows.append((name, before / MiB, after / MiB, time.monotonic() - started, statuses))
        finally:
            proc.terminate()
            proc.wait(30)
    lines = [
        f"# Server memory under attack ({args.src or 'this checkout'})",
        "",
        "| attack | peak before (MiB) | peak after (MiB) | growth (MiB) | seconds | statuses |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, before, after, seconds, statuses in rows:
        lines.append(
            f"| {name} | {before:.0f} | {after:.0f} | {after - before:.0f} | {seconds:.1f} | "
            f"{sorted(set(statuses))} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.src is None:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "attack_memory.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
