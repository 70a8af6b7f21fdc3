"""Greedy ensemble selection (Caruana et al., 2004) over out-of-fold predictions."""

from __future__ import annotations

from collections import Counter

import numpy as np
from numpy.typing import NDArray

from aiaas.automl.metrics import Metric, loss

__all__ = ["greedy_ensemble"]


def greedy_ensemble(
    preds: list[NDArray[np.float64]],
    y: NDArray[np.generic],
    metric: Metric,
    *,
    n_iter: int = 40,
) -> tuple[dict[int, float], float]:
    """Select, with replacement, the members whose average minimises the metric's loss.

    Starts from the single best model and adds one member (possibly again) per step; the
    best prefix is kept. Returns ``({index: weight}, loss)`` with weights summing to 1.
    """
    losses = [loss(metric, y, p) for p in preds]
    first = int(np.argmin(losses))
    counts: Counter[int] = Counter({first: 1})
    total = preds[first].astype(np.float64).copy()
    best_loss, best_counts = losses[first], Counter(counts)
    stale = 0
    for step in range(1, n_iter):
        n = step + 1
        cand_losses = [loss(metric, y, (total + p) / n) for p in preds]
        j = int(np.argmin(cand_losses))
        total += preds[j]
        counts[j] += 1
        if cand_losses[j] < best_loss - 1e-12:
            best_loss, best_counts = cand_losses[j], Counter(counts)
            stale = 0
        else:
            stale += 1
            if stale >= 8:
                break
    n_total = sum(best_counts.values())
    return {i: c / n_total for i, c in sorted(best_counts.items())}, best_loss
