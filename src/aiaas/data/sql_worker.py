"""The SQL sandbox's query process: ``python -B -m aiaas.data.sql_worker``.

Reads one JSON request on stdin, runs one read-only query and writes a JSON status line to
stdout followed (on success) by the result as an Arrow IPC stream. Before it parses any SQL
it limits itself: CPU seconds, address space, no file writes (``RLIMIT_FSIZE=0``, with
SIGXFSZ ignored so a write fails instead of killing us), few open files. The DuckDB
connection is the locked one from :func:`aiaas.data.duck.connect`, allowed to read exactly
the caller's Parquet files; only a single SELECT statement is accepted; a watchdog thread
interrupts the query at the time limit (DuckDB's own ``max_execution_time`` is also set), and
the parent kills the process if even that fails. One process per query: nothing survives
between organizations.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
from typing import Any


def _limit(cpu_s: int, address_bytes: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 2))
    if address_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (address_bytes, address_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _fail(message: str, kind: str = "invalid") -> None:
    sys.stdout.buffer.write(json.dumps({"ok": False, "kind": kind, "error": message}).encode())
    sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()


def main() -> int:
    request: dict[str, Any] = json.loads(sys.stdin.buffer.read())
    timeout_s = float(request["timeout_s"])
    threads = int(request["threads"])
    _limit(int(timeout_s * threads) + 5, int(request.get("address_bytes") or 0))

    import duckdb
    import pyarrow as pa

    from aiaas.data.duck import (
        SandboxMisconfigured,
        clean_error,
        connect,
        qident,
        qstr,
        verify_locked,
    )

    views: dict[str, str] = request["views"]
    from aiaas.data import landlock

    try:  # no file but the caller's Parquet files and the Python installation, no TCP
        files = [os.path.abspath(path) for path in views.values()]
        landlock.restrict([*landlock.runtime_paths(), *files], ["/dev/null"])
    except OSError as exc:  # pragma: no cover - a kernel that has Landlock but refuses it
        _fail(f"sandbox setup failed: {exc}", "internal")
        return 0
    try:
        con = connect(
            allowed_paths=sorted(set(views.values())),
            memory_limit=str(request["memory_limit"]),
            threads=threads,
            max_execution_ms=int(timeout_s * 1000),
        )
        verify_locked(con, sorted(set(views.values())))
    except (duckdb.Error, SandboxMisconfigured) as exc:  # pragma: no cover - a platform bug
        _fail(f"sandbox setup failed: {clean_error(exc)}", "internal")
        return 0
    query: str = request["query"]
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        _fail(clean_error(exc))
        return 0
    if len(statements) != 1:
        _fail(f"exactly one statement is allowed (got {len(statements)})")
        return 0
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        _fail(f"only SELECT queries are allowed (got {kind.name})")
        return 0
    for name, path in views.items():
        con.execute(f"CREATE VIEW {qident(name)} AS SELECT * FROM read_parquet({qstr(path)})")

    done = threading.Event()
    timed_out = threading.Event()

    def watchdog() -> None:
        if not done.wait(timeout_s):
            timed_out.set()
            con.interrupt()

    threading.Thread(target=watchdog, daemon=True).start()
    max_rows = int(request["max_rows"])
    max_bytes = int(request["max_bytes"])
    try:
        reader = con.sql(query).to_arrow_reader(2048)
        assert reader is not None
        batches = []
        rows = nbytes = 0
        truncated = False
        for batch in reader:
            if rows + batch.num_rows > max_rows or nbytes + batch.nbytes > max_bytes:
                room = max_rows - rows
                if batch.nbytes and nbytes + batch.nbytes > max_bytes:
                    room = min(room, int(batch.num_rows * (max_bytes - nbytes) / batch.nbytes))
                batches.append(batch.slice(0, max(room, 0)))
                truncated = True
                break
            batches.append(batch)
            rows += batch.num_rows
            nbytes += batch.nbytes
        schema = reader.schema
        reader.close()
    except duckdb.Error as exc:
        done.set()
        if timed_out.is_set() or "execution time" in str(exc).lower():
            _fail(f"the query exceeded the time limit of {timeout_s:g} s", "timeout")
        else:
            _fail(clean_error(exc))
        return 0
    done.set()
    out = sys.stdout.buffer
    out.write(json.dumps({"ok": True, "truncated": truncated}).encode() + b"\n")
    with pa.ipc.new_stream(out, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
