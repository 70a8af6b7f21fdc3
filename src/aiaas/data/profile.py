"""Schema inference and the profile / quality report of one Parquet version.

All statistics come from DuckDB over the Parquet file, in a few column-grouped passes (the
file is columnar, so a pass over some columns reads only those):

1. aggregates of every column: count, missing, distinct, min/max, mean, std, text lengths.
   Up to ``exact_rows`` rows distinct counts and quantiles are exact (``count(DISTINCT)``,
   ``quantile_cont``); above, distinct counts are HyperLogLog estimates and quantiles come
   from a ~200k-row block sample (row-number windows the Parquet reader can skip to) — the
   report says which;
2. per column: binned histogram, IQR outlier count, exact top values when there are at most
   1,000 distinct values;
3. duplicate rows: none if a column is provably unique (a permutation of an integer range,
   or exactly as many distinct values as rows), else rows minus distinct 64-bit row hashes;
4. from the sample: type-consistency findings, PII detection (personal values are masked in
   the report) and an IsolationForest anomaly share on the numeric columns.

Schema types are those of :mod:`aiaas.data.types`; the profile is what refines ``string`` to
``categorical`` (a text column with few distinct values relative to its size).
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from aiaas.data.duck import connect, qident, qstr
from aiaas.data.pii import detect_pii
from aiaas.data.types import NUMERIC_TYPES, BaseType, ColumnType, base_type

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
HIST_BINS = 20
TOP_K = 10
TOP_MAX_DISTINCT = 1000  # exact top values up to this many distinct values
CATEGORICAL_MAX_DISTINCT = 50
AGG_CHUNK = 192  # aggregates per query (see _aggregate)
PASS1_COLUMNS = 32  # columns per query in pass 1 (see _by_column)
PASS2_COLUMNS = 1  # columns per query in pass 2, above 100k rows
SAMPLE_WINDOWS = 20  # row-number windows of the block sample (see _block_sample)
_FLOAT_MAX = sys.float_info.max


def is_categorical(distinct: int, non_null: int) -> bool:
    return 0 < distinct <= CATEGORICAL_MAX_DISTINCT and distinct <= max(non_null, 1) * 0.5


def infer_schema(
    columns: list[tuple[str, str]], profile: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """``[{"name", "type", "physical", "nullable"}]`` for the version's columns."""
    stats = {c["name"]: c for c in (profile or {}).get("columns", [])}
    out = []
    for name, physical in columns:
        kind: ColumnType = base_type(physical)
        st = stats.get(name)
        if kind == "string" and st and is_categorical(st["distinct"], st["count"]):
            kind = "categorical"
        out.append(
            {
                "name": name,
                "type": kind,
                "physical": physical,
                "nullable": bool(st["missing"]) if st else True,
            }
        )
    return out


@dataclass(frozen=True)
class ProfileLimits:
    """Built by :mod:`aiaas.data.limits`; the sampling sizes below are fixed, not settings."""

    memory_limit: str
    threads: int
    exact_rows: int
    sample_rows: int = 10_000
    quantile_sample_rows: int = 200_000
    pii_min_share: float = 0.3


@dataclass
class ColumnStats:
    """What the passes learn about one column; the report is built from it.

    The aggregate fields hold DuckDB's values as they come (pass 1 and pass 2 set them by
    name, see :class:`_Aggregates`); ``hist_edges`` and ``fences`` are the bounds pass 2 put
    into its SQL, which the report needs back.
    """

    name: str
    physical: str
    kind: BaseType
    # pass 1
    count: int | None = None
    distinct: int | None = None
    min: Any = None  # a number, or a datetime's text
    max: Any = None
    mean: float | None = None
    std: float | None = None
    quantiles: list[float | None] | None = None
    true_count: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    max_bytes: int | None = None
    empty: int | None = None
    # pass 2
    hist: dict[Any, int] | None = None  # upper edge -> count
    outliers: int | None = None
    top: dict[Any, int] | None = None  # value -> count
    hist_edges: list[float] | None = None  # HIST_BINS + 1 edges, lowest first
    fences: tuple[float, float] | None = None  # IQR outlier bounds (lower, upper)
    # pass 3
    unique_verified: bool = False

    @property
    def numeric(self) -> bool:
        return self.kind in NUMERIC_TYPES


