"""Metrics: one table, each with its direction and what prediction it scores.

Predictions are always in the library's internal form: for classification an ``(n, k)``
probability matrix whose columns follow the encoded classes ``0..k-1``; for regression a 1-d
array. ``loss(metric, y, pred)`` returns a value to *minimise* (negated when greater is better),
which is what the search optimises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata
from sklearn import metrics as skm

from aiaas.automl.errors import InvalidConfig
from aiaas.automl.types import Task

__all__ = ["METRICS", "DEFAULT_METRIC", "Metric", "get_metric", "loss", "score"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_EPS = 1e-15


@dataclass(frozen=True)
class Metric:
    """A scoring function over internal predictions."""

    name: str
    greater_is_better: bool
    tasks: frozenset[Task]
    fn: Callable[[NDArray[np.generic], FloatArray, int], float]


def _labels(pred: FloatArray) -> IntArray:
    return np.asarray(np.argmax(pred, axis=1), dtype=np.int64)


def _binary_auc(y: NDArray[np.generic], s: FloatArray) -> float:
    """ROC AUC via the rank-sum (Mann-Whitney) identity; ties get average ranks."""
    pos = np.asarray(y) == 1
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _roc_auc(y: NDArray[np.generic], pred: FloatArray, k: int) -> float:
    if k == 2:
        return _binary_auc(y, pred[:, 1])
    present = np.unique(y)
    if present.size < 2:
        return 0.5
    p = pred[:, present]
    p = p / np.clip(p.sum(axis=1, keepdims=True), _EPS, None)
    return float(skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=present))


def _log_loss(y: NDArray[np.generic], pred: FloatArray, k: int) -> float:
    p = np.clip(pred, _EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    idx = np.asarray(y, dtype=np.int64)
    return float(-np.mean(np.log(p[np.arange(idx.size), idx])))


def _accuracy(y: NDArray[np.generic], pred: FloatArray, k: int) -> float:
    return float(np.mean(_labels(pred) == np.asarray(y)))


def _balanced_accuracy(y: NDArray[np.generic], pred: FloatArray, k: int) -> float:
    return float(skm.balanced_accuracy_score(y, _labels(pred)))


def _f1(y: NDArray[np.generic], pred: FloatArray, k: int) -> float:
    if k == 2:
        return float(skm.f1_score(y, _labels(pred), average="binary", zero_division=0.0))
    return float(
        skm.f1_score(y, _labels(pred), average="macro", labels=np.arange(k), zero_division=0.0)
    )


def _rmse(y: NDArray[np.generic], pred: FloatArray, k: int) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, dtype=np.float64) - pred) ** 2)))


def _mae(y: NDArray[np.generic], pred: FloatArray, k: int) -> float:
    return float(np.mean(np.abs(np.asarray(y, dtype=np.float64) - pred)))


def _r2(y: NDArray[np.generic], pred: FloatArray, k: int) -> float:
    return float(skm.r2_score(np.asarray(y, dtype=np.float64), pred))


_CLS: frozenset[Task] = frozenset({"binary", "multiclass"})
_REG: frozenset[Task] = frozenset({"regression"})

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("roc_auc", True, _CLS, _roc_auc),
        Metric("log_loss", False, _CLS, _log_loss),
        Metric("accuracy", True, _CLS, _accuracy),
        Metric("balanced_accuracy", True, _CLS, _balanced_accuracy),
        Metric("f1", True, _CLS, _f1),
        Metric("rmse", False, _REG, _rmse),
        Metric("mae", False, _REG, _mae),
        Metric("r2", True, _REG, _r2),
    )
}

_ALIASES = {
    "auc": "roc_auc",
    "logloss": "log_loss",
    "f1_macro": "f1",
    "f1_binary": "f1",
}

DEFAULT_METRIC: dict[Task, str] = {
    "binary": "roc_auc",
    "multiclass": "log_loss",
    "regression": "rmse",
}


def get_metric(name: str | None, task: Task) -> Metric:
    """The metric called ``name`` (or the task's default), checked against the task."""
    if name is None:
        name = DEFAULT_METRIC[task]
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in METRICS:
        raise InvalidConfig(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    metric = METRICS[key]
    if task not in metric.tasks:
        raise InvalidConfig(f"metric {metric.name!r} does not apply to a {task} task")
    return metric


def score(metric: Metric, y: NDArray[np.generic], pred: FloatArray) -> float:
    """The metric's value (in its natural direction)."""
    k = pred.shape[1] if pred.ndim == 2 else 0
    return metric.fn(y, pred, k)


def loss(metric: Metric, y: NDArray[np.generic], pred: FloatArray) -> float:
    """The value to minimise: the metric, negated when greater is better."""
    value = score(metric, y, pred)
    return -value if metric.greater_is_better else value
