"""Task inference (``task="auto"``): the rule of :mod:`aiaas.automl.target`, what the report
says about it, the close-call warning and the explicit override."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import aiaas.automl as automl
from aiaas.automl.target import infer_task, max_classes, prepare_target

FAST: dict[str, Any] = {"time_budget": 20, "max_trials": 2, "n_jobs": 1, "families": ["linear"]}
RNG = np.random.default_rng(0)
N = 1000


def _frame(y: Any, n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n), "y": y})


@pytest.mark.parametrize(
    ("values", "task", "close"),
    [
        (RNG.integers(1, 6, N), "multiclass", False),  # ratings 1..5
        (RNG.integers(0, 2, N), "binary", False),
        (RNG.choice([-1.0, 1.0], N), "binary", False),
        (RNG.integers(0, 30, 5 * N), "multiclass", False),  # a few dozen integer codes
        (
            RNG.choice(RNG.choice(np.arange(100, 100_000), 800, replace=False), N),
            "regression",
            False,
        ),
        (RNG.normal(size=N), "regression", False),
        (RNG.choice([0.5, 1.5, 2.5], N), "regression", False),  # fractional: a quantity
        (RNG.choice(np.arange(10, 101, 10), N), "regression", True),  # evenly spaced, step 10
        (RNG.integers(0, 80, N), "multiclass", True),  # near the threshold (100 at 1000 rows)
        (RNG.integers(0, 150, N), "regression", True),
        (RNG.integers(1, 6, N).astype(np.float64), "multiclass", True),  # codes as decimals
        (RNG.choice(["a", "b", "c"], N), "multiclass", False),
        (RNG.choice(["yes", "no"], N), "binary", False),
        (RNG.choice([True, False], N), "binary", False),
        (pd.Categorical(RNG.choice([1, 2, 3, 4], N)), "multiclass", False),
    ],
)
def test_the_rule(values: Any, task: str, close: bool) -> None:
    got = infer_task(pd.Series(values))
    assert (got.task, got.close) == (task, close), got.reason
    assert got.rows == len(values)
    assert got.distinct == pd.Series(values).nunique()


def test_an_integer_column_with_missing_values_is_not_a_close_call() -> None:
    """pandas makes such a column float: that is no sign of decimals."""
    y = pd.Series(RNG.integers(1, 6, N), dtype=np.float64)
    y[::10] = np.nan
    got = infer_task(y)
    assert (got.task, got.close, got.rows) == ("multiclass", False, 900)


def test_the_class_threshold_grows_with_the_rows() -> None:
    assert [max_classes(n) for n in (20, 100, 500, 1000, 2000, 5000, 20_000, 10**6)] == [
        4,
        10,
        50,
        100,
        100,
        250,
        1000,
        1000,
    ]


def test_the_report_says_what_was_inferred_and_why() -> None:
    model = automl.fit(_frame(RNG.integers(1, 6, N)), "y", **FAST)
    rep = model.report()
    assert rep["task"] == "multiclass"
    inference = rep["task_inference"]
    assert {k: inference[k] for k in ("task", "distinct", "rows", "close")} == {
        "task": "multiclass",
        "distinct": 5,
        "rows": N,
        "close": False,
    }
    assert "5 distinct whole numbers in 1000 rows" in inference["reason"]
    assert rep["warnings"] == []


def test_integer_prices_are_a_regression() -> None:
    prices = RNG.choice(RNG.choice(np.arange(100, 100_000), 800, replace=False), N)
    rep = automl.fit(_frame(prices), "y", **FAST).report()
    assert rep["task"] == "regression"
    assert rep["task_inference"]["distinct"] == len(np.unique(prices))
    assert "more than the 100 class codes" in rep["task_inference"]["reason"]


def test_a_close_call_warns_with_the_override_and_the_override_wins() -> None:
    frame = _frame(RNG.integers(0, 80, N))
    rep = automl.fit(frame, "y", **FAST).report()
    assert rep["task"] == "multiclass"
    assert rep["task_inference"]["close"] is True
    [warning] = [w for w in rep["warnings"] if "close call" in w]
    assert "task='regression'" in warning
    forced = automl.fit(frame, "y", task="regression", **FAST).report()
    assert forced["task"] == "regression"
    assert forced["task_inference"]["task"] == "regression"
    assert forced["task_inference"]["requested"] == "regression"
    assert forced["task_inference"]["inferred"] == "multiclass"
    assert "task='regression' was given" in forced["task_inference"]["reason"]
    assert not [w for w in forced["warnings"] if "close call" in w]


def test_evenly_spaced_values_warn_towards_multiclass() -> None:
    rep = automl.fit(_frame(RNG.choice(np.arange(10, 101, 10), N)), "y", **FAST).report()
    assert rep["task"] == "regression"
    assert "step of 10" in rep["task_inference"]["reason"]
    assert any("task='multiclass'" in w for w in rep["warnings"])
    forced = automl.fit(
        _frame(RNG.choice(np.arange(10, 101, 10), N)), "y", **{**FAST, "task": "multiclass"}
    )
    assert forced.task == "multiclass"
    assert len(forced.classes_) == 10


@pytest.mark.parametrize(
    ("values", "task", "words"),
    [
        (["a", "b", "c"] * 20, "regression", "must be numeric"),
        ([True, False] * 30, "regression", "task='binary'"),
        ([1, 2, 3] * 20, "binary", "use task='multiclass'"),
    ],
)
def test_an_explicit_task_is_checked_against_the_values(
    values: list[Any], task: Any, words: str
) -> None:
    with pytest.raises(automl.InvalidTarget, match=words) as info:
        prepare_target(pd.Series(values), task)
    assert isinstance(info.value, automl.AutoMLError)
    with pytest.raises(automl.InvalidTarget, match=words):
        automl.fit(_frame(values, len(values)), "y", task=task, **FAST)


def test_numeric_text_may_be_a_regression_target() -> None:
    inference, y, classes, _ = prepare_target(pd.Series(["1.5", "2", "3.25"] * 10), "regression")
    assert inference.task == "regression"
    assert classes is None
    assert y[:3].tolist() == [1.5, 2.0, 3.25]