class _Aggregates:
    """Aggregate expressions, each remembered with the column and the stat it computes."""

    def __init__(self) -> None:
        self.exprs: list[str] = []
        self.slots: list[tuple[str, str]] = []  # (column, ColumnStats field)

    def add(self, column: str, stat: str, expr: str) -> None:
        self.exprs.append(expr)
        self.slots.append((column, stat))

    def run_into(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        stats: dict[str, ColumnStats],
        columns_per_query: int,
    ) -> None:
        for (column, stat), value in _by_column(
            con, table, self.slots, self.exprs, columns_per_query
        ):
            setattr(stats[column], stat, value)


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _finite(value: float) -> float:
    """``value`` clamped into the finite doubles: a bound put into SQL is never ``inf``."""
    return max(-_FLOAT_MAX, min(_FLOAT_MAX, value))


def profile_parquet(path: Path, limits: ProfileLimits) -> dict[str, Any]:
    """Compute the profile and quality report of one Parquet file."""
    started = time.perf_counter()
    con = connect(allowed_paths=[path], memory_limit=limits.memory_limit, threads=limits.threads)
    try:
        return _profile(con, path, limits, started)
    finally:
        con.close()


def _profile(
    con: duckdb.DuckDBPyConnection, path: Path, limits: ProfileLimits, started: float
) -> dict[str, Any]:
    """The four passes (see the module docstring), then the report built from their stats."""
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({qstr(str(path))})")
    columns = [(str(r[0]), str(r[1])) for r in con.execute("DESCRIBE t").fetchall()]
    rows = int(con.execute("SELECT count(*) FROM t").fetchall()[0][0])
    exact = rows <= limits.exact_rows
    if exact:
        con.execute("CREATE TEMP VIEW s AS SELECT * FROM t")
    else:  # a block sample (~quantile_sample_rows) for quantiles, PII, types
        con.execute(f"CREATE TEMP TABLE s AS {_block_sample(path, columns, rows, limits)}")
    stats = {name: ColumnStats(name, physical, base_type(physical)) for name, physical in columns}
    _aggregates(con, stats, exact)
    _distributions(con, stats, rows)
    duplicates = _duplicate_rows(con, stats, rows, exact)
    sample, consistency = _sample(con, stats, rows, limits)
    report_columns = [
        _column_report(st, rows, exact, sample, consistency.get(st.name), limits)
        for st in stats.values()
    ]
    findings = [{"column": c["name"], **f} for c in report_columns for f in c["findings"]]
    if duplicates:
        findings.append(
            {"column": None, "kind": "duplicates", "detail": f"{duplicates} duplicate rows"}
        )
    numeric = [n for n in sample if stats[n].numeric]
    return {
        "row_count": rows,
        "column_count": len(columns),
        "exact": exact,
        "duplicate_rows": duplicates,
        "duplicate_share": round(duplicates / rows, 6) if rows else 0.0,
        "anomaly": _anomaly_share(sample, numeric),
        "columns": report_columns,
        "findings": findings,
        "quality": _quality(report_columns, rows, duplicates, inconsistent=len(consistency)),
        "sample_rows": min(rows, limits.sample_rows),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }


# --------------------------------------------------------------------------- the passes


