"""End to end: each task on small real data, the budget, determinism, ensembling, callbacks."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split

import aiaas.automl as automl

from .conftest import pmlb

FAST: dict[str, Any] = {"time_budget": 20, "max_trials": 4, "n_jobs": 1}


def test_binary_end_to_end(binary_df) -> None:
    train, test = train_test_split(
        binary_df, test_size=0.3, random_state=0, stratify=binary_df.label
    )
    model = automl.fit(train, "label", **FAST)
    assert model.task == "binary"
    assert list(model.classes_) == ["benign", "malignant"]
    proba = model.predict_proba(test.drop(columns="label"))
    assert proba.shape == (len(test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    auc = skm.roc_auc_score(test.label == "malignant", proba[:, 1])
    assert auc > 0.95
    assert set(model.predict(test.drop(columns="label"))) <= {"benign", "malignant"}
    rep = model.report()
    assert rep["metric"] == "roc_auc"
    assert rep["cv_score"] > 0.9
    assert rep["data"]["rows_used"] == len(train)
    assert len(model.leaderboard) == 4
    row = model.leaderboard[0]
    assert {"family", "params", "score", "score_std", "fit_time_s"} <= set(row)


def test_multiclass_end_to_end_on_pmlb() -> None:
    df = pmlb("satimage", n=1200)
    train, test = train_test_split(df, test_size=0.25, random_state=0, stratify=df.target)
    model = automl.fit(train, "target", task="multiclass", **FAST)
    assert model.report()["metric"] == "log_loss"
    proba = model.predict_proba(test.drop(columns="target"))
    assert proba.shape == (len(test), 6)
    ll = skm.log_loss(test.target, proba, labels=list(model.classes_))
    assert ll < 0.6
    assert model.signature["output"]["classes"] == [1, 2, 3, 4, 5, 7]


def test_regression_end_to_end_on_pmlb() -> None:
    df = pmlb("537_houses", n=1500)
    train, test = train_test_split(df, test_size=0.25, random_state=0)
    model = automl.fit(train, "target", task="regression", **FAST)
    pred = model.predict(test.drop(columns="target"))
    rmse = float(np.sqrt(np.mean((test.target - pred) ** 2)))
    assert rmse < 0.75 * test.target.std()
    # CV scores are in the target's units (not of the internally standardised target)
    cv = model.report()["cv_score"]
    assert 0.5 * rmse < cv < 2.0 * rmse
    assert model.leaderboard[0]["score"] == cv
    with pytest.raises(automl.InvalidConfig):
        model.predict_proba(test)
    with pytest.raises(automl.InvalidConfig):
        _ = model.classes_


def test_mixed_types_end_to_end(mixed_df) -> None:
    model = automl.fit(mixed_df, "y", **FAST)
    rep = model.report()
    assert set(rep["columns"]["dropped"]) == {"id", "constant"}
    sig = {c["name"]: c for c in model.signature["inputs"]}
    assert sig["colour"]["type"] == "string"
    assert sig["id"]["used"] is False
    assert (
        sum(model.feature_importance.values()) == pytest.approx(1.0) or not model.feature_importance
    )
    # unseen category and missing values at prediction time are fine
    rows = mixed_df.drop(columns="y").head(3).copy()
    rows.loc[0, "colour"] = "never-seen"
    rows.loc[1, "x1"] = np.nan
    assert model.predict_proba(rows).shape == (3, 2)


def test_time_budget_is_respected(binary_df) -> None:
    budget = 6.0
    started = time.monotonic()
    model = automl.fit(binary_df, "label", time_budget=budget, n_jobs=2)
    elapsed = time.monotonic() - started
    assert elapsed <= budget * 1.1 + 1.0  # + building the frame, imports on a busy machine
    assert model.report()["timings"]["total_s"] <= budget * 1.1
    assert len(model.leaderboard) >= 3


def test_same_seed_same_leaderboard_order() -> None:
    df = pmlb("hypothyroid", n=600)
    kw: dict[str, Any] = {"time_budget": 60, "max_trials": 7, "seed": 3, "n_jobs": 2}
    a = automl.fit(df, "target", **kw)
    b = automl.fit(df, "target", **kw)

    def order(m):
        return [(r["trial"], r["family"], r["state"], r["score"]) for r in m.leaderboard]

    assert order(a) == order(b)
    c = automl.fit(df, "target", **{**kw, "seed": 4})
    assert order(c) != order(a)


def test_ensemble_is_kept_only_when_it_beats_the_best_trial() -> None:
    df = pmlb("wine_quality_white", n=1000)
    model = automl.fit(df, "target", task="multiclass", time_budget=60, max_trials=6, n_jobs=2)
    rep = model.report()
    members = rep["ensemble"]["members"]
    assert sum(m["weight"] for m in members) == pytest.approx(1.0)
    if len(members) > 1:
        # the ensemble's out-of-fold log loss is below every single trial's
        best_single = min(r["score"] for r in model.leaderboard if r["state"] == "complete")
        assert rep["ensemble"]["oof_score"] < best_single + 0.02
    assert len(model.members) == len(members)


def test_callback_sees_every_trial_and_can_stop_the_search(binary_df) -> None:
    seen = []

    def cb(result):
        seen.append(result)
        return len(seen) < 2

    model = automl.fit(binary_df, "label", time_budget=30, callbacks=[cb], n_jobs=1)
    assert len(seen) == 2
    assert len(model.leaderboard) == 2
    assert all(isinstance(r, automl.TrialResult) for r in seen)


def test_grid_sampler_and_family_restriction(regression_df) -> None:
    model = automl.fit(
        regression_df,
        "target",
        time_budget=20,
        families=["linear", "knn"],
        sampler="grid",
        n_jobs=1,
    )
    fams = {r["family"] for r in model.leaderboard}
    assert fams == {"linear", "knn"}
    # defaults (1 each) + the small grid (3 linear, 2 knn)
    assert len(model.leaderboard) == 7


def test_balanced_metric_on_imbalanced_data_uses_class_weights() -> None:
    df = pmlb("hypothyroid", n=800)
    model = automl.fit(
        df, "target", metric="balanced_accuracy", time_budget=20, max_trials=3, n_jobs=1
    )
    assert model.report()["metric"] == "balanced_accuracy"
    assert model.report()["cv_score"] > 0.8


def test_distillation_replaces_the_ensemble_with_one_lightgbm(tmp_path) -> None:
    df = pmlb("hypothyroid", n=1000)
    train, test = train_test_split(df, test_size=0.3, random_state=0, stratify=df.target)
    kw: dict[str, Any] = {
        "time_budget": 60,
        "max_trials": 6,
        "n_jobs": 2,
        "families": ["lightgbm", "linear", "extra_trees"],
    }
    teacher = automl.fit(train, "target", **kw)
    student = automl.fit(train, "target", distill=True, **kw)
    rep = student.report()
    if len(teacher.members) < 2:
        pytest.skip("no ensemble to distil with this seed")
    assert student.families == ["lightgbm"]
    assert len(student.members) == 1
    assert rep["distillation"]["fidelity"] > 0.95
    X = test.drop(columns="target")
    auc_teacher = skm.roc_auc_score(test.target, teacher.predict_proba(X)[:, 1])
    auc_student = skm.roc_auc_score(test.target, student.predict_proba(X)[:, 1])
    assert auc_student > auc_teacher - 0.02
    np.testing.assert_allclose(
        student.predict_proba(X, backend="onnx"), student.predict_proba(X), atol=1e-5
    )


def test_distillation_is_skipped_for_multiclass() -> None:
    df = pmlb("wine_quality_white", n=600)
    model = automl.fit(
        df, "target", task="multiclass", time_budget=30, max_trials=3, n_jobs=2, distill=True
    )
    assert model.report()["distillation"] is None
    assert any("distillation skipped" in w for w in model.report()["warnings"])
