"""The SQL sandbox, parent side: run one tenant query in a fresh, limited process.

Guarantees (tested in tests/data/test_sql.py and tests/data/test_sql_bounds.py):

- the query process can read exactly the Parquet files of the caller's datasets, exposed as
  views named after the datasets (``sales``; ``"sales@2"`` for a version) — no other file,
  no network, no extensions, no ATTACH/COPY/EXPORT, no configuration changes;
- one SELECT statement per request (DuckDB's own parser decides, not a regex);
- wall-clock limit (watchdog ``interrupt`` + DuckDB ``max_execution_time`` + a kill from here),
  CPU and address-space rlimits, no file writes at all, row and byte caps on the result;
- bounded memory here: the query process serializes the result (strict JSON, one row per
  line) and caps it by its serialized size; this side reads at most ``max_bytes`` plus
  :data:`HEADER_MAX_BYTES` and a small margin of it, never more, checks every line as the
  answer of an untrusted process (:class:`ChildAnswer`) and spools the checked rows to an
  unlinked temporary file, from which the response is streamed row by row;
- every failure is known before anything is streamed: the caller's errors (a bad query, a
  limit, a crash of the query process) are 422s; internal failures (sandbox setup, a stored
  file that cannot be read, a malformed answer) are logged as ``sql_internal_error`` and are
  a 500 that says so. A crash is logged as ``sql_internal_error`` too.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, NoReturn

import structlog

from aiaas.data.types import BASE_TYPES
from aiaas.errors import AiaasError, InvalidInput
from aiaas.sandbox import ChildLimits, ChildPaths, run_child

log = structlog.get_logger()

#: The header line (the column list) may take this much beyond ``max_bytes``.
HEADER_MAX_BYTES = 1024 * 1024
_TRAILER_MAX_BYTES = 16 * 1024
_CHUNK = 64 * 1024

#: OWASP CSV injection: a text cell starting with one of these is a formula to a spreadsheet.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """A text cell for CSV output: formula-like text gets a leading ``'`` (OWASP)."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


@dataclass(frozen=True)
class SqlLimits:
    """A query's limits (built by :mod:`aiaas.data.limits`)."""

    timeout_s: float
    max_rows: int
    max_bytes: int
    memory_limit: str
    threads: int
    address_bytes: int


def json_value(value: Any) -> Any:
    """A strict-JSON-safe value (no NaN/Infinity; dates as ISO text)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def _dumps(value: Any) -> bytes:
    # as FastAPI's JSONResponse: compact, UTF-8, no NaN
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def _loads(line: bytes) -> Any:
    return json.loads(line.decode("utf-8"), parse_constant=_no_constant)


class ChildProtocolError(Exception):
    """The query process's answer broke the protocol (a bug, or a compromised process)."""