def _aggregates(con: duckdb.DuckDBPyConnection, stats: dict[str, ColumnStats], exact: bool) -> None:
    """Pass 1: per-column aggregates; above ``exact_rows``, quantiles from the sample."""
    agg = _Aggregates()
    qs = "[" + ", ".join(str(q) for q in QUANTILES) + "]"
    for name, st in stats.items():
        c = qident(name)
        agg.add(name, "count", f"count({c})")
        agg.add(
            name, "distinct", f"count(DISTINCT {c})" if exact else f"approx_count_distinct({c})"
        )
        if st.numeric:
            x = f"CAST({c} AS DOUBLE)"
            # integers are always finite; only floats need the NaN/inf guard
            finite = x if st.kind == "integer" else f"CASE WHEN isfinite({x}) THEN {x} END"
            agg.add(name, "min", f"min({finite})")
            agg.add(name, "max", f"max({finite})")
            agg.add(name, "mean", f"avg({finite})")
            agg.add(name, "std", f"stddev_samp({finite})")
            if exact:
                agg.add(name, "quantiles", f"quantile_cont({finite}, {qs})")
        elif st.kind == "datetime":
            agg.add(name, "min", f"CAST(min({c}) AS VARCHAR)")
            agg.add(name, "max", f"CAST(max({c}) AS VARCHAR)")
        elif st.kind == "boolean":
            agg.add(name, "true_count", f"count_if({c})")
        else:
            if exact:  # character lengths cost a UTF-8 decode per value
                agg.add(name, "min_length", f"min(length(CAST({c} AS VARCHAR)))")
                agg.add(name, "max_length", f"max(length(CAST({c} AS VARCHAR)))")
            agg.add(name, "max_bytes", f"max(strlen(CAST({c} AS VARCHAR)))")
            agg.add(name, "empty", f"count_if(CAST({c} AS VARCHAR) = '')")
    agg.run_into(con, "t", stats, PASS1_COLUMNS)
    numeric = [st for st in stats.values() if st.numeric]
    if not exact and numeric:  # quantiles from the row sample (t-digest over all rows: 7x more)
        exprs = []
        for st in numeric:
            x = f"CAST({qident(st.name)} AS DOUBLE)"
            exprs.append(f"quantile_cont(CASE WHEN isfinite({x}) THEN {x} END, {qs})")
        for st, value in zip(numeric, _aggregate(con, "s", exprs), strict=True):
            st.quantiles = value


def _histogram_edges(lo: float, hi: float) -> list[float]:
    """HIST_BINS equal bins over [lo, hi], finite even when ``hi - lo`` overflows."""
    span = hi - lo
    if math.isfinite(span):
        width = span / HIST_BINS if hi > lo else 1.0
        return [_finite(lo + width * i) for i in range(HIST_BINS + 1)]
    # e.g. -1e308 .. 1e308: the span, and ``width * i``, overflow; their halves do not
    half = hi / (2 * HIST_BINS) - lo / (2 * HIST_BINS)
    return [_finite((lo / 2 + half * i) * 2) for i in range(HIST_BINS + 1)]


def _distributions(
    con: duckdb.DuckDBPyConnection, stats: dict[str, ColumnStats], rows: int
) -> None:
    """Pass 2: binned histograms, IQR outlier counts, exact top values."""
    agg = _Aggregates()
    for name, st in stats.items():
        c = qident(name)
        if st.numeric and st.min is not None:
            st.hist_edges = _histogram_edges(float(st.min), float(st.max))
            x = f"CAST({c} AS DOUBLE)"
            uppers = ", ".join(repr(edge) for edge in st.hist_edges[1:])
            # binned histogram: (previous, upper] per bin; far cheaper than a map histogram
            agg.add(name, "hist", f"histogram(CASE WHEN isfinite({x}) THEN {x} END, [{uppers}])")
            q = st.quantiles or []
            if len(q) == len(QUANTILES) and q[1] is not None and q[3] is not None:
                iqr = float(q[3]) - float(q[1])
                lower, upper = _finite(float(q[1]) - 1.5 * iqr), _finite(float(q[3]) + 1.5 * iqr)
                st.fences = (lower, upper)
                agg.add(name, "outliers", f"count_if({x} < {lower!r} OR {x} > {upper!r})")
        v = f"CAST({c} AS VARCHAR)" if st.kind == "datetime" else c
        if 0 < int(st.distinct or 0) <= TOP_MAX_DISTINCT and st.kind != "float":
            agg.add(name, "top", f"histogram({v})")
    # small chunks: Parquet is columnar, so splitting costs no extra reads, and one query
    # holding every histogram state at once ran out of memory on 10M rows
    agg.run_into(con, "t", stats, PASS2_COLUMNS if rows > 100_000 else 64)


