"""The SQL sandbox's query process: ``python -B -I -m aiaas.data.sql_worker``.

The sandbox runner starts it (:func:`aiaas.sandbox.runner.child_command`, which appends
``--parent-pid=<pid>``).

Reads one JSON request on stdin, runs one read-only query and answers on stdout in JSON
lines (the parent checks every line, see :class:`aiaas.data.sql.ChildAnswer`)::

    {"ok": true, "columns": [{"name", "type", "physical"}, ...]}     the header
    [value, ...]                                                      one line per row
    {"end": true, "ok": true, "truncated": false, "row_count": 2}     the trailer

or, at any point, ``{"end": true, "ok": false, "kind": "invalid" | "timeout" | "internal",
"error": "...", "debug"?: "..."}``. Rows are strict JSON with :func:`aiaas.data.sql.json_value`
semantics, serialized here — so the API process never builds a table's Python objects — and
the result is capped here by ``max_rows`` and by ``max_bytes`` of serialized rows (each
row's line, its line break included): Arrow buffer sizes say nothing about the JSON (a list
of a million NULLs has none). Rows are converted a slice at a time (one row at a time when a
column is nested), so this process's memory is bounded by the result cap too.

Before it parses any SQL it limits and confines itself (:func:`aiaas.sandbox.child.start`):
CPU seconds, address space, no file writes (``RLIMIT_FSIZE=0``), few open files; Landlock
lets it read only the caller's Parquet files and the Python installation. The DuckDB
connection is the locked one from :func:`aiaas.data.duck.connect`, allowed
to read exactly the caller's Parquet files; only a single SELECT statement is accepted; a
watchdog thread interrupts the query at the time limit (DuckDB's own ``max_execution_time``
is also set), and the parent kills the process if even that fails. One process per query:
nothing survives between organizations.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported at run time only once the process has confined itself
    import duckdb


def _line(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class _Failure(Exception):
    """Ends the query with a failure trailer (``kind``: invalid, timeout or internal)."""

    def __init__(self, message: str, kind: str = "invalid", debug: str | None = None) -> None:
        super().__init__(message)
        self.message, self.kind, self.debug = message, kind, debug


def _fail(message: str, kind: str = "invalid", debug: str | None = None) -> None:
    answer: dict[str, Any] = {"end": True, "ok": False, "kind": kind, "error": message}
    if debug:
        answer["debug"] = debug[-2000:]
    sys.stdout.buffer.write(_line(answer) + b"\n")
    sys.stdout.buffer.flush()


def _slices(batch: Any) -> Iterator[Any]:
    """The batch in slices whose Python objects stay small (one row if a column is nested)."""
    import pyarrow as pa

    n = batch.num_rows
    if n == 0:
        return
    if any(pa.types.is_nested(field.type) for field in batch.schema):
        step = 1  # a list's length is not in its Arrow size (list_resize([], 10**6) → offsets)
    else:
        per_row = max(1, batch.nbytes // n)
        step = max(1, min(1024, 65536 // max(1, batch.num_columns), (8 << 20) // per_row))
    for start in range(0, n, step):
        yield batch.slice(start, step)


def _write_rows(
    reader: Any, out: IO[bytes], *, max_rows: int, max_bytes: int, timed_out: threading.Event
) -> tuple[int, bool]:
    """Serialize rows to ``out`` until the reader ends or a cap is hit: (rows, truncated)."""
    from aiaas.data.sql import json_value

    rows = used = 0
    for batch in reader:
        for part in _slices(batch):
            if timed_out.is_set():
                raise TimeoutError
            columns = [column.to_pylist() for column in part.columns]
            for values in zip(*columns, strict=True):
                if rows >= max_rows:
                    return rows, True
                line = _line([json_value(v) for v in values])
                if used + len(line) + 1 > max_bytes:
                    return rows, True
                out.write(line + b"\n")
                used += len(line) + 1
                rows += 1
    return rows, False


def main() -> int:
    from aiaas.sandbox import child

    try:  # dies with the API process; CPU, memory, no file writes; reads only the views
        request = child.start().request
    except OSError as exc:  # pragma: no cover - a kernel that has Landlock but refuses it
        _fail("sandbox setup failed", "internal", str(exc))
        return 0
    try:
        _run(request)
    except _Failure as failure:
        _fail(failure.message, failure.kind, failure.debug)
    return 0


def _run(request: dict[str, Any]) -> None:
    """Connect, check the query, create the views, then stream the answer."""
    import duckdb  # only once the process has limited and confined itself

    from aiaas.data.duck import SandboxMisconfigured, clean_error, connect, verify_locked

    views: dict[str, str] = request["views"]
    timeout_s = float(request["timeout_s"])
    try:
        con = connect(
            allowed_paths=sorted(set(views.values())),
            memory_limit=str(request["memory_limit"]),
            threads=int(request["threads"]),
            max_execution_ms=int(timeout_s * 1000),
        )
        verify_locked(con, sorted(set(views.values())))
    except (duckdb.Error, SandboxMisconfigured) as exc:  # pragma: no cover - a platform bug
        raise _Failure("sandbox setup failed", "internal", clean_error(exc)) from None
    query: str = request["query"]
    _check_statement(con, query)
    _create_views(con, views)
    _answer(
        con,
        query,
        timeout_s=timeout_s,
        max_rows=int(request["max_rows"]),
        max_bytes=int(request["max_bytes"]),
    )


def _check_statement(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Exactly one SELECT statement, as DuckDB's own parser sees it."""
    import duckdb

    from aiaas.data.duck import clean_error

    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise _Failure(clean_error(exc)) from None
    if len(statements) != 1:
        raise _Failure(f"exactly one statement is allowed (got {len(statements)})")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise _Failure(f"only SELECT queries are allowed (got {kind.name})")