class ChildAnswer:
    """The query process's stdout, fed in chunks, checked line by line, rows spooled.

    Never buffers more than one line, never accepts more than :attr:`limit` bytes in all;
    a row must be a JSON array (no NaN/Infinity, valid UTF-8) of exactly one value per column.
    Checked rows are re-serialized (strict JSON) into ``spool``, one per line.
    """

    def __init__(self, *, max_rows: int, max_bytes: int, spool: IO[bytes]):
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.limit = HEADER_MAX_BYTES + max_bytes + _TRAILER_MAX_BYTES
        self.spool = spool
        self.spool_bytes = 0
        self.columns: list[dict[str, str]] | None = None
        self.row_count = 0
        self.truncated = False
        self.failure: dict[str, str] | None = None
        self.done = False
        self._total = 0
        self._row_bytes = 0
        self._pending: list[bytes] = []
        self.buffered_bytes = 0

    def feed(self, chunk: bytes) -> None:
        if self._total + len(chunk) > self.limit:
            raise ChildProtocolError(f"more than {self.max_bytes} bytes")
        self._total += len(chunk)
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            if self._pending:
                piece = b"".join([*self._pending, piece])
                self._pending.clear()
                self.buffered_bytes = 0
            self._line(piece)
            start = end + 1
        if start < len(chunk):
            self._pending.append(chunk[start:])
            self.buffered_bytes += len(chunk) - start
            self._check_length(self.buffered_bytes)

    def finish(self) -> None:
        if not self.done:
            raise ChildProtocolError("the answer has no trailer")

    def _check_length(self, n: int) -> None:
        if self.columns is None:
            if n > HEADER_MAX_BYTES:
                raise ChildProtocolError(f"the first line is longer than {HEADER_MAX_BYTES} bytes")
        elif n > max(self.max_bytes, _TRAILER_MAX_BYTES):
            raise ChildProtocolError(f"more than {self.max_bytes} bytes")

    def _line(self, line: bytes) -> None:
        self._check_length(len(line))
        if self.done:
            raise ChildProtocolError("data after the trailer")
        if self.columns is None:
            try:
                obj = _loads(line)
            except (ValueError, RecursionError):
                obj = None
            if not isinstance(obj, dict):
                raise ChildProtocolError("the first line is not a JSON object")
            if obj.get("end") is True:
                self._end(obj)
            elif obj.get("ok") is True:
                self.columns = _columns(obj.get("columns"))
            else:
                raise ChildProtocolError("malformed header")
        elif line.startswith(b"["):
            self._row(line)
        else:
            try:
                obj = _loads(line)
            except (ValueError, RecursionError):
                obj = None
            if not isinstance(obj, dict) or obj.get("end") is not True:
                raise ChildProtocolError("the trailer does not close the answer")
            self._end(obj)

    def _row(self, line: bytes) -> None:
        assert self.columns is not None
        number = self.row_count + 1
        if number > self.max_rows:
            raise ChildProtocolError(f"more than {self.max_rows} rows")
        self._row_bytes += len(line) + 1
        if self._row_bytes > self.max_bytes:
            raise ChildProtocolError(f"more than {self.max_bytes} bytes")
        try:
            values = _loads(line)
            if not isinstance(values, list):
                raise ValueError("not an array")
            out = _dumps(values)
        except (ValueError, RecursionError):  # incl. UnicodeError: bad UTF-8, lone surrogates
            raise ChildProtocolError(f"row {number} is not strict JSON") from None
        if len(values) != len(self.columns):
            raise ChildProtocolError(
                f"row {number} has {len(values)} values, expected {len(self.columns)}"
            )
        self.spool.write(out + b"\n")
        self.spool_bytes += len(out) + 1
        self.row_count = number

    def _end(self, obj: dict[str, Any]) -> None:
        self.done = True
        if obj.get("ok") is True and self.columns is not None:
            count, truncated = obj.get("row_count"), obj.get("truncated")
            if not isinstance(count, int) or not isinstance(truncated, bool):
                raise ChildProtocolError("malformed trailer")
            if count != self.row_count:
                raise ChildProtocolError(
                    f"the trailer counts {count} rows, {self.row_count} were sent"
                )
            self.truncated = truncated
            return
        kind, error = obj.get("kind"), obj.get("error")
        if obj.get("ok") is not False or kind not in ("invalid", "timeout", "internal"):
            raise ChildProtocolError("malformed trailer")
        if not isinstance(error, str):
            raise ChildProtocolError("malformed trailer")
        debug = obj.get("debug")
        self.failure = {
            "kind": str(kind),
            "error": error[:500],
            "debug": debug[:2000] if isinstance(debug, str) else "",
        }


