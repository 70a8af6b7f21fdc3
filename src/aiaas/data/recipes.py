"""Cleaning recipes: a declarative list of steps turning one version into a new one.

A recipe is JSON validated by pydantic (``Recipe``); nothing in it is SQL. Each step becomes a
DuckDB view over the previous one, built from quoted identifiers and bound or literal-escaped
values; statistics a step needs (means, quantiles, categories, PCA loadings) are computed on
the previous view first. Any problem raises :class:`~aiaas.errors.InvalidInput` naming the
step (``errors=[{"step": i, "op": ..., "detail": ...}]``). The result is written as Parquet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from aiaas.data.duck import clean_error, connect, qident, qstr
from aiaas.data.pii import hash_sql, mask_sql
from aiaas.data.types import CAST_TYPES, INT_TYPES, NUMERIC_TYPES, CastType, base_type, is_numeric
from aiaas.errors import InvalidInput

ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Scalar = str | int | float | bool | None


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DropColumns(_Step):
    op: Literal["drop_columns", "drop"]
    columns: list[ColumnName] = Field(min_length=1, max_length=10_000)


class Rename(_Step):
    op: Literal["rename"]
    mapping: dict[ColumnName, ColumnName] = Field(min_length=1)


class Cast(_Step):
    op: Literal["cast"]
    columns: dict[ColumnName, CastType] = Field(min_length=1)
    errors: Literal["fail", "null"] = "fail"


class Condition(_Step):
    column: ColumnName
    cmp: Literal[
        "eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "is_null", "not_null",
        "contains", "starts_with",
    ]  # fmt: skip
    value: Scalar | list[Scalar] = None


class Filter(_Step):
    op: Literal["filter"]
    conditions: list[Condition] = Field(min_length=1, max_length=100)
    combine: Literal["all", "any"] = "all"


class DropDuplicates(_Step):
    op: Literal["drop_duplicates"]
    subset: list[ColumnName] | None = None


class Impute(_Step):
    op: Literal["impute"]
    columns: list[ColumnName] | None = None
    strategy: Literal["mean", "median", "mode", "constant"]
    value: Scalar = None


class Outliers(_Step):
    op: Literal["clip_outliers", "drop_outliers"]
    columns: list[ColumnName] | None = None
    factor: float = Field(1.5, gt=0, le=100)


class Scale(_Step):
    op: Literal["standardize", "min_max_scale"]
    columns: list[ColumnName] | None = None


class OneHot(_Step):
    op: Literal["one_hot"]
    columns: list[ColumnName] = Field(min_length=1)
    max_categories: int = Field(50, ge=1, le=1000)
    drop_original: bool = True


class Pca(_Step):
    op: Literal["pca"]
    columns: list[ColumnName] | None = None
    n_components: int = Field(ge=1, le=1000)
    prefix: str = Field("pc", min_length=1, max_length=64)
    drop_original: bool = True


class Mask(_Step):
    op: Literal["mask"]
    columns: list[ColumnName] = Field(min_length=1)
    keep: int = Field(4, ge=0, le=64)


class Hash(_Step):
    op: Literal["hash"]
    columns: list[ColumnName] = Field(min_length=1)


class Generalize(_Step):
    op: Literal["generalize"]
    column: ColumnName
    width: float | None = Field(None, gt=0, description="numbers: width of each range")
    unit: Literal["month", "year"] | None = Field(None, description="dates: truncate to")


Step = Annotated[
    DropColumns | Rename | Cast | Filter | DropDuplicates | Impute | Outliers | Scale | OneHot
    | Pca | Mask | Hash | Generalize,
    Field(discriminator="op"),
]  # fmt: skip


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: list[Step] = Field(min_length=1, max_length=100)


@dataclass(frozen=True)
class RecipeContext:
    hash_key: bytes
    memory_limit: str  # from DataSettings (the service builds it)
    threads: int
    pca_sample_rows: int = 100_000


class StepError(Exception):
    pass


def _literal(value: Scalar) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise StepError("non-finite numbers are not allowed")
        return repr(value)
    return qstr(value)


class _Runner:
    def __init__(self, con: duckdb.DuckDBPyConnection, ctx: RecipeContext) -> None:
        self.con = con
        self.ctx = ctx
        self.view = "s0"

    def columns(self) -> list[tuple[str, str]]:
        rows = self.con.execute(f"DESCRIBE {self.view}").fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def one(self, sql: str) -> tuple[Any, ...]:
        row: tuple[Any, ...] = self.con.execute(sql).fetchall()[0]
        return row

    def push(self, select: str, n: int) -> None:
        view = f"s{n}"
        self.con.execute(f"CREATE TEMP VIEW {view} AS {select}")
        self.view = view


def _need(cols: dict[str, str], names: list[str]) -> None:
    missing = [n for n in names if n not in cols]
    if missing:
        raise StepError(f"unknown column(s): {', '.join(repr(m) for m in missing)}")


def _numeric(cols: dict[str, str], names: list[str] | None) -> list[str]:
    if names is None:
        return [n for n, t in cols.items() if is_numeric(t)]
    _need(cols, names)
    bad = [n for n in names if not is_numeric(cols[n])]
    if bad:
        raise StepError(f"column(s) not numeric: {', '.join(repr(b) for b in bad)}")
    return names


def _replace(cols: dict[str, str], exprs: dict[str, str]) -> str:
    parts = []
    for name in cols:
        parts.append(f"{exprs[name]} AS {qident(name)}" if name in exprs else qident(name))
    return ", ".join(parts)


def _apply(r: _Runner, step: Any, n: int) -> None:
    """Push the view of step ``n`` on top of the current one."""
    handler = _STEPS.get(type(step))
    if handler is None:  # pragma: no cover - the discriminated union is exhaustive
        raise StepError("unknown step")
    handler(r, step, dict(r.columns()), n)


def _drop_columns(r: _Runner, step: DropColumns, cols: dict[str, str], n: int) -> None:
    _need(cols, step.columns)
    keep = [c for c in cols if c not in set(step.columns)]
    if not keep:
        raise StepError("cannot drop every column")
    r.push(f"SELECT {', '.join(qident(c) for c in keep)} FROM {r.view}", n)


def _rename(r: _Runner, step: Rename, cols: dict[str, str], n: int) -> None:
    _need(cols, list(step.mapping))
    final = [step.mapping.get(c, c) for c in cols]
    if len({f.casefold() for f in final}) != len(final):
        raise StepError("renaming would create duplicate column names")
    sel = ", ".join(f"{qident(c)} AS {qident(step.mapping.get(c, c))}" for c in cols)
    r.push(f"SELECT {sel} FROM {r.view}", n)


def _cast(r: _Runner, step: Cast, cols: dict[str, str], n: int) -> None:
    _need(cols, list(step.columns))
    exprs = {}
    for name, kind in step.columns.items():
        target = CAST_TYPES[kind]
        c = qident(name)
        if step.errors == "fail":
            bad = r.one(
                f"SELECT count(*) FROM {r.view} WHERE {c} IS NOT NULL "
                f"AND TRY_CAST({c} AS {target}) IS NULL"
            )[0]
            if bad:
                raise StepError(f"{bad} value(s) of {name!r} cannot be cast to {kind}")
        exprs[name] = f"TRY_CAST({c} AS {target})"
    r.push(f"SELECT {_replace(cols, exprs)} FROM {r.view}", n)


def _filter(r: _Runner, step: Filter, cols: dict[str, str], n: int) -> None:
    _need(cols, [c.column for c in step.conditions])
    preds = [_condition(c, cols[c.column]) for c in step.conditions]
    joiner = " AND " if step.combine == "all" else " OR "
    r.push(f"SELECT * FROM {r.view} WHERE {joiner.join(preds)}", n)


def _drop_duplicates(r: _Runner, step: DropDuplicates, cols: dict[str, str], n: int) -> None:
    if not step.subset:
        r.push(f"SELECT DISTINCT * FROM {r.view}", n)
        return
    _need(cols, step.subset)
    part = ", ".join(qident(c) for c in step.subset)
    r.push(f"SELECT * FROM {r.view} QUALIFY row_number() OVER (PARTITION BY {part}) = 1", n)


def _outliers(r: _Runner, step: Outliers, cols: dict[str, str], n: int) -> None:
    """``clip_outliers`` / ``drop_outliers``: outside ``factor`` IQRs of the quartiles."""
    bounds = {}
    for name in _numeric(cols, step.columns):
        x = f"CAST({qident(name)} AS DOUBLE)"
        q1, q3 = r.one(f"SELECT quantile_cont({x}, 0.25), quantile_cont({x}, 0.75) FROM {r.view}")
        if q1 is None:
            continue
        iqr = float(q3) - float(q1)
        bounds[name] = (float(q1) - step.factor * iqr, float(q3) + step.factor * iqr)
    if step.op == "clip_outliers":
        exprs = {}
        for name, (lo, hi) in bounds.items():
            x = qident(name)
            cast = "DOUBLE" if base_type(cols[name]) == "float" else cols[name]
            exprs[name] = f"CAST(least(greatest({x}, {lo!r}), {hi!r}) AS {cast})"
        r.push(f"SELECT {_replace(cols, exprs)} FROM {r.view}", n)
    else:
        preds = [
            f"({qident(k)} IS NULL OR {qident(k)} BETWEEN {lo!r} AND {hi!r})"
            for k, (lo, hi) in bounds.items()
        ]
        r.push(f"SELECT * FROM {r.view} WHERE {' AND '.join(preds) or 'true'}", n)


def _scale(r: _Runner, step: Scale, cols: dict[str, str], n: int) -> None:
    """``standardize`` (mean 0, population std 1) / ``min_max_scale`` (to [0, 1])."""
    exprs = {}
    for name in _numeric(cols, step.columns):
        x = f"CAST({qident(name)} AS DOUBLE)"
        if step.op == "standardize":
            mean, std = r.one(f"SELECT avg({x}), stddev_pop({x}) FROM {r.view}")
            if mean is None:
                continue
            exprs[name] = f"({x} - {float(mean)!r}) / {float(std)!r}" if std else f"{x} * 0.0"
        else:
            lo, hi = r.one(f"SELECT min({x}), max({x}) FROM {r.view}")
            if lo is None:
                continue
            span = float(hi) - float(lo)
            exprs[name] = f"({x} - {float(lo)!r}) / {span!r}" if span else f"{x} * 0.0"
    r.push(f"SELECT {_replace(cols, exprs)} FROM {r.view}", n)


def _one_hot(r: _Runner, step: OneHot, cols: dict[str, str], n: int) -> None:
    """A 0/1 column ``name=value`` per frequent value (most frequent first, ties by value)."""
    _need(cols, step.columns)
    extra, existing = [], {c.casefold() for c in cols}
    for name in step.columns:
        c = qident(name)
        cats = r.con.execute(
            f"SELECT CAST({c} AS VARCHAR) AS v, count(*) AS k FROM {r.view} "
            f"WHERE {c} IS NOT NULL GROUP BY v ORDER BY k DESC, v LIMIT {step.max_categories}"
        ).fetchall()
        for value, _count in cats:
            new = f"{name}={value}"
            if new.casefold() in existing:
                raise StepError(f"one-hot column {new!r} already exists")
            existing.add(new.casefold())
            extra.append(
                f"CAST(CAST({c} AS VARCHAR) = {qstr(str(value))} AS INTEGER) AS {qident(new)}"
            )
    keep = [qident(c) for c in cols if not (step.drop_original and c in step.columns)]
    r.push(f"SELECT {', '.join(keep + extra)} FROM {r.view}", n)


def _mask(r: _Runner, step: Mask, cols: dict[str, str], n: int) -> None:
    _need(cols, step.columns)
    exprs = {name: mask_sql(name, keep=step.keep) for name in step.columns}
    r.push(f"SELECT {_replace(cols, exprs)} FROM {r.view}", n)


def _hash(r: _Runner, step: Hash, cols: dict[str, str], n: int) -> None:
    _need(cols, step.columns)
    exprs = {name: hash_sql(name, r.ctx.hash_key) for name in step.columns}
    r.push(f"SELECT {_replace(cols, exprs)} FROM {r.view}", n)


def _generalize(r: _Runner, step: Generalize, cols: dict[str, str], n: int) -> None:
    """Numbers to ``[low, high)`` ranges of ``width``; dates truncated to a month or year."""
    _need(cols, [step.column])
    kind = base_type(cols[step.column])
    c = qident(step.column)
    if kind in NUMERIC_TYPES:
        if step.width is None:
            raise StepError("generalizing a number needs 'width'")
        w = float(step.width)
        low = f"floor(CAST({c} AS DOUBLE) / {w!r}) * {w!r}"
        fmt = "CAST(CAST({v} AS BIGINT) AS VARCHAR)" if w.is_integer() else "CAST({v} AS VARCHAR)"
        expr = (
            f"CASE WHEN {c} IS NULL THEN NULL ELSE '[' || {fmt.format(v=low)} || ', ' || "
            f"{fmt.format(v=f'({low} + {w!r})')} || ')' END"
        )
    elif kind == "datetime":
        if step.unit is None:
            raise StepError("generalizing a date needs 'unit' (month or year)")
        expr = f"CAST(date_trunc({qstr(step.unit)}, {c}) AS DATE)"
    else:
        raise StepError(f"column {step.column!r} is neither a number nor a date")
    r.push(f"SELECT {_replace(cols, {step.column: expr})} FROM {r.view}", n)


def _condition(cond: Condition, physical: str) -> str:
    c = qident(cond.column)
    op = cond.cmp
    if op == "is_null":
        return f"{c} IS NULL"
    if op == "not_null":
        return f"{c} IS NOT NULL"
    if op in ("in", "not_in"):
        if not isinstance(cond.value, list) or not cond.value:
            raise StepError(f"'{op}' needs a non-empty list value")
        values = ", ".join(_literal(v) for v in cond.value)
        return f"{c} {'IN' if op == 'in' else 'NOT IN'} ({values})"
    if isinstance(cond.value, list) or cond.value is None:
        raise StepError(f"'{op}' needs a single non-null value")
    if op in ("contains", "starts_with"):
        v = _literal(str(cond.value))
        fn = "contains" if op == "contains" else "starts_with"
        return f"{fn}(CAST({c} AS VARCHAR), {v})"
    sym = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
    value = cond.value
    kind = base_type(physical)
    if kind in NUMERIC_TYPES and isinstance(value, str):
        raise StepError(f"column {cond.column!r} is numeric; compare it with a number")
    if kind == "datetime" and isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise StepError(f"{value!r} is not an ISO date/time") from None
        return f"{c} {sym} CAST({qstr(value)} AS TIMESTAMP)"
    return f"{c} {sym} {_literal(value)}"


def _impute(r: _Runner, step: Impute, cols: dict[str, str], n: int) -> None:
    src = r.view
    if step.strategy in ("mean", "median"):
        names = _numeric(cols, step.columns)
    else:
        names = list(cols) if step.columns is None else step.columns
        _need(cols, names)
    exprs = {}
    for name in names:
        c = qident(name)
        physical = cols[name]
        if step.strategy == "constant":
            if step.value is None:
                raise StepError("strategy 'constant' needs 'value'")
            fill = _literal(step.value)
        else:
            agg = {"mean": "avg", "median": "median", "mode": "mode"}[step.strategy]
            value = r.one(f"SELECT {agg}({c}) FROM {src}")[0]
            if value is None:
                continue
            if isinstance(value, datetime | date):
                fill = f"CAST({qstr(value.isoformat())} AS {physical})"
            elif isinstance(value, bool | int | float | str):
                fill = _literal(value)
            else:
                fill = _literal(str(value))
        target = physical
        if step.strategy == "mean" and physical.upper() in INT_TYPES:
            target = "DOUBLE"
        try:
            r.con.execute(f"SELECT CAST({fill} AS {target})").fetchall()
        except duckdb.Error:
            raise StepError(f"cannot fill {name!r} ({physical}) with {step.value!r}") from None
        exprs[name] = f"CAST(coalesce({c}, CAST({fill} AS {target})) AS {target})"
    r.push(f"SELECT {_replace(cols, exprs)} FROM {src}", n)


def _pca(r: _Runner, step: Pca, cols: dict[str, str], n: int) -> None:
    import numpy as np
    from sklearn.decomposition import PCA

    src = r.view
    names = _numeric(cols, step.columns)
    if len(names) < step.n_components:
        raise StepError(f"n_components={step.n_components} exceeds the {len(names)} columns")
    nulls = r.one(
        "SELECT " + ", ".join(f"count(*) - count({qident(c)})" for c in names) + f" FROM {src}"
    )
    if any(nulls):
        raise StepError("PCA columns have missing values; add an 'impute' step first")
    sel = ", ".join(f"CAST({qident(c)} AS DOUBLE)" for c in names)
    data = r.con.execute(
        f"SELECT {sel} FROM {src} USING SAMPLE {int(r.ctx.pca_sample_rows)} ROWS"
    ).fetchnumpy()
    matrix = np.column_stack([np.asarray(data[k], dtype=float) for k in data])
    if matrix.shape[0] < step.n_components:
        raise StepError("not enough rows for PCA")
    pca = PCA(n_components=step.n_components, random_state=0).fit(matrix)
    existing = {c.casefold() for c in cols if not (step.drop_original and c in names)}
    extra = []
    for k, component in enumerate(pca.components_):
        out = f"{step.prefix}{k + 1}"
        if out.casefold() in existing:
            raise StepError(f"output column {out!r} already exists")
        terms = " + ".join(
            f"(CAST({qident(c)} AS DOUBLE) - {float(m)!r}) * {float(w)!r}"
            for c, m, w in zip(names, pca.mean_, component, strict=True)
        )
        extra.append(f"{terms} AS {qident(out)}")
    keep = [qident(c) for c in cols if not (step.drop_original and c in names)]
    r.push(f"SELECT {', '.join(keep + extra)} FROM {src}", n)


_StepHandler = Callable[[_Runner, Any, dict[str, str], int], None]
#: One function per step type: it reads the current view and pushes the step's view.
_STEPS: dict[type[_Step], _StepHandler] = {
    DropColumns: _drop_columns,
    Rename: _rename,
    Cast: _cast,
    Filter: _filter,
    DropDuplicates: _drop_duplicates,
    Impute: _impute,
    Outliers: _outliers,
    Scale: _scale,
    OneHot: _one_hot,
    Pca: _pca,
    Mask: _mask,
    Hash: _hash,
    Generalize: _generalize,
}


def apply_recipe(
    src: Path,
    out: Path,
    recipe: Recipe,
    ctx: RecipeContext,
) -> int:
    """Apply ``recipe`` to the Parquet file ``src``; write ``out``; return the row count."""
    con = connect(
        allowed_paths=[src],
        allowed_directories=[out.parent],
        memory_limit=ctx.memory_limit,
        threads=ctx.threads,
    )
    try:
        con.execute(f"CREATE TEMP VIEW s0 AS SELECT * FROM read_parquet({qstr(str(src))})")
        runner = _Runner(con, ctx)
        for i, step in enumerate(recipe.steps):
            try:
                _apply(runner, step, i + 1)
                runner.columns()  # binds the new view now, so errors name this step
            except StepError as exc:
                raise _step_error(i, step.op, str(exc)) from None
            except duckdb.Error as exc:
                raise _step_error(i, step.op, clean_error(exc)) from None
        try:
            row = con.execute(
                f"COPY (SELECT * FROM {runner.view}) TO {qstr(str(out))} "
                "(FORMAT parquet, COMPRESSION zstd)"
            ).fetchall()[0]
        except duckdb.Error as exc:
            raise InvalidInput(f"the recipe failed: {clean_error(exc)}") from None
    finally:
        con.close()
    rows = int(row[0])
    if rows == 0:
        raise InvalidInput("the recipe leaves no rows")
    return rows


def _step_error(index: int, op: str, detail: str) -> InvalidInput:
    return InvalidInput(
        f"step {index} ({op}): {detail}",
        errors=[{"step": index, "op": op, "detail": detail}],
    )
