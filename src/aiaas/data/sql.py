"""The SQL sandbox, parent side: run one tenant query in a fresh, limited process.

Guarantees (tested in tests/data/test_sql.py):

- the query process can read exactly the Parquet files of the caller's datasets, exposed as
  views named after the datasets (``sales``; ``"sales@2"`` for a version) — no other file,
  no network, no extensions, no ATTACH/COPY/EXPORT, no configuration changes;
- one SELECT statement per request (DuckDB's own parser decides, not a regex);
- wall-clock limit (watchdog ``interrupt`` + DuckDB ``max_execution_time`` + a kill from here),
  CPU and address-space rlimits, no file writes at all, row and byte caps on the result;
- a crash or kill of the query process is a clean 4xx for the caller, never a 500.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import subprocess
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from aiaas.data.child import child_command, child_env
from aiaas.errors import InvalidInput


@dataclass(frozen=True)
class SqlLimits:
    timeout_s: float = 10.0
    max_rows: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    memory_limit: str = "512MB"
    threads: int = 1
    address_bytes: int = 4 * 1024 * 1024 * 1024


@dataclass
class SqlResult:
    columns: list[dict[str, str]]
    rows: list[list[Any]]
    truncated: bool

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([c["name"] for c in self.columns])
        for row in self.rows:
            writer.writerow(["" if v is None else v for v in row])
        return buf.getvalue()


def arrow_kind(t: pa.DataType) -> str:
    """The aiaas schema type of an Arrow type."""
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return "string"


def json_value(value: Any) -> Any:
    """A strict-JSON-safe value (no NaN/Infinity; dates as ISO text)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, datetime | date | time):
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


def run_query(
    views: dict[str, Path],
    query: str,
    limits: SqlLimits | None = None,
    *,
    root: Path | None = None,
) -> SqlResult:
    """Run ``query`` over ``views`` (name → Parquet path) in a sandboxed subprocess.

    With ``root``, the process runs there and sees the paths relative to it, so
    ``duckdb_views()`` shows no server paths. (``duckdb_settings()`` still shows the absolute
    paths of the caller's own files: DuckDB resolves ``allowed_paths``.)
    """
    limits = limits or SqlLimits()
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
        "address_bytes": limits.address_bytes,
    }
    try:
        proc = subprocess.run(
            child_command("aiaas.data.sql_worker"),
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=limits.timeout_s + 10,
            env=child_env(),
            cwd=str(root) if root is not None else "/",
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InvalidInput(f"the query exceeded the time limit of {limits.timeout_s:g} s") from None
    out = proc.stdout
    newline = out.find(b"\n")
    if proc.returncode != 0 or newline < 0:
        reason = "was killed" if proc.returncode < 0 else "failed"
        raise InvalidInput(
            f"the query process {reason} (resource limit or internal error); "
            "simplify the query or reduce its result"
        )
    status = json.loads(out[:newline])
    if not status.get("ok"):
        raise InvalidInput(str(status.get("error", "query failed"))[:500])
    table = pa.ipc.open_stream(out[newline + 1 :]).read_all()
    columns = [
        {"name": f.name, "type": arrow_kind(f.type), "physical": str(f.type)} for f in table.schema
    ]
    rows = [[json_value(v) for v in row.values()] for row in _rows(table)]
    return SqlResult(columns=columns, rows=rows, truncated=bool(status.get("truncated")))


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    # to_pylist keys by column name; duplicate names (SELECT a, a) would collapse, so rename.
    names = [f"c{i}" for i in range(table.num_columns)]
    result: list[dict[str, Any]] = table.rename_columns(names).to_pylist()
    return result
