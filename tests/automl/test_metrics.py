from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from aiaas.automl.errors import InvalidConfig
from aiaas.automl.metrics import get_metric, loss, score


def _proba(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    p = rng.random((n, k))
    out: np.ndarray = p / p.sum(axis=1, keepdims=True)
    return out


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = _proba(rng, 300, 2)
    assert score(get_metric("roc_auc", "binary"), y, p) == pytest.approx(
        skm.roc_auc_score(y, p[:, 1])
    )
    assert score(get_metric("log_loss", "binary"), y, p) == pytest.approx(skm.log_loss(y, p))
    assert score(get_metric("accuracy", "binary"), y, p) == pytest.approx(
        skm.accuracy_score(y, p.argmax(1))
    )
    y3 = rng.integers(0, 3, 300)
    p3 = _proba(rng, 300, 3)
    assert score(get_metric("roc_auc", "multiclass"), y3, p3) == pytest.approx(
        skm.roc_auc_score(y3, p3, multi_class="ovr")
    )
    assert score(get_metric("f1", "multiclass"), y3, p3) == pytest.approx(
        skm.f1_score(y3, p3.argmax(1), average="macro")
    )
    assert score(get_metric("balanced_accuracy", "multiclass"), y3, p3) == pytest.approx(
        skm.balanced_accuracy_score(y3, p3.argmax(1))
    )


def test_regression_metrics_and_loss_direction() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.5, 5.0])
    assert score(get_metric("rmse", "regression"), y, pred) == pytest.approx(
        np.sqrt(skm.mean_squared_error(y, pred))
    )
    assert score(get_metric("mae", "regression"), y, pred) == pytest.approx(
        skm.mean_absolute_error(y, pred)
    )
    r2 = get_metric("r2", "regression")
    assert loss(r2, y, pred) == pytest.approx(-skm.r2_score(y, pred))


def test_default_metrics_per_task() -> None:
    assert get_metric(None, "binary").name == "roc_auc"
    assert get_metric(None, "multiclass").name == "log_loss"
    assert get_metric(None, "regression").name == "rmse"


@pytest.mark.parametrize(
    ("name", "task"), [("nope", "binary"), ("rmse", "binary"), ("roc_auc", "regression")]
)
def test_unknown_or_mismatched_metric_is_invalid_config(name: str, task: str) -> None:
    with pytest.raises(InvalidConfig):
        get_metric(name, task)  # type: ignore[arg-type]  # a caller's unchecked string
