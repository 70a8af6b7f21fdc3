"""Live quality metrics of served predictions against their feedback (pure: numpy, sklearn).

The names are those of training (``aiaas.jobs.schemas.METRICS``), so a version's live figures
sit beside its holdout scores. A metric that is undefined on the rows at hand is None: every
metric without labelled rows, ROC AUC when a class is missing from the actuals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

CLASSIFICATION = ("accuracy", "roc_auc", "log_loss")
REGRESSION = ("rmse", "mae")
_EPS = 1e-15


def classification(probabilities: NDArray[np.float64], actual: NDArray[np.int64]) -> dict[str, Any]:
    """``probabilities``: ``(n, K)`` in the model's class order; ``actual``: class indexes."""
    if len(actual) == 0:
        return dict.fromkeys(CLASSIFICATION)
    from sklearn.metrics import log_loss, roc_auc_score

    k = probabilities.shape[1]
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == actual))
    clipped = np.clip(probabilities, _EPS, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    loss = float(log_loss(actual, clipped, labels=list(range(k))))
    present = np.unique(actual)
    auc: float | None = None
    if k == 2 and len(present) == 2:
        auc = float(roc_auc_score(actual, probabilities[:, 1]))
    elif k > 2 and len(present) == k:
        auc = float(roc_auc_score(actual, clipped, multi_class="ovr", labels=list(range(k))))
    return {"accuracy": accuracy, "roc_auc": auc, "log_loss": _finite(loss)}


def regression(predicted: NDArray[np.float64], actual: NDArray[np.float64]) -> dict[str, Any]:
    if len(actual) == 0:
        return dict.fromkeys(REGRESSION)
    error = predicted - actual
    return {
        "rmse": _finite(float(np.sqrt(np.mean(error**2)))),
        "mae": _finite(float(np.mean(np.abs(error)))),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
