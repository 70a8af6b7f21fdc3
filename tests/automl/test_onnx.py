"""ONNX parity: for every family that converts, ONNX Runtime matches the native model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import aiaas.automl as automl
from aiaas.automl.families import FAMILIES

from .conftest import pmlb

CONVERTING = [name for name, fam in FAMILIES.items() if fam.onnx]


@pytest.fixture(scope="module")
def binary_split(mixed_df):
    return train_test_split(mixed_df, test_size=0.3, random_state=0, stratify=mixed_df.y)


@pytest.fixture(scope="module")
def multiclass_split():
    df = pmlb("splice", n=600)  # all-categorical integer codes: one-hot + native categories
    return train_test_split(df, test_size=0.3, random_state=0, stratify=df.target)


@pytest.fixture(scope="module")
def regression_split():
    df = pmlb("537_houses", n=800)
    return train_test_split(df, test_size=0.3, random_state=0)


@pytest.mark.parametrize("family", CONVERTING)
def test_onnx_matches_native_probabilities_binary(family, binary_split, tmp_path) -> None:
    train, test = binary_split
    model = automl.fit(train, "y", families=[family], time_budget=30, max_trials=1, n_jobs=1)
    X = test.drop(columns="y")
    assert model.to_onnx() is not None, f"{family} should convert"
    native = model.predict_proba(X)
    onnx = model.predict_proba(X, backend="onnx")
    np.testing.assert_allclose(onnx, native, atol=1e-5, rtol=0)
    _assert_round_trip(model, X, tmp_path)


@pytest.mark.parametrize("family", CONVERTING)
def test_onnx_matches_native_probabilities_multiclass(family, multiclass_split, tmp_path) -> None:
    train, test = multiclass_split
    model = automl.fit(
        train,
        "target",
        task="multiclass",
        families=[family],
        time_budget=30,
        max_trials=1,
        n_jobs=1,
    )
    X = test.drop(columns="target")
    np.testing.assert_allclose(
        model.predict_proba(X, backend="onnx"), model.predict_proba(X), atol=1e-5, rtol=0
    )
    _assert_round_trip(model, X, tmp_path)


@pytest.mark.parametrize("family", CONVERTING)
def test_onnx_matches_native_regression(family, regression_split, tmp_path) -> None:
    train, test = regression_split
    model = automl.fit(
        train,
        "target",
        task="regression",
        families=[family],
        time_budget=30,
        max_trials=1,
        n_jobs=1,
    )
    X = test.drop(columns="target")
    native = model.predict(X)
    onnx = model.predict(X, backend="onnx")
    # float32 graph: relative to the target's scale
    np.testing.assert_allclose(
        onnx, native, atol=1e-5 * float(np.abs(train.target).max()), rtol=1e-5
    )
    _assert_round_trip(model, X, tmp_path)


def test_onnx_of_an_ensemble_matches_and_is_saved(binary_split, tmp_path) -> None:
    train, test = binary_split
    model = automl.fit(
        train,
        "y",
        families=["lightgbm", "linear", "extra_trees"],
        time_budget=30,
        max_trials=5,
        n_jobs=1,
    )
    X = test.drop(columns="y")
    np.testing.assert_allclose(
        model.predict_proba(X, backend="onnx"), model.predict_proba(X), atol=1e-5, rtol=0
    )
    path = model.save(tmp_path / "m")
    manifest = (path / "manifest.json").read_text()
    assert '"output": "probabilities"' in manifest
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": model.transform(X)})[0]
    np.testing.assert_allclose(out, model.predict_proba(X), atol=1e-5, rtol=0)


@pytest.mark.parametrize("split", ["binary_split", "multiclass_split", "regression_split"])
def test_family_that_does_not_convert_serves_natively(split, request, tmp_path) -> None:
    train, test = request.getfixturevalue(split)
    target = "y" if split == "binary_split" else "target"
    model = automl.fit(train, target, families=["histgb"], time_budget=30, max_trials=1, n_jobs=1)
    X = test.drop(columns=target)
    assert model.to_onnx() is None
    with pytest.raises(automl.InvalidConfig, match="no ONNX"):
        model.predict(X, backend="onnx")
    path = _assert_round_trip(model, X, tmp_path)
    assert not (path / "model.onnx").exists()


def _assert_round_trip(model, X, tmp_path):
    """Every family saves with the fixed trusted-type list and loads back identically."""
    path = model.save(tmp_path / "saved")
    loaded = automl.load(path)
    if model.task == "regression":
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    else:
        np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    return path


def test_raw_input_onnx_graph_encodes_columns_itself(mixed_df, tmp_path) -> None:
    """model_raw.onnx takes one input per raw column (strings for categories) and matches."""
    import json

    import onnxruntime as ort

    df = mixed_df.drop(columns=["when"])
    model = automl.fit(
        df, "y", families=["lightgbm", "linear"], time_budget=30, max_trials=3, n_jobs=1
    )
    X = df.drop(columns="y").head(60).copy()
    X.loc[0, "colour"] = "never-seen"
    X.loc[1, "colour"] = None
    X.loc[2, "x1"] = float("inf")
    raw = model.to_onnx_raw()
    assert raw is not None
    sess = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in sess.get_inputs()) == ["colour", "x1", "x2"]
    out = sess.run(None, model.onnx_raw_inputs(X))[0]
    np.testing.assert_allclose(out, model.predict_proba(X), atol=1e-5, rtol=0)
    path = model.save(tmp_path / "m")
    manifest = json.loads((path / "manifest.json").read_text())
    assert [i["name"] for i in manifest["onnx_raw"]["inputs"]] == ["x1", "x2", "colour"]


def test_raw_input_graph_is_absent_with_datetime_columns(mixed_df) -> None:
    model = automl.fit(mixed_df, "y", families=["linear"], time_budget=30, max_trials=1, n_jobs=1)
    assert model.to_onnx() is not None
    assert model.to_onnx_raw() is None
