"""The one-pass decoding of an all-numeric body (``payload.decode(numeric=…)``) against the
column-by-column decoding it short-cuts: the same matrix, or the same refusal, for any body.

Checked through :func:`aiaas.serving.predictor.numeric_matrix` (what the model is fed) and
the ignored-column report, on generated bodies of every accepted shape.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiaas.errors import InvalidInput
from aiaas.serving import payload
from aiaas.serving.core import Batcher, merge_tables
from aiaas.serving.predictor import Column, numeric_matrix

NAMES = ("a", "b", "c")
#: a nullable and a boolean column behave as in the general path too
COLUMNS = [
    Column("a", "numeric", False),
    Column("b", "numeric", True),
    Column("c", "numeric", False, boolean=True),
]

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-1e6, 1e6),
)
odd = st.one_of(
    st.none(), st.booleans(), st.text(max_size=3), st.just([1.0]), st.just({"v": 1}),
    st.just(10**400),
)  # fmt: skip
cell = st.one_of(numbers, numbers, numbers, odd)


@st.composite
def rows(draw: Any) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 6))
    out = []
    for _ in range(n):
        row = {c: draw(cell) for c in NAMES}
        if draw(st.booleans()) and draw(st.booleans()):
            del row[draw(st.sampled_from(NAMES))]  # a missing column
        if draw(st.booleans()) and draw(st.booleans()):
            row["extra"] = draw(cell)  # an ignored one
        out.append(dict(sorted(row.items(), key=lambda kv: draw(st.integers(0, 9)))))
    return out


def bodies(data: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    full = all(set(r) == set(NAMES) for r in data)
    out: list[dict[str, Any]] = [{"instances": data}, {"dataframe_records": data}, {"inputs": data}]
    if full:
        lists = [[r[c] for c in NAMES] for r in data]
        out += [
            {"instances": lists},
            {"inputs": lists},
            {"dataframe_split": {"columns": order, "data": [[r[c] for c in order] for r in data]}},
        ]
    return out


def outcome(body: dict[str, Any], numeric: tuple[str, ...] | None) -> tuple[str, Any, Any]:
    try:
        table = payload.decode(body, list(NAMES), max_rows=100, numeric=numeric)
        ignored = payload.ignored_columns(table, frozenset(NAMES))
        X = numeric_matrix(COLUMNS, table, np.float32)
    except (InvalidInput, OverflowError) as exc:
        return ("refused", type(exc).__name__, str(exc))
    return ("fed", X.tobytes(), ignored)


@settings(max_examples=300, deadline=None)
@given(data=rows(), order=st.permutations(list(NAMES)))
def test_the_fast_path_feeds_and_refuses_as_the_general_path(
    data: list[dict[str, Any]], order: list[str]
) -> None:
    for body in bodies(data, order):
        assert outcome(body, NAMES) == outcome(body, None), body


def test_a_plain_numeric_body_takes_the_fast_path() -> None:
    data = [{"b": 2, "a": 1.5, "c": 0}, {"a": -1, "c": 1.0, "b": 3.25}]
    for body in bodies(data, ["c", "a", "b"]):
        table = payload.decode(body, list(NAMES), max_rows=100, numeric=NAMES)
        assert table.matrix is not None, body
        assert table.matrix.tolist() == [[1.5, 2.0, 0.0], [-1.0, 3.25, 1.0]]
        assert list(table.columns) == list(NAMES)
        assert list(table.columns["b"]) == [2.0, 3.25]


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [{"a": 1, "b": 2, "c": True}]},  # a boolean: named by the general path
        {"instances": [{"a": 1, "b": None, "c": 0}]},  # a null
        {"instances": [{"a": 1, "b": 2, "c": 0, "d": 1}]},  # an extra column: reported
        {"instances": [{"a": 1, "b": 2}]},  # a missing one
        {"instances": [[1, 2]]},  # a short list
        {"dataframe_split": {"columns": ["a", "b", "d"], "data": [[1, 2, 3]]}},
    ],
)
def test_anything_else_takes_the_general_path(body: dict[str, Any]) -> None:
    try:
        table = payload.decode(body, list(NAMES), max_rows=100, numeric=NAMES)
    except InvalidInput:
        return
    assert table.matrix is None


def test_merged_requests_stay_one_matrix_and_mixed_ones_are_merged_by_column() -> None:
    one = payload.decode(
        {"instances": [{"a": 1, "b": 2, "c": 0}]}, NAMES, max_rows=9, numeric=NAMES
    )
    two = payload.decode({"instances": [[3, 4, 1], [5, 6, 0]]}, NAMES, max_rows=9, numeric=NAMES)
    plain = payload.decode({"instances": [{"a": 7, "b": None, "c": True}]}, NAMES, max_rows=9)
    merged = merge_tables([one, two], NAMES)
    assert merged.matrix is not None
    assert merged.n == 3
    assert merged.matrix.tolist() == [[1, 2, 0], [3, 4, 1], [5, 6, 0]]
    mixed = merge_tables([one, plain, two], NAMES)
    assert mixed.matrix is None
    X = numeric_matrix(COLUMNS, mixed, np.float64)
    want = np.array([[1, 2, 0], [7, np.nan, 1], [3, 4, 1], [5, 6, 0]])
    assert np.array_equal(X, want, equal_nan=True)


def test_requests_read_in_one_turn_of_the_loop_are_predicted_together() -> None:
    """Batching without waiting (``batch_wait_ms`` 0): requests that reach the batcher in
    the same turn of the event loop share one call; one that comes later gets its own."""
    calls: list[int] = []

    class Doubler:  # the predictor's side of the batcher: predict and required
        required = NAMES

        def predict(self, table: Any, *, strict_categories: bool) -> Any:
            calls.append(table.n)
            return numeric_matrix(COLUMNS, table, np.float64) * 2

    batcher = Batcher(Doubler(), max_rows=100, wait_s=0)  # type: ignore[arg-type]
    tables = [
        payload.decode({"instances": [[i, i, 1]] * (1 + i % 3)}, NAMES, max_rows=9, numeric=NAMES)
        for i in range(5)
    ]

    async def main() -> list[Any]:
        together = await asyncio.gather(*(batcher.predict(t, False) for t in tables))
        alone = await batcher.predict(tables[0], False)
        return [*together, alone]

    outs = asyncio.run(main())
    assert calls == [sum(t.n for t in tables), tables[0].n]
    for table, out in zip([*tables, tables[0]], outs, strict=True):
        assert table.matrix is not None
        assert out.tolist() == np.multiply(table.matrix, 2).tolist()
