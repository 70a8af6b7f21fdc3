from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aiaas.automl.errors import InvalidData
from aiaas.automl.preprocess import TabularPreprocessor, detect_leakage
from aiaas.automl.target import infer_task, prepare_target


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1, 0, 1] * 10, "binary"),
        (["a", "b", "c"] * 10, "multiclass"),
        ([3, 4, 5, 6, 7] * 10, "multiclass"),
        (list(np.linspace(0, 1, 40)), "regression"),
        ([True, False] * 20, "binary"),
    ],
)
def test_infer_task(values: list[object], task: str) -> None:
    assert infer_task(pd.Series(values)).task == task


def test_prepare_target_drops_missing_and_encodes_sorted_classes() -> None:
    y = pd.Series(["b", None, "a", "b", np.nan, "c"])
    inference, enc, classes, keep = prepare_target(y, "auto")
    assert inference.task == "multiclass"
    assert keep.tolist() == [True, False, True, True, False, True]
    assert classes is not None
    assert list(classes) == ["a", "b", "c"]
    assert enc.tolist() == [1, 0, 1, 2]


def test_preprocessor_drops_id_constant_and_empty_columns_and_expands_dates(mixed_df) -> None:
    X = mixed_df.drop(columns=["y"]).assign(empty=np.nan)
    pre = TabularPreprocessor().fit(X)
    rep = pre.report()
    assert set(rep["dropped"]) == {"id", "constant", "empty"}
    assert rep["used"] == {
        "x1": "numeric",
        "x2": "numeric",
        "colour": "categorical",
        "when": "datetime",
    }
    assert "when.month" in pre.feature_names_out_
    out = pre.transform(X)
    assert out.dtype == np.float32
    assert out.shape == (len(X), len(pre.feature_names_out_))


def test_categorical_codes_unseen_and_missing() -> None:
    X = pd.DataFrame({"c": ["a"] * 30 + ["b"] * 20 + ["c"] * 10})
    pre = TabularPreprocessor().fit(X)
    out = pre.transform(pd.DataFrame({"c": ["a", "c", "zzz", None]}))
    assert out[:, 0].tolist() == [0.0, 2.0, -1.0, -1.0]


def test_high_cardinality_keeps_top_levels_and_an_other_code() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"c": [f"v{i}" for i in rng.integers(0, 5000, 20_000)]})
    pre = TabularPreprocessor(max_levels=100).fit(X)
    assert pre.highcard_features_ == [0]
    codes = pre.transform(X)[:, 0]
    assert codes.max() == 100.0  # the shared "other" code
    assert np.unique(codes).size == 101


def test_transform_requires_the_used_columns(mixed_df) -> None:
    X = mixed_df.drop(columns=["y"])
    pre = TabularPreprocessor().fit(X)
    with pytest.raises(InvalidData, match="x1"):
        pre.transform(X.drop(columns=["x1"]))
    # a dropped column may be absent
    pre.transform(X.drop(columns=["id"]))


def test_leakage_detection_flags_a_copy_of_the_target() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    X = pd.DataFrame({"copy": np.where(y == 1, "yes", "no"), "noise": rng.normal(size=200)})
    assert detect_leakage(X, y, "binary", ["copy", "noise"]) == ["copy"]
    yr = rng.normal(size=200)
    Xr = pd.DataFrame({"scaled": yr * 3 + 1, "noise": rng.normal(size=200)})
    assert detect_leakage(Xr, yr, "regression", ["scaled", "noise"]) == ["scaled"]