def _duplicate_rows(
    con: duckdb.DuckDBPyConnection, stats: dict[str, ColumnStats], rows: int, exact: bool
) -> int:
    """Pass 3: duplicate rows = rows minus distinct 64-bit row hashes (0 with a unique column)."""
    if not stats or not rows:
        return 0
    key = _unique_column(con, stats, rows, exact)
    if key is not None:
        stats[key].unique_verified = True  # a unique column: no duplicate rows
        return 0
    row_hash = "hash(" + ", ".join(qident(n) for n in stats) + ")"
    return rows - int(con.execute(f"SELECT count(DISTINCT {row_hash}) FROM t").fetchall()[0][0])


def _sample(
    con: duckdb.DuckDBPyConnection, stats: dict[str, ColumnStats], rows: int, limits: ProfileLimits
) -> tuple[dict[str, list[Any]], dict[str, dict[str, Any]]]:
    """Pass 4: the sampled values of text and numeric columns, and the type-consistency
    findings of the text columns among them."""
    cols = [n for n, st in stats.items() if st.kind in ("string", "integer", "float")]
    if not cols or not rows:
        return {}, {}
    sel = ", ".join(qident(n) for n in cols)
    con.execute(f"CREATE TEMP TABLE ps AS SELECT {sel} FROM s LIMIT {int(limits.sample_rows)}")
    table = con.sql("SELECT * FROM ps").to_arrow_table()
    sample = {n: table.column(i).to_pylist() for i, n in enumerate(cols)}
    return sample, _consistency(con, [n for n in cols if stats[n].kind == "string"])


# --------------------------------------------------------------------------- the report


def _column_report(
    st: ColumnStats,
    rows: int,
    exact: bool,
    sample: dict[str, list[Any]],
    consistency: dict[str, Any] | None,
    limits: ProfileLimits,
) -> dict[str, Any]:
    """One column of the report: counts, the type's statistics, top values, findings."""
    count = int(st.count or 0)
    missing = rows - count
    distinct = rows if st.unique_verified else int(st.distinct or 0)
    col: dict[str, Any] = {
        "name": st.name,
        "type": "categorical"
        if st.kind == "string" and is_categorical(distinct, count)
        else st.kind,
        "physical": st.physical,
        "count": count,
        "missing": missing,
        "missing_share": round(missing / rows, 6) if rows else 0.0,
        "distinct": distinct,
        "distinct_exact": exact or st.unique_verified,
    }
    if st.numeric:
        col.update(_numeric_report(st, exact, count))
    elif st.kind == "datetime":
        col.update(min=st.min, max=st.max)
    elif st.kind == "boolean":
        col["true_count"] = int(st.true_count or 0)
    else:
        col.update(
            min_length=st.min_length,
            max_length=st.max_length,
            max_bytes=st.max_bytes,
            empty=int(st.empty or 0),
        )
    col.update(_top_values(st, sample))
    findings = _column_findings(st, rows, exact, count, distinct)
    if consistency:
        findings.append(consistency)
    if st.kind == "string" and st.name in sample:
        pii = detect_pii(st.name, sample[st.name], min_share=limits.pii_min_share)
        if pii:
            col["pii"] = pii
            # the report is readable by every role: never show personal values in it
            for top in col.get("top_values", []):
                top["value"] = _mask_pii(top["value"])
            kinds = ", ".join(str(p["kind"]) for p in pii)
            findings.append({"kind": "pii", "detail": "likely personal data: " + kinds})
    col["findings"] = findings
    return col


