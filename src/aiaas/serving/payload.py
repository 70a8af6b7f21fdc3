"""Prediction request bodies → :class:`~aiaas.serving.predictor.Table`; answers → bytes.

Accepted bodies (one top-level key; MLflow's ``params`` is accepted and ignored):

- ``{"instances": [{col: value, …}, …]}`` or ``{"instances": [[v, …], …]}`` (rows in the
  signature's column order);
- MLflow's ``{"dataframe_split": {"columns": [...], "data": [[...], …]}}``,
  ``{"dataframe_records": [{col: value}, …]}`` and ``{"inputs": …}`` (a mapping of columns,
  records, or rows).

Every refusal is a 422 that names the row and the column where it can. Columns a row has
that the model does not take are ignored and reported (``X-Ignored-Columns``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from aiaas.errors import InvalidInput
from aiaas.serving.predictor import ABSENT, MatrixColumns, Table, Values

FORMATS = ("instances", "dataframe_split", "dataframe_records", "inputs")
_ALLOWED_KEYS = frozenset({*FORMATS, "params"})
_MAX_IGNORED_REPORTED = 20
_NON_JSON_NUMBERS = (b"NaN", b"Infinity")
_NUMBER_TYPES = frozenset({float, int})


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput(
            "the request body is empty; send a JSON object such as "
            '{"instances": [{"column": value, ...}]}'
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        detail = f"the request body is not valid JSON: {exc}"[:300]
        # Python's json.dumps (what MLflow clients send) writes a missing float as NaN and
        # an overflow as Infinity: neither is JSON, and orjson's "unexpected character"
        # alone does not tell the caller what to send instead
        if body.startswith(_NON_JSON_NUMBERS, exc.pos) or "infinity" in exc.msg:
            detail += " (NaN and Infinity are not JSON: send null for a missing value)"
        raise InvalidInput(detail) from None


def decode(
    obj: Any, order: Sequence[str], *, max_rows: int, numeric: tuple[str, ...] | None = None
) -> Table:
    """The rows of a prediction body; ``order``: column order for rows given as lists.

    ``numeric``: the columns of a model whose inputs are all numbers. A body of exactly
    those columns, every cell a JSON number (the common case), becomes one float64 matrix
    in one pass (:attr:`Table.matrix`); any other body is decoded column by column, which
    is what names a bad cell and reports extra columns.
    """
    if not isinstance(obj, dict):
        raise InvalidInput("the body must be a JSON object with one of: " + ", ".join(FORMATS))
    unknown = sorted(set(obj) - _ALLOWED_KEYS)
    if unknown:
        raise InvalidInput(
            f"unknown top-level field {unknown[0][:50]!r}; use one of: " + ", ".join(FORMATS)
        )
    given = [k for k in FORMATS if k in obj]
    if len(given) != 1:
        raise InvalidInput("give exactly one of: " + ", ".join(FORMATS))
    fmt = given[0]
    value = obj[fmt]
    # refuse too many rows before walking them: a body under the size limit can hold a
    # million tiny rows, and checking (then copying) each costs far more than counting
    rows = value.get("data") if fmt == "dataframe_split" and isinstance(value, dict) else value
    if isinstance(rows, list) and len(rows) > max_rows:
        raise _too_many(len(rows), max_rows)
    fast = None
    if numeric and isinstance(rows, list) and rows:
        fast = _numeric_table(fmt, value, rows, order, numeric)
    if fast is not None:
        table = fast
    elif fmt == "dataframe_split":
        table = _split(value)
    elif fmt == "inputs" and isinstance(value, dict):
        table = _columns(value)
    elif isinstance(value, list):
        table = _records(value, order, fmt)
    else:
        raise InvalidInput(f"{fmt!r} must be a list of rows")
    if table.n == 0:
        raise InvalidInput("the request has no rows")
    if table.n > max_rows:
        raise _too_many(table.n, max_rows)
    return table


def _numeric_table(
    fmt: str, value: Any, rows: list[Any], order: Sequence[str], names: tuple[str, ...]
) -> Table | None:
    """``rows`` as one float64 matrix of the columns ``names``, or None when they are not
    exactly those columns, all JSON numbers (the general decoding then says what is wrong)."""
    width = len(names)
    if type(rows[0]) is dict:
        if fmt == "dataframe_split" or set(map(len, rows)) != {width}:
            return None  # a row with other columns than the model's: reported, not dropped
        pick = itemgetter(*names)
        try:  # every row has `width` keys, and all of `names`: exactly those
            picked = map(pick, rows)
            flat = list(chain.from_iterable(picked) if width > 1 else picked)
        except (KeyError, TypeError):
            return None
        perm = None
    elif type(rows[0]) is list:
        given = value.get("columns") if fmt == "dataframe_split" else list(order)
        if not isinstance(given, list) or len(given) != width or set(given) != set(names):
            return None
        if set(map(type, rows)) != {list} or set(map(len, rows)) != {width}:
            return None
        flat = list(chain.from_iterable(rows))
        perm = None if given == list(names) else [given.index(c) for c in names]
    else:
        return None
    if not set(map(type, flat)) <= _NUMBER_TYPES:  # no string, boolean, null or nesting
        return None
    try:
        matrix = np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(len(rows), width)
    except (OverflowError, ValueError):  # an integer beyond float64: the general path says so
        return None
    if perm is not None:
        matrix = matrix[:, perm]
    return Table(len(rows), MatrixColumns(matrix, names), matrix, names)


def _too_many(n: int, max_rows: int) -> InvalidInput:
    return InvalidInput(f"a request may carry at most {max_rows} rows, this one has {n}")


def _records(rows: list[Any], order: Sequence[str], fmt: str) -> Table:
    if not rows:
        return Table(0, {})
    first = rows[0]
    if type(first) is dict:
        if not all(type(r) is dict for r in rows):
            row = next(i for i, r in enumerate(rows) if type(r) is not dict)
            raise InvalidInput(f"row {row} of {fmt!r} is not an object")
        names = list(first)
        keys = first.keys()
        # compare the keys, not only their number: rows of one width may still name other
        # columns ({a, b, x} then {a, b, colour}), and the first row's names alone would
        # report 'colour' as missing from every row and drop the second row's value
        if any(r.keys() != keys for r in rows):
            names = list(dict.fromkeys(k for r in rows for k in r))
        columns: dict[str, Values] = {c: [r.get(c, ABSENT) for r in rows] for c in names}
        return Table(len(rows), columns)
    if type(first) is list:
        width = len(order)
        for i, r in enumerate(rows):
            if type(r) is not list or len(r) != width:
                raise InvalidInput(
                    f"row {i} of {fmt!r} must be a list of {width} values, in the order "
                    "of the model's columns (or send objects by column name)"
                )
        return Table(len(rows), {c: [r[j] for r in rows] for j, c in enumerate(order)})
    raise InvalidInput(f"the rows of {fmt!r} must be objects (column → value) or lists")


def _split(value: Any) -> Table:
    if not isinstance(value, dict) or not isinstance(value.get("columns"), list):
        raise InvalidInput('"dataframe_split" must be {"columns": [...], "data": [[...], ...]}')
    unknown = sorted(set(value) - {"columns", "data", "index"})
    if unknown:
        raise InvalidInput(f'unknown field {unknown[0][:50]!r} in "dataframe_split"')
    names = value["columns"]
    data = value.get("data")
    if not all(type(c) is str for c in names) or len(set(names)) != len(names):
        raise InvalidInput('"dataframe_split.columns" must be distinct column names')
    if not isinstance(data, list):
        raise InvalidInput('"dataframe_split.data" must be a list of rows')
    width = len(names)
    for i, r in enumerate(data):
        if type(r) is not list or len(r) != width:
            raise InvalidInput(f"row {i} of dataframe_split.data must be a list of {width} values")
    return Table(len(data), {c: [r[j] for r in data] for j, c in enumerate(names)})


def _columns(value: dict[str, Any]) -> Table:
    lengths = set()
    columns: dict[str, Any] = {}
    for name, col in value.items():
        if not isinstance(col, list):
            col = [col]  # one row given by scalars
        lengths.add(len(col))
        columns[name] = col
    if len(lengths) > 1:
        raise InvalidInput('the columns of "inputs" must all have the same length')
    return Table(lengths.pop() if lengths else 0, columns)


def ignored_columns(table: Table, known: frozenset[str]) -> list[str]:
    """The request's columns the model does not take (reported, not refused), escaped to
    printable ASCII (``\\n``, ``\\xe9``): they go into the ``X-Ignored-Columns`` header,
    where a raw control character in a caller's column name makes the HTTP server refuse
    the whole response (uvicorn: "Invalid HTTP header value", a 500)."""
    ignored = [c for c in table.columns if c not in known][:_MAX_IGNORED_REPORTED]
    return [c if c.isascii() and c.isprintable() else _escaped(c) for c in ignored]


def _escaped(name: str) -> str:
    return name.encode("unicode_escape").decode("ascii")


# --------------------------------------------------------------------------- answers


def labels(out: NDArray[Any], classes: list[Any]) -> list[Any]:
    picks = np.argmax(out, axis=1).tolist()
    return [classes[i] for i in picks]


def predict_body(
    out: NDArray[Any],
    *,
    ids: list[str],
    classes: list[Any],
    keys: list[str],
    regression: bool,
    model: str,
    version: int,
) -> bytes:
    """The ``/predict`` answer: one object per row, with its prediction id."""
    if regression:
        preds: list[dict[str, Any]] = [
            {"id": pid, "value": v} for pid, v in zip(ids, out.tolist(), strict=True)
        ]
    else:
        picked = labels(out, classes)
        preds = [
            {"id": pid, "label": label, "probabilities": dict(zip(keys, row, strict=True))}
            for pid, label, row in zip(ids, picked, out.tolist(), strict=True)
        ]
    return orjson.dumps(
        {"predictions": preds, "model": model, "version": version},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def invocations_body(out: NDArray[Any]) -> bytes:
    """MLflow's scoring-server answer, byte for byte: ``json.dumps`` of the output list.

    The pyfunc of a classifier served for probabilities returns ``predict_proba``'s
    ``(n, K)`` array; a regressor its values.
    """
    return json.dumps({"predictions": out.tolist()}).encode()