def _columns(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ChildProtocolError("malformed columns")
    columns = []
    for column in value:
        if (
            not isinstance(column, dict)
            or set(column) != {"name", "type", "physical"}
            or not all(isinstance(v, str) for v in column.values())
            or column["type"] not in BASE_TYPES  # what arrow_kind() can say
        ):
            raise ChildProtocolError("malformed columns")
        columns.append(
            {"name": column["name"], "type": column["type"], "physical": column["physical"]}
        )
    return columns


@dataclass
class SqlResult:
    """A checked result, spooled: streamed as JSON or CSV, one row's objects at a time."""

    columns: list[dict[str, str]]
    row_count: int
    truncated: bool
    spool: IO[bytes]  # one strict-JSON array per line
    spool_bytes: int

    def iter_rows(self) -> Iterator[list[Any]]:
        try:
            self.spool.seek(0)
            for line in self.spool:
                yield json.loads(line)
        finally:
            self.close()

    def _json_parts(self) -> tuple[bytes, bytes]:
        head = b'{"columns":' + _dumps(self.columns) + b',"rows":['
        tail = b'],"row_count":%d,"truncated":%s}' % (
            self.row_count,
            b"true" if self.truncated else b"false",
        )
        return head, tail

    def json_length(self) -> int:
        """The byte length of :meth:`json_chunks` (rows are joined by commas, not newlines)."""
        head, tail = self._json_parts()
        return len(head) + max(self.spool_bytes - 1, 0) + len(tail)

    def json_chunks(self) -> Iterator[bytes]:
        """``{"columns", "rows", "row_count", "truncated"}``, as the spooled rows are read."""
        head, tail = self._json_parts()
        try:
            buf = bytearray(head)
            self.spool.seek(0)
            for i, line in enumerate(self.spool):
                if i:
                    buf += b","
                buf += line[:-1]
                if len(buf) >= _CHUNK:
                    yield bytes(buf)
                    buf.clear()
            yield bytes(buf + tail)
        finally:
            self.close()

    def csv_chunks(self) -> Iterator[bytes]:
        """A header and one CSV record per row; formula-like text gets a leading ``'``."""
        try:
            buf = io.StringIO()
            # "\r\n" as terminator makes the writer quote any field with a CR or LF in it;
            # the records are then ended with "\n" as before.
            writer = csv.writer(buf, lineterminator="\r\n")
            out = bytearray(_csv_record(writer, buf, [csv_text(c["name"]) for c in self.columns]))
            self.spool.seek(0)
            for line in self.spool:
                row = json.loads(line)
                cells = ["" if v is None else csv_text(v) if isinstance(v, str) else v for v in row]
                out += _csv_record(writer, buf, cells)
                if len(out) >= _CHUNK:
                    yield bytes(out)
                    out.clear()
            yield bytes(out)
        finally:
            self.close()

    def close(self) -> None:
        self.spool.close()


def _csv_record(writer: Any, buf: io.StringIO, cells: list[Any]) -> bytes:
    buf.seek(0)
    buf.truncate()
    writer.writerow(cells)
    return buf.getvalue()[:-2].encode() + b"\n"


def run_query(
    views: dict[str, Path],
    query: str,
    limits: SqlLimits,
    *,
    root: Path | None = None,
    spool_dir: Path | None = None,
) -> SqlResult:
    """Run ``query`` over ``views`` (name → Parquet path) in a sandboxed subprocess.

    With ``root``, the process runs there and sees the paths relative to it, so
    ``duckdb_views()`` shows no server paths. (``duckdb_settings()`` still shows the absolute
    paths of the caller's own files: DuckDB resolves ``allowed_paths``.) The checked rows are
    spooled to an unlinked file in ``spool_dir`` (default: the system's temporary directory).
    """
    if root is not None:
        views = {name: path.relative_to(root) for name, path in views.items()}
    if not query.strip():
        raise InvalidInput("the query is empty")
    request = {
        "views": {name: str(path) for name, path in views.items()},
        "query": query,
        "timeout_s": limits.timeout_s,
        "max_rows": limits.max_rows,
        "max_bytes": limits.max_bytes,
        "memory_limit": limits.memory_limit,
        "threads": limits.threads,
    }
    spool = tempfile.TemporaryFile(dir=spool_dir)
    try:
        answer = ChildAnswer(max_rows=limits.max_rows, max_bytes=limits.max_bytes, spool=spool)
        _run_child(answer, request, limits, root)
        assert answer.columns is not None
        return SqlResult(
            columns=answer.columns,
            row_count=answer.row_count,
            truncated=answer.truncated,
            spool=spool,
            spool_bytes=answer.spool_bytes,
        )
    except BaseException:
        spool.close()
        raise


def _run_child(
    answer: ChildAnswer, request: dict[str, Any], limits: SqlLimits, root: Path | None
) -> None:
    """Run the query process to its end, feeding its stdout to ``answer``; raise its failure."""
    views = request["views"].values()
    base = root if root is not None else Path("/")
    try:
        run = run_child(
            "aiaas.data.sql_worker",
            request,
            ChildLimits(
                timeout_s=limits.timeout_s + 10,  # the worker's own watchdog stops it first
                cpu_s=int(limits.timeout_s * limits.threads) + 5,
                address_bytes=limits.address_bytes,
                max_file_bytes=0,  # it writes no file
                max_output_bytes=answer.limit + 1,  # the answer refuses more first
                open_files=1024,
            ),
            # no file but the caller's Parquet files and the Python installation, no TCP
            ChildPaths(cwd=base, read=tuple(base / v for v in views)),
            on_output=answer.feed,
        )
    except ChildProtocolError as exc:
        _internal("the query process sent a malformed answer", str(exc), None, "")
    if run.timed_out:
        log.warning("sql_process_timeout", timeout_s=limits.timeout_s)
        raise InvalidInput(f"the query exceeded the time limit of {limits.timeout_s:g} s")
    rc, tail = run.returncode, run.stderr
    if run.killed_at_limit:  # RLIMIT_CPU, or the kernel's OOM killer
        log.warning("sql_process_killed", signal=run.signal, stderr=tail)
        raise InvalidInput(
            "the query process was stopped at its CPU or memory limit; "
            "simplify the query or reduce its result"
        )
    if rc < 0:
        # A query that crashes DuckDB is still the caller's query: a 422 for them, and an
        # error in our log (it is a bug of DuckDB or of the sandbox worth reporting).
        log.error(
            "sql_internal_error", message=f"crashed ({run.signal})", returncode=rc, stderr=tail
        )
        raise InvalidInput(
            f"the query process crashed ({run.signal}); it is logged. Simplify the query, and "
            "report the request id if it persists"
        )
    if rc != 0:
        _internal(f"the query process exited with status {rc}", "", rc, tail)
    try:
        answer.finish()
    except ChildProtocolError as exc:
        _internal("the query process sent a malformed answer", str(exc), rc, tail)
    if answer.failure is not None:
        failure = answer.failure
        if failure["kind"] == "internal":
            _internal(failure["error"], failure["debug"], rc, tail)
        raise InvalidInput(failure["error"])


def _internal(message: str, debug: str, returncode: int | None, stderr: str) -> NoReturn:
    log.error(
        "sql_internal_error", message=message, debug=debug, returncode=returncode, stderr=stderr
    )
    raise AiaasError(
        f"internal error of the SQL sandbox: {message}. "
        "It is logged; report the request id if it persists."
    )
