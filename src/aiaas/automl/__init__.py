"""aiaas.automl — a pure AutoML library (no database, no HTTP, no settings).

``fit(data, target, ...)`` searches LightGBM, XGBoost, HistGradientBoosting, random forest /
extra trees, linear models, k-NN and an MLP in one conditional Optuna (TPE) space within a time
budget, builds a greedy ensemble of the best trials when it helps, refits on all rows and returns
a :class:`TrainedModel`; ``load(dir)`` reads a model written by ``TrainedModel.save``.

Thread control: OpenMP's busy-waiting makes multithreaded LightGBM/XGBoost many times slower on
busy cores, so ``OMP_WAIT_POLICY=PASSIVE`` is set here, before those libraries (or scikit-learn's
OpenMP runtime) load, unless the caller set it already.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from aiaas.automl.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    AutoMLError,
    InvalidConfig,
    InvalidData,
    InvalidTarget,
    SearchFailed,
)
from aiaas.automl.fit import default_n_jobs, fit
from aiaas.automl.metrics import METRICS
from aiaas.automl.model import TrainedModel, load
from aiaas.automl.search import TrialResult

__all__ = [
    "METRICS",
    "ArtifactError",
    "ArtifactIntegrityError",
    "AutoMLError",
    "InvalidConfig",
    "InvalidData",
    "InvalidTarget",
    "SearchFailed",
    "TrainedModel",
    "TrialResult",
    "default_n_jobs",
    "fit",
    "load",
]
