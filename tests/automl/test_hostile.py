"""Hostile inputs give a typed AutoMLError with a clear one-line message (never a crash)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import aiaas.automl as automl

FAST: dict[str, Any] = {"time_budget": 10, "max_trials": 2, "n_jobs": 1}


def _base(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "z": rng.normal(size=n), "y": (x > 0).astype(int)})


@pytest.mark.parametrize(
    ("make", "target", "kwargs", "error", "words"),
    [
        (lambda: _base(), "missing", {}, automl.InvalidTarget, "not in the data"),
        (lambda: _base().assign(y=1), "y", {}, automl.InvalidTarget, "single class"),
        (
            lambda: _base().assign(x=np.nan, z=np.nan),
            "y",
            {},
            automl.InvalidData,
            "no usable feature",
        ),
        (lambda: _base(10), "y", {}, automl.InvalidData, "at least 20 rows"),
        (
            lambda: _base().assign(y=np.r_[np.inf, np.arange(59.0)]),
            "y",
            {},
            automl.InvalidTarget,
            "infinite",
        ),
        (lambda: _base().assign(y=np.nan), "y", {}, automl.InvalidTarget, "no values"),
        (
            lambda: _base().assign(y=["a", "b", "c"] * 20),
            "y",
            {"task": "regression"},
            automl.InvalidTarget,
            "must be numeric",
        ),
        (lambda: _base(), "y", {"task": "ranking"}, automl.InvalidConfig, "task must be"),
        (lambda: _base(), "y", {"metric": "rmse"}, automl.InvalidConfig, "does not apply"),
        (lambda: _base(), "y", {"time_budget": 0}, automl.InvalidConfig, "time_budget"),
        (
            lambda: _base(),
            "y",
            {"families": ["nope"]},
            automl.InvalidConfig,
            "unknown model families",
        ),
        (lambda: "not a table", "y", {}, automl.InvalidData, "DataFrame"),
    ],
    ids=[
        "missing-target-column",
        "single-class",
        "all-missing-columns",
        "10-rows",
        "inf-target",
        "all-nan-target",
        "non-numeric-regression-target",
        "bad-task",
        "metric-task-mismatch",
        "zero-budget",
        "unknown-family",
        "not-a-table",
    ],
)
def test_hostile_input_raises_typed_error(make, target, kwargs, error, words) -> None:
    with pytest.raises(error) as info:
        automl.fit(make(), target, **{**FAST, **kwargs})
    assert isinstance(info.value, automl.AutoMLError)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert words in message
    assert "\n" not in message


def test_nan_target_rows_are_dropped_and_reported() -> None:
    df = _base(80)
    df.loc[:9, "y"] = np.nan
    model = automl.fit(df, "y", **FAST)
    rep = model.report()
    assert rep["data"]["rows_dropped_missing_target"] == 10
    assert rep["data"]["rows_used"] == 70
    assert any("missing target" in w for w in rep["warnings"])


def test_five_thousand_level_categorical_trains() -> None:
    rng = np.random.default_rng(0)
    n = 6000
    level = rng.integers(0, 5000, n)
    effect = (level % 7) / 7.0
    x = rng.normal(size=n)
    y = (x + effect + rng.normal(scale=0.5, size=n) > 0.5).astype(int)
    df = pd.DataFrame({"level": [f"L{i:04d}" for i in level], "x": x, "y": y})
    model = automl.fit(df, "y", time_budget=20, max_trials=2, n_jobs=2)
    assert model.report()["columns"]["used"]["level"] == "categorical"
    assert model.predict_proba(df.head(5)).shape == (5, 2)


def test_unique_string_per_row_is_dropped_as_id() -> None:
    df = _base(200).assign(key=[f"row-{i}" for i in range(200)])
    model = automl.fit(df, "y", **FAST)
    assert "key" in model.report()["columns"]["dropped"]


def test_unicode_column_names_and_values() -> None:
    rng = np.random.default_rng(1)
    n = 150
    df = pd.DataFrame(
        {
            "température °C": rng.normal(size=n),
            "城市": rng.choice(["東京", "Zürich", "São Paulo"], size=n),
            "✓ résultat": rng.choice(["oui", "non"], size=n),
        }
    )
    model = automl.fit(df, "✓ résultat", **FAST)
    assert [c["name"] for c in model.signature["inputs"]] == ["température °C", "城市"]
    assert set(model.predict(df.head(10))) <= {"oui", "non"}


def test_leakage_is_warned_in_the_report() -> None:
    df = _base(100)
    df["leak"] = df["y"].map({0: "no", 1: "yes"})
    model = automl.fit(df, "y", **FAST)
    assert any("leak" in w and "leakage" in w for w in model.report()["warnings"])


def test_predict_with_missing_column_is_invalid_data() -> None:
    model = automl.fit(_base(), "y", **FAST)
    with pytest.raises(automl.InvalidData, match="'x'"):
        model.predict(_base().drop(columns=["x"]))