def _create_views(con: duckdb.DuckDBPyConnection, views: dict[str, str]) -> None:
    import duckdb

    from aiaas.data.duck import clean_error, qident, qstr

    for name, path in views.items():
        try:
            con.execute(f"CREATE VIEW {qident(name)} AS SELECT * FROM read_parquet({qstr(path)})")
        except duckdb.Error as exc:  # a missing or damaged stored file: ours, not the caller's
            message = f"the view {qident(name)} could not be created"
            raise _Failure(message, "internal", clean_error(exc)) from None


def _answer(
    con: duckdb.DuckDBPyConnection, query: str, *, timeout_s: float, max_rows: int, max_bytes: int
) -> None:
    """Run the query and write the header, the rows and the trailer to stdout; a watchdog
    thread interrupts the query at the time limit."""
    import duckdb
    import pyarrow  # noqa: F401 - imported here, so its import is not in the query's time

    from aiaas.data.duck import clean_error
    from aiaas.data.sql import HEADER_MAX_BYTES
    from aiaas.data.types import arrow_kind

    done = threading.Event()
    timed_out = threading.Event()

    def watchdog() -> None:
        if not done.wait(timeout_s):
            timed_out.set()
            con.interrupt()

    threading.Thread(target=watchdog, daemon=True).start()
    out = sys.stdout.buffer
    try:
        reader = con.sql(query).to_arrow_reader(2048)
        assert reader is not None
        columns = [
            {"name": f.name, "type": arrow_kind(f.type), "physical": str(f.type)}
            for f in reader.schema
        ]
        header = _line({"ok": True, "columns": columns})
        if len(header) > HEADER_MAX_BYTES:
            raise _Failure(f"the result's column list is larger than {HEADER_MAX_BYTES} bytes")
        out.write(header + b"\n")
        rows, truncated = _write_rows(
            reader, out, max_rows=max_rows, max_bytes=max_bytes, timed_out=timed_out
        )
        reader.close()
    except (duckdb.Error, OSError, TimeoutError) as exc:  # DuckDB's errors reach pyarrow's
        # reader as OSError ("Out of Memory Error: ...")
        if timed_out.is_set() or "execution time" in str(exc).lower():
            message = f"the query exceeded the time limit of {timeout_s:g} s"
            raise _Failure(message, "timeout") from None
        raise _Failure(clean_error(exc)) from None
    except MemoryError:
        raise _Failure("the result does not fit in the query process's memory; reduce it") from None
    finally:
        done.set()
    out.write(_line({"end": True, "ok": True, "truncated": truncated, "row_count": rows}) + b"\n")
    out.flush()


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    # The answer is complete: skip interpreter teardown. There, a thread that wants the GIL
    # is ended with pthread_exit, and its forced unwind through C++ frames (DuckDB) can
    # abort the process — SIGABRT, "FATAL: exception not rethrown" — after a correct answer.
    os._exit(status)