def _numeric_report(st: ColumnStats, exact: bool, count: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "min": _num(st.min),
        "max": _num(st.max),
        "mean": _num(st.mean),
        "std": _num(st.std),
        "quantiles": {
            f"p{int(q * 100):02d}": _num(v)
            for q, v in zip(QUANTILES, st.quantiles or [], strict=False)
        },
        "quantiles_exact": exact,
    }
    if st.hist_edges is not None:
        out["histogram"] = {"edges": st.hist_edges, "counts": _bin_counts(st.hist_edges, st.hist)}
    if st.fences is not None:
        n_out = int(st.outliers or 0)
        out["outliers"] = {
            "method": "iqr",
            "lower": st.fences[0],
            "upper": st.fences[1],
            "count": n_out,
            "share": round(n_out / count, 6) if count else 0.0,
        }
    return out


def _bin_counts(edges: list[float], hist: dict[Any, int] | None) -> list[int]:
    """Counts per bin from DuckDB's ``histogram(x, uppers)`` map (upper edge -> count)."""
    uppers = edges[1:]
    counts = [0] * HIST_BINS
    for k, v in (hist or {}).items():
        if k is None:
            continue
        idx = min(range(HIST_BINS), key=lambda i: abs(uppers[i] - float(k)))
        if float(k) > uppers[-1]:
            idx = HIST_BINS - 1  # overflow bin from rounding at the maximum
        counts[idx] += int(v)
    return counts


def _top_values(st: ColumnStats, sample: dict[str, list[Any]]) -> dict[str, Any]:
    """The most frequent values: exact from pass 2, else (text) from the sample."""
    if st.top:
        top = sorted(st.top.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))[:TOP_K]
        return {"top_values": [{"value": _json_value(k), "count": int(v)} for k, v in top]}
    if st.name in sample and st.kind == "string":
        counter = Counter(v for v in sample[st.name] if v is not None)
        return {
            "top_values": [{"value": v, "count": n} for v, n in counter.most_common(5) if n > 1],
            "top_values_from_sample": True,
        }
    return {}


def _column_findings(
    st: ColumnStats, rows: int, exact: bool, count: int, distinct: int
) -> list[dict[str, Any]]:
    """Constant, id-like and empty columns."""
    findings: list[dict[str, Any]] = []
    if count and distinct <= 1:
        findings.append({"kind": "constant", "detail": "the column has one value"})
    if count == rows and rows > 1 and st.kind in ("integer", "string"):
        if (exact and distinct == rows) or (not exact and distinct >= 0.97 * rows):
            findings.append({"kind": "id_like", "detail": "every value is unique"})
    if rows and count == 0:
        findings.append({"kind": "empty", "detail": "every value is missing"})
    return findings


def _quality(
    columns: list[dict[str, Any]], rows: int, duplicates: int, *, inconsistent: int
) -> dict[str, Any]:
    """The quality score (0-100): the mean of completeness, uniqueness, consistency and
    validity (the share of numeric cells inside the IQR fences)."""
    cells = rows * len(columns)
    total_missing = sum(c["missing"] for c in columns)
    with_fences = [c for c in columns if "outliers" in c]
    outlier_cells = sum(c["outliers"]["count"] for c in with_fences)
    numeric_cells = sum(c["count"] for c in with_fences)
    parts = {
        "completeness": round(1 - total_missing / cells if cells else 1.0, 4),
        "uniqueness": round(1 - duplicates / rows if rows else 1.0, 4),
        "consistency": round(1 - inconsistent / len(columns) if columns else 1.0, 4),
        "validity": round(1 - outlier_cells / numeric_cells if numeric_cells else 1.0, 4),
    }
    return {"score": round(100 * sum(parts.values()) / 4, 1), **parts}


# --------------------------------------------------------------------------- helpers


