"""Cleaning recipes on the engine: every step, and errors that name the failing step."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sklearn.decomposition import PCA

from aiaas.data.pii import hmac_hex
from aiaas.data.recipes import Recipe, RecipeContext, apply_recipe
from aiaas.errors import InvalidInput
from aiaas.settings import Settings

KEY = b"k" * 32
_DATA = Settings().data  # the engine limits an operator gets by default
CONTEXT = RecipeContext(
    hash_key=KEY, memory_limit=_DATA.duckdb_memory_limit, threads=_DATA.duckdb_threads
)


@pytest.fixture
def src(tmp_path):
    table = pa.table(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "age": [20.0, None, 40.0, 50.0, 1000.0, 30.0],
            "city": ["Paris", "Rome", None, "Paris", "Oslo", "Paris"],
            "email": ["alice@x.org", "b@y.org", "c@z.org", None, "e@x.org", "f@y.org"],
            "when": pa.array(
                ["2024-01-15", "2024-02-20", "2024-02-21", "2023-12-31", "2024-03-01", "2024-03-02"]
            ).cast(pa.timestamp("us")),
        }
    )
    path = tmp_path / "src.parquet"
    pq.write_table(table, path)
    return path


def run(src, tmp_path, *steps):
    out = tmp_path / "out.parquet"
    out.unlink(missing_ok=True)
    rows = apply_recipe(src, out, Recipe(steps=list(steps)), CONTEXT)
    table = pq.read_table(out)
    assert table.num_rows == rows
    return table.to_pydict()


def test_columns_and_rows(src, tmp_path):
    t = run(
        src,
        tmp_path,
        {"op": "drop_columns", "columns": ["email"]},
        {"op": "rename", "mapping": {"city": "town"}},
        {"op": "cast", "columns": {"id": "string"}},
        {
            "op": "filter",
            "conditions": [{"column": "town", "cmp": "in", "value": ["Paris", "Oslo"]}],
        },
    )
    assert list(t) == ["id", "age", "town", "when"]
    assert t["id"] == ["1", "4", "5", "6"]
    t = run(
        src,
        tmp_path,
        {
            "op": "filter",
            "combine": "any",
            "conditions": [
                {"column": "age", "cmp": "gt", "value": 45},
                {"column": "city", "cmp": "is_null"},
            ],
        },
    )
    assert t["id"] == [3, 4, 5]
    t = run(
        src,
        tmp_path,
        {"op": "filter", "conditions": [{"column": "when", "cmp": "ge", "value": "2024-02-21"}]},
    )
    assert t["id"] == [3, 5, 6]
    t = run(src, tmp_path, {"op": "drop_duplicates", "subset": ["city"]})
    assert sorted(x or "" for x in t["city"]) == ["", "Oslo", "Paris", "Rome"]


def test_impute_outliers_scaling(src, tmp_path):
    t = run(src, tmp_path, {"op": "impute", "columns": ["age"], "strategy": "median"})
    assert t["age"][1] == 40.0
    t = run(src, tmp_path, {"op": "impute", "columns": ["city"], "strategy": "mode"})
    assert t["city"][2] == "Paris"
    t = run(
        src, tmp_path, {"op": "impute", "columns": ["city"], "strategy": "constant", "value": "?"}
    )
    assert t["city"][2] == "?"
    t = run(src, tmp_path, {"op": "drop_outliers", "columns": ["age"]})
    assert 1000.0 not in t["age"]
    assert None in t["age"]  # missing values are not outliers
    t = run(src, tmp_path, {"op": "clip_outliers", "columns": ["age"]})
    assert max(a for a in t["age"] if a is not None) < 1000.0
    t = run(
        src,
        tmp_path,
        {"op": "impute", "columns": ["age"], "strategy": "mean"},
        {"op": "standardize", "columns": ["age"]},
    )
    ages = np.array(t["age"])
    assert ages.mean() == pytest.approx(0, abs=1e-9)
    assert ages.std() == pytest.approx(1)
    t = run(src, tmp_path, {"op": "min_max_scale", "columns": ["id"]})
    assert t["id"][0] == 0.0
    assert t["id"][-1] == 1.0


def test_one_hot_pca_generalize(src, tmp_path):
    t = run(src, tmp_path, {"op": "one_hot", "columns": ["city"], "max_categories": 2})
    assert "city" not in t
    assert t["city=Paris"] == [1, 0, None, 1, 0, 1]
    # Paris (3) first; Oslo and Rome tie at 1, and the tie goes to the smaller value
    assert list(t) == ["id", "age", "email", "when", "city=Paris", "city=Oslo"]
    assert t["city=Oslo"] == [0, 0, None, 0, 1, 0]
    t = run(
        src,
        tmp_path,
        {"op": "impute", "columns": ["age"], "strategy": "constant", "value": 0},
        {"op": "pca", "columns": ["id", "age"], "n_components": 1},
    )
    x = np.column_stack([[1, 2, 3, 4, 5, 6], [20, 0, 40, 50, 1000, 30]]).astype(float)
    expected = PCA(n_components=1).fit_transform(x)[:, 0]
    got = np.array(t["pc1"])
    assert np.allclose(np.abs(got), np.abs(expected))
    t = run(src, tmp_path, {"op": "generalize", "column": "age", "width": 10})
    assert t["age"][:3] == ["[20, 30)", None, "[40, 50)"]
    t = run(src, tmp_path, {"op": "generalize", "column": "when", "unit": "month"})
    assert str(t["when"][0]) == "2024-01-01"


def test_pii_steps(src, tmp_path):
    t = run(
        src, tmp_path, {"op": "hash", "columns": ["email"]}, {"op": "mask", "columns": ["city"]}
    )
    assert t["email"][0] == hmac_hex(KEY, "alice@x.org")
    assert t["email"][3] is None
    assert t["city"][0] == "***is"
    t = run(src, tmp_path, {"op": "mask", "columns": ["email"]})
    # e-mails keep the first character and the domain; a one-character local part is itself
    assert t["email"] == ["a****@x.org", "b@y.org", "c@z.org", None, "e@x.org", "f@y.org"]
    t = run(src, tmp_path, {"op": "drop", "columns": ["email"]})
    assert "email" not in t


@pytest.mark.parametrize(
    ("steps", "index", "op"),
    [
        ([{"op": "drop_columns", "columns": ["nope"]}], 0, "drop_columns"),
        (
            [
                {"op": "rename", "mapping": {"id": "x"}},
                {"op": "cast", "columns": {"id": "integer"}},
            ],
            1,
            "cast",
        ),
        ([{"op": "cast", "columns": {"city": "integer"}}], 0, "cast"),
        ([{"op": "impute", "columns": ["city"], "strategy": "mean"}], 0, "impute"),
        (
            [{"op": "filter", "conditions": [{"column": "age", "cmp": "gt", "value": "x"}]}],
            0,
            "filter",
        ),
        ([{"op": "pca", "columns": ["age"], "n_components": 1}], 0, "pca"),
        ([{"op": "generalize", "column": "city", "width": 5}], 0, "generalize"),
        (
            [{"op": "drop_columns", "columns": ["id", "age", "city", "email", "when"]}],
            0,
            "drop_columns",
        ),
        ([{"op": "rename", "mapping": {"id": "age"}}], 0, "rename"),
    ],
)
def test_errors_name_the_step(src, tmp_path, steps, index, op):
    with pytest.raises(InvalidInput) as info:
        run(src, tmp_path, *steps)
    assert info.value.detail.startswith(f"step {index} ({op}):")
    assert info.value.extra["errors"][0]["step"] == index


def test_schema_validation():
    with pytest.raises(ValidationError):
        Recipe(steps=[{"op": "sql", "query": "DROP TABLE x"}])
    with pytest.raises(ValidationError):
        Recipe(steps=[{"op": "filter", "conditions": [{"column": "a", "cmp": "raw", "value": 1}]}])
    with pytest.raises(ValidationError):
        Recipe(steps=[])
    assert not math.isnan(1.0)


def test_recipe_rejects_empty_result(src, tmp_path):
    with pytest.raises(InvalidInput, match="no rows"):
        run(
            src,
            tmp_path,
            {"op": "filter", "conditions": [{"column": "id", "cmp": "gt", "value": 100}]},
        )
