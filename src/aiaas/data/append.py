"""The append engine: a version's Parquet file plus JSON records → a new Parquet file.

Pure (no database, no settings): the caller gives the parent's file and schema, the work
directory and the limits. Records are checked first (:func:`check_records`), so what reaches
DuckDB is storable; a value DuckDB cannot cast to its column's type is a 422.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aiaas.data import ingest
from aiaas.data.duck import clean_error, connect, qident, qstr
from aiaas.data.schemas import has_lone_surrogate
from aiaas.errors import InvalidInput

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what a JSON record can carry into Parquet


def _value_problem(value: Any) -> str | None:
    """Why a JSON value cannot be stored as it is, or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if _INT_MIN <= value <= _INT_MAX else "an integer outside the 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "not a finite number"
    if isinstance(value, str):
        return "a lone surrogate" if has_lone_surrogate(value) else None
    if isinstance(value, list):
        return next((p for p in map(_value_problem, value) if p), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or has_lone_surrogate(key):
                return "a lone surrogate in a key"
            if problem := _value_problem(item):
                return problem
        return None
    return f"a value of type {type(value).__name__}"


def check_records(records: list[dict[str, Any]]) -> None:
    """422 naming the first record and column whose value JSON → Parquet cannot carry.

    Integers beyond 64 bits, NaN and ±Infinity (also ``1e400``, which JSON parsers read as
    infinity) and strings with lone surrogates would otherwise crash the writer or silently
    become NULL.
    """
    for i, record in enumerate(records):
        for column, value in record.items():
            if has_lone_surrogate(column):
                why: str | None = "a lone surrogate in the name"
            else:
                why = _value_problem(value)
            if why is None:
                continue
            shown = column[:100].encode("utf-8", "backslashreplace").decode("utf-8")
            raise InvalidInput(
                f"record {i}, column {column[:100]!r}: {why}",
                errors=[{"record": i, "column": shown, "detail": why}],
            )


def unknown_columns(records: list[dict[str, Any]], schema: list[dict[str, Any]]) -> list[str]:
    """Column names used by ``records`` that ``schema`` (a version's) does not have, sorted."""
    return sorted({k for r in records for k in r} - {c["name"] for c in schema})


def _select_sql(schema: list[dict[str, Any]], given: set[str]) -> tuple[str, str]:
    """The JSON reader's ``columns={…}`` and the SELECT list that casts each column to its
    stored type (NULL for a column no record has)."""
    fields = ", ".join(f"{qident(c['name'])}: 'JSON'" for c in schema if c["name"] in given)
    select = ", ".join(
        (
            f"CAST(json_extract_string({qident(c['name'])}, '$') AS {c['physical']})"
            if c["name"] in given
            else f"CAST(NULL AS {c['physical']})"
        )
        + f" AS {qident(c['name'])}"
        for c in schema
    )
    return fields, select


def append_records(
    parent: Path,
    schema: list[dict[str, Any]],
    records: list[dict[str, Any]],
    wd: Path,
    *,
    memory_limit: str,
    threads: int,
) -> Path:
    """Write ``parent`` + ``records`` (cast to ``schema``) to a new Parquet file in ``wd``."""
    jsonl = ingest.write_records_jsonl(records, wd)
    out = wd / "appended.parquet"
    fields, select = _select_sql(schema, {k for r in records for k in r})
    con = connect(
        allowed_directories=[wd],
        allowed_paths=[parent],
        memory_limit=memory_limit,
        threads=threads,
    )
    try:
        con.execute(
            f"COPY (SELECT * FROM read_parquet({qstr(str(parent))}) UNION ALL "
            f"SELECT {select} FROM read_json({qstr(str(jsonl))}, "
            f"format='newline_delimited', columns={{{fields}}})) "
            f"TO {qstr(str(out))} (FORMAT parquet, COMPRESSION zstd)"
        ).fetchall()
    except Exception as exc:
        raise InvalidInput(
            "records do not match the dataset's schema: "
            + clean_error(exc, replacements={str(wd): "<work>"})
        ) from None
    finally:
        con.close()
    return out