def _is_permutation(con: duckdb.DuckDBPyConnection, st: ColumnStats, rows: int) -> bool:
    """Whether an integer column holds each value of [min, max] once (a typical id column).

    With max - min + 1 == rows, the column is a permutation of that range exactly when it
    has no duplicates; the first three power sums of a permutation are known in closed form,
    and an accidental match of all three by a multiset with duplicates does not happen in
    practice. One scan of one column: far cheaper than an exact count(DISTINCT).
    """
    lo, hi = st.min, st.max
    if lo is None or hi is None or float(lo) != int(lo) or int(hi) - int(lo) + 1 != rows:
        return False
    c = f"CAST({qident(st.name)} AS HUGEINT)"
    got = con.execute(f"SELECT sum({c}), sum({c} * {c}), sum({c} * {c} * {c}) FROM t").fetchall()
    a, b = int(lo), int(hi)

    def power_sum(k: int, n: int) -> int:  # sum of i**k for i in 1..n (n >= 0)
        if k == 1:
            return n * (n + 1) // 2
        if k == 2:
            return n * (n + 1) * (2 * n + 1) // 6
        return (n * (n + 1) // 2) ** 2

    def range_sum(k: int) -> int:  # sum of i**k for i in a..b, any signs
        def upto(n: int) -> int:  # sum over 1..n for n >= 0, or over n..-1 for n < 0
            return power_sum(k, n) if n >= 0 else (-1) ** k * power_sum(k, -n)

        if a > 0:
            return upto(b) - upto(a - 1)
        if b < 0:
            return upto(a) - upto(b + 1)
        return upto(b) + upto(a)

    expected = tuple(range_sum(k) for k in (1, 2, 3))
    return tuple(int(v or 0) for v in got[0]) == expected


def _block_sample(
    path: Path, columns: list[tuple[str, str]], rows: int, limits: ProfileLimits
) -> str:
    """SQL selecting ~quantile_sample_rows rows as SAMPLE_WINDOWS evenly spread windows.

    Row-number windows let the Parquet reader skip every other row group (10M rows: 0.04 s,
    against 0.7 s for DuckDB's system sampling and 1.5 s for a Bernoulli sample). Rows
    within a window are contiguous, so quantiles are approximate (the report says so).
    """
    if any(name.lower() == "file_row_number" for name, _ in columns):
        pct = min(100.0, 100.0 * limits.quantile_sample_rows / rows)
        return f"SELECT * FROM t USING SAMPLE {pct:.6f}% (system, 42)"
    span = max(1, limits.quantile_sample_rows // SAMPLE_WINDOWS)
    step = max(span, rows // SAMPLE_WINDOWS)
    ranges = " OR ".join(
        f"file_row_number BETWEEN {i * step} AND {i * step + span - 1}"
        for i in range(SAMPLE_WINDOWS)
    )
    return (
        f"SELECT * EXCLUDE (file_row_number) FROM read_parquet({qstr(str(path))}, "
        f"file_row_number=true) WHERE {ranges}"
    )


def _unique_column(
    con: duckdb.DuckDBPyConnection, stats: dict[str, ColumnStats], rows: int, exact: bool
) -> str | None:
    """A column with no nulls and all values distinct, if one exists (checked exactly).

    Such a column proves there are no duplicate rows, and counting its distinct values is
    much cheaper than hashing whole rows (10M rows: ~0.4 s vs ~2.5 s).
    """
    candidates = [
        st
        for st in stats.values()
        if st.kind in ("integer", "string")
        and int(st.count or 0) == rows
        and int(st.distinct or 0) >= (rows if exact else 0.97 * rows)
    ]
    candidates.sort(key=lambda st: st.kind != "integer")  # integers are cheapest
    for st in candidates[:1]:
        if exact:
            return st.name
        if st.kind == "integer" and _is_permutation(con, st, rows):
            return st.name
        sql = f"SELECT count(DISTINCT {qident(st.name)}) FROM t"
        if int(con.execute(sql).fetchall()[0][0]) == rows:
            return st.name
    return None


def _by_column(
    con: duckdb.DuckDBPyConnection,
    table: str,
    slots: list[tuple[str, str]],
    exprs: list[str],
    columns_per_query: int,
) -> list[tuple[tuple[str, str], Any]]:
    """Evaluate aggregates grouped by column, ``columns_per_query`` columns per query.

    Parquet is columnar, so a query over fewer columns reads only those; DuckDB grew slow
    and even ran out of memory with many histogram states in one SELECT on 10M rows.
    """
    out: list[tuple[tuple[str, str], Any]] = []
    group: list[int] = []
    seen: list[str] = []

    def flush() -> None:
        if group:
            values = _aggregate(con, table, [exprs[i] for i in group])
            out.extend(zip([slots[i] for i in group], values, strict=True))
            group.clear()
            seen.clear()

    for i, (colname, _stat) in enumerate(slots):
        if colname not in seen:
            if len(seen) >= columns_per_query:
                flush()
            seen.append(colname)
        group.append(i)
    flush()
    return out


def _aggregate(
    con: duckdb.DuckDBPyConnection, table: str, exprs: list[str], chunk_size: int = AGG_CHUNK
) -> list[Any]:
    """Evaluate aggregate expressions over ``table``, at most AGG_CHUNK per query.

    DuckDB's planning time grows faster than linearly with the number of aggregates in
    one SELECT (a 1,500-column table took minutes), so wide tables take a few scans.
    """
    out: list[Any] = []
    for i in range(0, len(exprs), chunk_size):
        chunk = exprs[i : i + chunk_size]
        row = con.execute(f"SELECT {', '.join(chunk)} FROM {table}").fetchall()[0]
        out.extend(row)
    return out


def _mask_pii(value: Any) -> Any:
    """Mask a personal value shown in the report: keep the last two characters."""
    if not isinstance(value, str):
        return value
    keep = 2 if len(value) > 6 else 0
    return "*" * (len(value) - keep) + value[len(value) - keep :]


def _consistency(con: duckdb.DuckDBPyConnection, text_cols: list[str]) -> dict[str, dict[str, Any]]:
    """Type-consistency findings for the text columns of the sample table ``ps``."""
    if not text_cols:
        return {}
    exprs = []
    for n in text_cols:
        v = f"NULLIF(trim(CAST({qident(n)} AS VARCHAR)), '')"
        exprs += [
            f"count({v})",
            f"count(TRY_CAST({v} AS DOUBLE))",
            f"count(TRY_CAST({v} AS TIMESTAMP))",
        ]
    row = _aggregate(con, "ps", exprs)
    out: dict[str, dict[str, Any]] = {}
    for i, n in enumerate(text_cols):
        total, nums, dates = (int(x or 0) for x in row[3 * i : 3 * i + 3])
        if not total:
            continue
        num_share, date_share = nums / total, dates / total
        if num_share >= 0.95:
            out[n] = {"kind": "numbers_as_text", "detail": f"{num_share:.0%} of values are numbers"}
        elif date_share >= 0.95:
            out[n] = {"kind": "dates_as_text", "detail": f"{date_share:.0%} of values are dates"}
        elif 0.2 <= max(num_share, date_share) < 0.95:
            out[n] = {
                "kind": "mixed_types",
                "detail": f"{max(num_share, date_share):.0%} numbers/dates mixed with text",
            }
    return out


def _anomaly_share(sample: dict[str, list[Any]], numeric: list[str]) -> dict[str, Any] | None:
    """Share of sampled rows an IsolationForest flags as anomalous (numeric columns)."""
    if not numeric:
        return None
    import numpy as np
    from sklearn.ensemble import IsolationForest

    matrix = np.array(
        [[np.nan if v is None else float(v) for v in sample[n]] for n in numeric], dtype=float
    ).T
    if matrix.shape[0] < 20:
        return None
    matrix[~np.isfinite(matrix)] = np.nan
    big = float(np.finfo(np.float32).max)  # the forest works in float32
    matrix = np.clip(matrix, -big, big)
    medians = np.nanmedian(np.where(np.isnan(matrix).all(axis=0), 0.0, matrix), axis=0)
    idx = np.where(np.isnan(matrix))
    matrix[idx] = np.take(medians, idx[1])
    matrix = matrix[:5000]
    forest = IsolationForest(n_estimators=50, random_state=0, n_jobs=1)
    labels = forest.fit_predict(matrix)
    share = float((labels == -1).mean())
    return {
        "method": "isolation_forest",
        "share": round(share, 4),
        "sample_rows": int(matrix.shape[0]),
        "columns": numeric,
    }
