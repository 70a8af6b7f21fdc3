"""``fit``: from a table and a target column to a :class:`TrainedModel`.

Time accounting: the search runs until ``time_budget`` minus a reserve for refitting the
final members on all rows and converting them to ONNX (estimated from the trials' measured
fit times and tree sizes); ensemble selection then only uses members whose refit still fits
the time left; the refit stops at the budget with what it has grown, and the conversion is
skipped when it would not fit, so the whole call ends within ``time_budget * 1.05 +
FIT_OVERSHOOT_S``.

``fit`` runs four stages: ``_prepare`` (validation, the target, the features, the splits),
``_search_and_refit`` (the search, ``_select``, the refit and ``_distill``), then
``_build_report`` and the :class:`TrainedModel`.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from aiaas.automl.ensemble import greedy_ensemble
from aiaas.automl.errors import InvalidConfig, InvalidData, InvalidTarget, SearchFailed
from aiaas.automl.families import FAMILIES, Context
from aiaas.automl.metrics import Metric, get_metric, loss
from aiaas.automl.model import TrainedModel
from aiaas.automl.preprocess import MIN_ROWS, TabularPreprocessor, detect_leakage
from aiaas.automl.search import (
    Split,
    TrialResult,
    TrialState,
    fit_predict,
    make_splits,
    parallel_map,
    run_search,
)
from aiaas.automl.target import TaskInference, prepare_target
from aiaas.automl.types import TASK_OPTIONS, Task, TaskOption

if TYPE_CHECKING:
    from aiaas.automl.executors import TrialExecutor

__all__ = ["fit"]

log = logging.getLogger(__name__)

# ``fit(time_budget=B)`` returns within ``B * 1.05 + FIT_OVERSHOOT_S``: after the budget's
# end only the current boosting round or chunk of trees of a refit, the report, and the
# ONNX conversion's estimation error remain (measured on 2 busy cores: under 0.6 s)
FIT_OVERSHOOT_S = 1.0
# the ONNX conversion's cost: a fixed part per member and a part per tree leaf (measured
# 14-31 us per leaf for LightGBM, XGBoost and the forests on 2 cores; taken with margin)
EXPORT_S_PER_MEMBER = 0.3
EXPORT_S_PER_LEAF = 40e-6


def default_n_jobs() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _as_frame(data: Any) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas"):
        out = data.to_pandas()
        if isinstance(out, pd.DataFrame):
            return out
    if isinstance(data, dict):
        try:
            return pd.DataFrame(data)
        except ValueError as exc:
            raise InvalidData(f"cannot build a table from the given columns: {exc}") from exc
    raise InvalidData("data must be a pandas DataFrame (or a mapping of columns)")


@dataclass
class _Problem:
    """The validated, preprocessed training problem that the search and the refit share."""

    task: Task
    inference: TaskInference
    metric: Metric
    pre: TabularPreprocessor
    X: NDArray[np.float32]
    y: NDArray[Any]  # the encoded target: class codes, or the regression values
    y_fit: NDArray[Any]  # what the models train on (regression targets standardised)
    y_mean: float
    y_std: float
    classes: NDArray[Any] | None
    ctx: Context
    balanced: bool  # train with balanced sample weights (imbalanced classes, f1-like metric)
    split: Split
    n_total: int
    n_dropped: int
    n_columns: int
    warnings: list[str]

    @property
    def n_classes(self) -> int:
        return 0 if self.classes is None else len(self.classes)

    @property
    def score_scale(self) -> float:
        # rmse/mae computed on the standardised target are reported in the target's units
        return self.y_std if self.metric.name in ("rmse", "mae") else 1.0

    def class_labels(self) -> list[Any] | None:
        return None if self.classes is None else [_plain(c) for c in self.classes]


@dataclass
class _Outcome:
    """What the search, the ensemble selection, the refit and the distillation produced."""

    results: list[TrialResult]
    done: list[TrialResult]  # the complete trials, best first
    members: list[TrialResult]
    weights: list[float]
    fitted: list[Any]  # the members refit on all rows, or the one student
    ens_loss: float | None  # the ensemble's out-of-fold loss, when it beat the best trial
    seconds: dict[str, float]  # search_s, ensemble_s, refit_s
    distilled: dict[str, Any] | None = None

    @property
    def families(self) -> list[str]:
        return ["lightgbm"] if self.distilled else [r.family for r in self.members]


def fit(
    data: Any,
    target: str,
    *,
    task: str = "auto",
    metric: str | None = None,
    time_budget: float = 60,
    seed: int = 0,
    n_jobs: int | None = None,
    cv: int | float | None = None,
    callbacks: Sequence[Callable[[TrialResult], Any]] = (),
    max_trials: int | None = None,
    families: Sequence[str] | None = None,
    sampler: str = "tpe",
    ensemble: bool = True,
    distill: bool = False,
    executor: TrialExecutor | None = None,
) -> TrainedModel:
    """Search models for ``target`` within ``time_budget`` seconds and return the best.

    Args:
        data: the training table (pandas DataFrame, or a mapping of columns).
        target: name of the column to predict.
        task: ``auto`` (inferred), ``binary``, ``multiclass`` or ``regression``.
        metric: roc_auc, log_loss, accuracy, balanced_accuracy, f1, rmse, mae or r2;
            default roc_auc (binary), log_loss (multiclass), rmse (regression).
        time_budget: seconds for the whole call: preparation, search, ensembling, refit and
            (without ``max_trials``) the ONNX conversion that ``save`` then writes. The call
            returns within ``time_budget * 1.05 + FIT_OVERSHOOT_S`` (1 s): the search stops
            early enough for the refit and the conversion, estimated from the trials' fit
            times and tree sizes; trials still running at its end are stopped (``timeout``),
            a refit still running at the budget keeps the rounds or trees it has grown, and a
            conversion that would not fit is skipped (the model serves natively). A budget
            too short for one full trial keeps the first trial with what it fit by then.
            Not bounded: a non-interruptible fit (linear, k-NN, MLP) far slower than its
            trials predicted. Ray's start-up, when ``executor`` starts one, counts too.
        seed: makes splits, sampler and models reproducible.
        n_jobs: threads per model fit; default every core of this process.
        cv: number of folds, or a holdout fraction (float in (0, 1)); default by data size.
        callbacks: called with each finished :class:`TrialResult`; returning ``False`` stops
            the search early (the best model so far is still refit and returned).
        max_trials: stop after this many trials (with a fixed count, the same seed gives the
            same leaderboard).
        families: restrict the search to these model families.
        sampler: ``tpe`` (default), ``random`` or ``grid``.
        ensemble: allow greedy ensemble selection over the best trials.
        distill: (binary and regression) when the result is an ensemble, train one LightGBM
            student on its out-of-fold predictions (soft labels) and return that instead, for
            fast serving; ``report()["distillation"]`` gives its fidelity to the ensemble.
        executor: where the trials are evaluated (:mod:`aiaas.automl.executors`); default
            one at a time in this process. The refit always runs here.

    Raises:
        InvalidData, InvalidTarget, InvalidConfig, SearchFailed (all ``AutoMLError``).
    """
    t_start, wall_start = time.monotonic(), time.time()
    task_option = _check_options(task, time_budget, max_trials)
    _preload_export()
    n_jobs = default_n_jobs() if n_jobs is None or n_jobs <= 0 else int(n_jobs)
    problem = _prepare(data, target, task_option, metric, cv=cv, seed=seed, n_jobs=n_jobs)
    with threadpool_limits(limits=n_jobs):
        outcome = _search_and_refit(
            problem,
            budget=time_budget,
            t_start=t_start,
            max_trials=max_trials,
            families=families,
            sampler=sampler,
            callbacks=callbacks,
            ensemble=ensemble,
            distill=distill,
            executor=executor,
        )
    model, report = _trained_model(problem, outcome, time_budget, t_start, wall_start, seed)
    if max_trials is None:  # a budgeted fit also converts the model (``save`` then writes)
        t_export = time.monotonic()
        # the conversion may use the budget's 5 % allowance (not FIT_OVERSHOOT_S): it is
        # planned from a cost estimate, and an artifact without ONNX serves more slowly
        _export_in_budget(model, problem, outcome, t_start + time_budget * 1.05)
        report["timings"]["export_s"] = round(time.monotonic() - t_export, 3)
        report["timings"]["total_s"] = round(time.monotonic() - t_start, 3)
    return model


def _preload_export() -> None:
    """Import what saving the model needs on a background thread, while the search runs."""
    from aiaas.automl.onnx_export import _EXPORT_MODULES, preload_export

    if not all(name in sys.modules for name in _EXPORT_MODULES):
        threading.Thread(target=preload_export, name="aiaas-automl-preload", daemon=True).start()


def _check_options(task: str, time_budget: float, max_trials: int | None) -> TaskOption:
    """The options checked before the data is read; returns the task as a ``TaskOption``."""
    option = next((t for t in TASK_OPTIONS if t == task), None)
    if option is None:
        raise InvalidConfig(f"task must be one of {', '.join(TASK_OPTIONS)}")
    if (
        not isinstance(time_budget, int | float)
        or not math.isfinite(time_budget)
        or time_budget <= 0
    ):
        raise InvalidConfig("time_budget must be a positive number of seconds")
    if max_trials is not None and max_trials < 1:
        raise InvalidConfig("max_trials must be at least 1")
    return option


# ------------------------------------------------------------ the target and the features
def _prepare(
    data: Any,
    target: str,
    task: TaskOption,
    metric: str | None,
    *,
    cv: int | float | None,
    seed: int,
    n_jobs: int,
) -> _Problem:
    """Validate the table and the target, preprocess the features, choose the validation."""
    frame = _as_frame(data)
    if target not in frame.columns:
        raise InvalidTarget(f"target column {target!r} is not in the data")
    if frame.columns.duplicated().any():
        raise InvalidData("column names must be unique")
    inference, y, classes, keep = prepare_target(frame[target], task)
    resolved = inference.task
    n_dropped = int((~keep).sum())
    features = _features(frame, target, keep)
    metric_obj = get_metric(metric, resolved)
    notes = [f"dropped {n_dropped} row(s) with a missing target"] if n_dropped else []
    if (close_call := inference.warning()) is not None:
        notes.append(close_call)
        log.warning(close_call)
    pre, X = _preprocess(features, y, resolved, notes)
    y_fit, y_mean, y_std = _standardise(y, resolved)
    ctx = Context(
        task=resolved,
        n_classes=0 if classes is None else len(classes),
        n_rows=len(y),
        n_features=X.shape[1],
        categorical=list(pre.categorical_features_),
        highcard=list(pre.highcard_features_),
        lowcard_ints=list(pre.lowcard_int_features_),
        n_jobs=n_jobs,
        seed=seed,
    )
    return _Problem(
        task=resolved,
        inference=inference,
        metric=metric_obj,
        pre=pre,
        X=X,
        y=y,
        y_fit=y_fit,
        y_mean=y_mean,
        y_std=y_std,
        classes=classes,
        ctx=ctx,
        balanced=_needs_balancing(y, ctx, metric_obj),
        split=make_splits(y, resolved, cv, seed),
        n_total=len(frame),
        n_dropped=n_dropped,
        n_columns=int(features.shape[1]),
        warnings=notes,
    )


def _features(frame: pd.DataFrame, target: str, keep: NDArray[np.bool_]) -> pd.DataFrame:
    """The feature columns of the rows that have a target (column names as text)."""
    features = frame.loc[keep].drop(columns=[target]).reset_index(drop=True)
    features.columns = [str(c) for c in features.columns]
    if len(features) < MIN_ROWS:
        raise InvalidData(f"need at least {MIN_ROWS} rows with a target; got {len(features)}")
    if features.shape[1] == 0:
        raise InvalidData("the data has no feature columns besides the target")
    return features


def _preprocess(
    features: pd.DataFrame, y: NDArray[Any], task: Task, notes: list[str]
) -> tuple[TabularPreprocessor, NDArray[np.float32]]:
    """Fit the preprocessor; possible leakage and dropped columns go to ``notes``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = TabularPreprocessor().fit(features)
        X = pre.transform(features)
    used = [s["name"] for s in pre.specs_ if s["kind"] != "dropped"]
    for name in detect_leakage(features, y, task, used):
        msg = f"column {name!r} is (nearly) identical to the target: possible leakage"
        notes.append(msg)
        log.warning(msg)
    for name, reason in pre.report()["dropped"].items():
        notes.append(f"dropped column {name!r}: {reason}")
    return pre, X


def _standardise(y: NDArray[Any], task: Task) -> tuple[NDArray[Any], float, float]:
    """``(y_fit, y_mean, y_std)``: regression targets train standardised."""
    if task != "regression":
        return y, 0.0, 1.0
    y_mean = float(np.mean(y))
    y_std = float(np.std(y)) or 1.0
    return (y - y_mean) / y_std, y_mean, y_std


def _needs_balancing(y: NDArray[Any], ctx: Context, metric: Metric) -> bool:
    """Balanced sample weights: imbalanced classes scored by balanced accuracy or f1."""
    if ctx.task == "regression" or metric.name not in ("balanced_accuracy", "f1"):
        return False
    counts = np.bincount(y, minlength=ctx.n_classes)
    return bool(counts.max() > 1.5 * max(counts.min(), 1))


# ---------------------------------------------------------- the search, refit and distil
def _search_and_refit(
    p: _Problem,
    *,
    budget: float,
    t_start: float,
    max_trials: int | None,
    families: Sequence[str] | None,
    sampler: str,
    callbacks: Sequence[Callable[[TrialResult], Any]],
    ensemble: bool,
    distill: bool,
    executor: TrialExecutor | None = None,
) -> _Outcome:
    """Search, select the members, refit them on all rows, and distil them when asked."""
    t_search = time.monotonic()
    results = run_search(
        p.X,
        p.y_fit,
        p.ctx,
        p.metric,
        p.split,
        budget=budget,
        t_start=t_start,
        max_trials=max_trials,
        families=families,
        sampler=sampler,
        balanced=p.balanced,
        callbacks=callbacks,
        reserve_fn=_refit_reserve(p, budget, distill),
        score_scale=p.score_scale,
        executor=executor,
    )
    search_s = time.monotonic() - t_search
    done = _complete(results)
    if done[0].partial:
        p.warnings.append(
            f"the time budget ended before a trial could finish: trial {done[0].number} "
            f"({done[0].family}) was kept with {len(done[0].fold_scores)} of "
            f"{len(p.split.folds)} fold(s) and the rounds or trees it had; raise time_budget"
        )
    t_ens = time.monotonic()
    members, weights, ens_loss = _select(
        done, p.y_fit, p.split, p.metric, ensemble, t_start + budget, max_trials, p.ctx.n_jobs
    )
    ens_s = time.monotonic() - t_ens
    t_refit = time.monotonic()
    # the refit (and the student) stop at the budget, keeping the rounds and trees grown
    # so far; with max_trials they run to their end (a fixed count gives a fixed model)
    hard_end = t_start + budget if max_trials is None else math.inf
    fitted, w_full = _refit(p, members, hard_end)
    refit_s = time.monotonic() - t_refit
    seconds = {"search_s": search_s, "ensemble_s": ens_s, "refit_s": refit_s}
    outcome = _Outcome(results, done, members, weights, fitted, ens_loss, seconds)
    if distill:
        _distill_outcome(p, outcome, w_full)
    return outcome


def _refit_reserve(
    p: _Problem, budget: float, distill: bool
) -> Callable[[list[TrialResult]], float]:
    """Seconds the search leaves for the final refit, re-estimated from the trials so far."""
    split, n_jobs = p.split, p.ctx.n_jobs

    def reserve(results: list[TrialResult]) -> float:
        done = sorted((r for r in results if r.state == "complete"), key=_loss_key)[:3]
        est = sum(_refit_cost(r, split) for r in done) / min(n_jobs, max(1, len(done)))
        # the ONNX conversion after the refit (fold models have ~train_fraction of the leaves)
        leaves = sum(r.leaves for r in done) / max(split.train_fraction, 0.2)
        est += _export_cost(int(leaves), len(done))
        if distill and p.task != "multiclass":  # the student: ~1 LightGBM refit per class
            lgb_done = [r for r in done if r.family == "lightgbm"]
            est += sum(_refit_cost(r, split) for r in lgb_done[:1]) * max(1, p.n_classes)
        return min(0.3 * budget, 1.3 * est + 0.04 * budget + 0.2)

    return reserve


def _complete(results: list[TrialResult]) -> list[TrialResult]:
    """The complete trials, best first; ``SearchFailed`` when there is none."""
    done = sorted((r for r in results if r.state == "complete"), key=_loss_key)
    if not done:
        errors = {r.error for r in results if r.error}
        raise SearchFailed(
            "no trial finished within the time budget"
            + (f" ({'; '.join(sorted(errors))[:200]})" if errors else "")
            + "; raise time_budget"
        )
    return done


def _refit(
    p: _Problem, members: list[TrialResult], deadline: float
) -> tuple[list[Any], NDArray[np.float64] | None]:
    """The members refit on all rows (their early-stopped rounds scaled up) and the weights.

    An interruptible fit still running at ``deadline`` stops there with what it has grown
    (fewer rounds or trees than planned); the report warns about it.
    """
    ctx = p.ctx = replace(p.ctx, deadline=deadline, keep_partial=True)
    w_full = None
    if p.balanced:
        from sklearn.utils.class_weight import compute_sample_weight

        w_full = np.asarray(compute_sample_weight("balanced", p.y), dtype=np.float64)
    width = min(ctx.n_jobs, len(members))
    # one model on small data runs faster on one thread than on several busy ones
    small = p.X.shape[0] * p.X.shape[1] < 500_000
    refit_ctx = replace(ctx, n_jobs=1) if width > 1 or small else ctx

    def refit(r: TrialResult) -> tuple[Any, bool]:
        fam = FAMILIES[r.family]
        rounds = fam.refit_rounds(_infos(r), p.split.train_fraction)
        est, info, _ = fit_predict(
            fam, r.params, refit_ctx, p.X, p.y_fit, w_full, None, None, rounds=rounds
        )
        return est, info.truncated

    out = parallel_map(refit, members, width)
    for r, (_, truncated) in zip(members, out, strict=True):
        if truncated:
            p.warnings.append(
                f"the refit of trial {r.number} ({r.family}) stopped at the time budget with "
                "fewer rounds or trees than its cross-validation chose; raise time_budget"
            )
    return [est for est, _ in out], w_full


def _distill_outcome(p: _Problem, o: _Outcome, w_full: NDArray[np.float64] | None) -> None:
    """Replace an ensemble by its LightGBM student (binary and regression only)."""
    if p.task == "multiclass":
        p.warnings.append(
            "distillation skipped: multiclass students measured clearly worse than the "
            "ensemble (binary and regression only)"
        )
    elif len(o.members) > 1:
        teacher = list(zip(o.members, o.weights, strict=True))
        student, o.distilled = _distill(
            teacher, o.fitted, o.done, p.X, p.y_fit, p.split, p.ctx, w_full
        )
        o.fitted, o.weights = [student], [1.0]
        o.members = [o.done[0]]  # the student stands in for the ensemble (recorded in the report)


def _distill(
    teacher: list[tuple[TrialResult, float]],
    fitted: list[Any],
    done: list[TrialResult],
    X: NDArray[np.float32],
    y: NDArray[Any],
    split: Split,
    ctx: Context,
    w_full: NDArray[np.float64] | None,
) -> tuple[Any, dict[str, Any]]:
    """One LightGBM trained to reproduce the ensemble.

    Targets are the ensemble's out-of-fold predictions (rows without one - holdout mode - use
    the refit ensemble's). Classification uses soft labels exactly: every row is repeated once
    per class with that class as label and the teacher's probability as sample weight, so the
    weighted log loss equals the cross-entropy against the soft labels.
    """
    t0 = time.monotonic()
    soft = _soft_labels(teacher, fitted, X, split, ctx)
    fam = FAMILIES["lightgbm"]
    # a moderate student: LightGBM's default configuration, with the rounds it early-stopped at
    params = fam.defaults(ctx)[0]
    base = next((r for r in done if r.family == "lightgbm" and r.params == params), None)
    rounds = (fam.refit_rounds(_infos(base), split.train_fraction) if base else None) or 300
    X_fit, y_fit, w_fit = _student_rows(X, y, soft, ctx, w_full)
    student, _, _ = fit_predict(fam, params, ctx, X_fit, y_fit, w_fit, None, None, rounds=rounds)
    pred = student.predict_proba(X) if ctx.is_cls else student.predict(X)
    if ctx.is_cls:
        fidelity = float(np.mean(np.argmax(pred, axis=1) == np.argmax(soft, axis=1)))
    else:
        fidelity = float(np.corrcoef(np.asarray(pred, dtype=np.float64), soft)[0, 1])
    info = {
        "teacher": [{"trial": r.number, "family": r.family, "weight": w} for r, w in teacher],
        "student_params": params,
        "student_rounds": rounds,
        "fidelity": fidelity,  # label agreement (classification) or correlation (regression)
        "mean_abs_gap": float(np.mean(np.abs(np.asarray(pred) - soft))),
        "seconds": round(time.monotonic() - t0, 3),
    }
    return student, info


def _soft_labels(
    teacher: list[tuple[TrialResult, float]],
    fitted: list[Any],
    X: NDArray[np.float32],
    split: Split,
    ctx: Context,
) -> NDArray[np.float64]:
    """The ensemble's out-of-fold predictions; its in-sample ones where a row has none."""
    mask = split.oof_mask
    soft: NDArray[np.float64] = sum(  # type: ignore[assignment]
        w * np.asarray(r.oof, dtype=np.float64) for r, w in teacher if r.oof is not None
    )
    if mask.all():
        return soft
    in_sample = np.zeros_like(soft)
    for est, (_, w) in zip(fitted, teacher, strict=True):
        if ctx.is_cls:
            in_sample += w * np.asarray(est.predict_proba(X), dtype=np.float64)
        else:
            in_sample += w * np.asarray(est.predict(X), dtype=np.float64).ravel()
    return np.where(mask[:, None] if soft.ndim == 2 else mask, soft, in_sample)


def _student_rows(
    X: NDArray[np.float32],
    y: NDArray[Any],
    soft: NDArray[np.float64],
    ctx: Context,
    w_full: NDArray[np.float64] | None,
) -> tuple[NDArray[np.float32], NDArray[Any], NDArray[np.float64] | None]:
    """The student's training rows: soft labels as (row, class) pairs weighted by probability."""
    if not ctx.is_cls:
        return X, soft, w_full
    base_w = np.ones(len(y)) if w_full is None else w_full
    k = ctx.n_classes
    X_fit = np.repeat(X, k, axis=0)
    y_fit = np.tile(np.arange(k), len(y))
    w_fit = (soft * base_w[:, None]).ravel()
    keep = w_fit > 1e-6
    return X_fit[keep], y_fit[keep], w_fit[keep]


# ------------------------------------------------------------------ the report and model
def _build_report(
    p: _Problem, o: _Outcome, budget: float, t_start: float, wall_start: float, seed: int
) -> dict[str, Any]:
    """The model card: data, validation, best trial, ensemble, trial counts and timings."""
    best = o.done[0]
    versions = _versions()
    return {
        "task": p.task,
        "task_inference": p.inference.report(),
        "metric": p.metric.name,
        "greater_is_better": p.metric.greater_is_better,
        "data": _data_report(p),
        "columns": p.pre.report(),
        "warnings": p.warnings,
        "validation": {
            "kind": p.split.kind,
            "folds": len(p.split.folds),
            "rows_scored": int(p.split.oof_mask.sum()),
        },
        "best_trial": {
            "trial": best.number,
            "family": best.family,
            "params": best.params,
            "cv_score": best.score,
            "cv_score_std": best.score_std,
        },
        "cv_score": best.score,
        "cv_score_std": best.score_std,
        "holdout_score": _holdout_score(p, o),
        "ensemble": {
            "members": [
                {"trial": r.number, "family": r.family, "weight": w}
                for r, w in zip(o.members, o.weights, strict=True)
            ],
            "oof_score": _ensemble_score(p, o.ens_loss),
        },
        "pipeline": {
            "preprocessing": "TabularPreprocessor (impute/encode/datetime parts)",
            "model": "weighted ensemble"
            if len(o.members) > 1
            else ("lightgbm student" if o.distilled else best.family),
            "families": o.families,
        },
        "distillation": o.distilled,
        "trials": {"total": len(o.results), **{s: _count(o.results, s) for s in _STATES}},
        "timings": {
            **{name: round(s, 3) for name, s in o.seconds.items()},
            "total_s": round(time.monotonic() - t_start, 3),
            "time_budget_s": budget,
        },
        "seed": seed,
        "n_jobs": p.ctx.n_jobs,
        "started_at": wall_start,
        "versions": versions,
    }


# the report's trial counts, in this order
_STATES: tuple[TrialState, ...] = (
    "complete",
    "pruned",
    "failed",
    "timeout",
    "cancelled",
    "skipped",
)


def _count(results: list[TrialResult], state: TrialState) -> int:
    return sum(r.state == state for r in results)


def _data_report(p: _Problem) -> dict[str, Any]:
    return {
        "rows": p.n_total,
        "rows_used": int(len(p.y)),
        "rows_dropped_missing_target": p.n_dropped,
        "columns": p.n_columns,
        "features_out": int(p.X.shape[1]),
        "classes": p.class_labels(),
        "class_counts": None if p.classes is None else np.bincount(p.y).tolist(),
    }


def _holdout_score(p: _Problem, o: _Outcome) -> float | None:
    """The final members' score on the held-out rows (holdout validation only): the
    ensemble's when it was kept, else the best trial's."""
    if p.split.kind != "holdout":
        return None
    ens = _ensemble_score(p, o.ens_loss) if len(o.members) > 1 else None
    return ens if ens is not None else o.done[0].score


def _ensemble_score(p: _Problem, ens_loss: float | None) -> float | None:
    """The ensemble's out-of-fold score in the metric's own direction and units."""
    if ens_loss is None:
        return None
    ens_loss *= p.score_scale
    return -ens_loss if p.metric.greater_is_better else ens_loss


def _trained_model(
    p: _Problem, o: _Outcome, budget: float, t_start: float, wall_start: float, seed: int
) -> tuple[TrainedModel, dict[str, Any]]:
    """The model and its report (the same dict: the export's timings are added later)."""
    importance = _importance(o.fitted, o.weights, p.pre)
    leaderboard = [r.row() for r in sorted(o.results, key=_board_key)]
    report = _build_report(p, o, budget, t_start, wall_start, seed)
    model = TrainedModel(
        task=p.task,
        metric=p.metric.name,
        preprocessor=p.pre,
        members=o.fitted,
        weights=o.weights,
        families=o.families,
        classes=p.class_labels(),
        y_mean=p.y_mean,
        y_std=p.y_std,
        leaderboard=leaderboard,
        report=report,
        feature_importance=importance,
    )
    return model, report


def _export_cost(leaves: int, members: int) -> float:
    """Expected seconds to convert ``members`` models with ``leaves`` tree leaves to ONNX."""
    return members * EXPORT_S_PER_MEMBER + leaves * EXPORT_S_PER_LEAF


def _export_in_budget(model: TrainedModel, p: _Problem, o: _Outcome, deadline: float) -> None:
    """Convert the model to ONNX now (``save`` reuses it) when that fits before ``deadline``;
    else give it no ONNX form, with a warning: it serves natively.

    Tree ensembles convert at about 20-30 us per leaf here, so a forest grown on many rows
    (millions of leaves) can take far longer than its own fit.
    """
    fams = [FAMILIES[f] for f in o.families]
    if not all(f.onnx for f in fams):
        return  # no ONNX form anyway (a member does not convert)
    leaves = sum(f.leaves(est, p.ctx) for f, est in zip(fams, o.fitted, strict=True))
    cost = _export_cost(leaves, len(fams))
    if cost > deadline - time.monotonic():
        msg = (
            f"no ONNX export: converting the model ({leaves} tree leaves) would take about "
            f"{cost:.1f} s, past the time budget; it serves natively (raise time_budget)"
        )
        model.skip_onnx(msg)
        p.warnings.append(msg)
        log.warning(msg)
        return
    try:
        model.to_onnx()
        model.to_onnx_raw()
    except Exception:  # save() converts again and raises it there, as without a budget
        log.warning("the ONNX conversion failed; save will retry", exc_info=True)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _loss_key(r: TrialResult) -> float:
    return r.loss if r.loss is not None else math.inf


def _board_key(r: TrialResult) -> tuple[int, float, int]:
    order: dict[TrialState, int] = {
        "complete": 0,
        "pruned": 1,
        "timeout": 2,
        "cancelled": 3,
        "failed": 4,
        "skipped": 5,
    }
    return (order.get(r.state, 6), _loss_key(r), r.number)


def _infos(r: TrialResult) -> list[Any]:
    from aiaas.automl.families import FitInfo

    return [FitInfo(rounds=x) for x in r.rounds]


def _refit_cost(r: TrialResult, split: Split) -> float:
    """Expected seconds to refit a trial's configuration on all rows."""
    return r.fold_fit_time / max(split.train_fraction, 0.2) * 1.1


def _select(
    done: list[TrialResult],
    y: NDArray[Any],
    split: Split,
    metric: Metric,
    allow: bool,
    deadline: float,
    max_trials: int | None,
    n_jobs: int,
) -> tuple[list[TrialResult], list[float], float | None]:
    """The final members: greedy ensemble over the best trials when it beats the best one."""
    best = done[0]
    mask = split.oof_mask
    if not allow or len(done) < 2 or best.oof is None:
        return [best], [1.0], None
    # members that cannot export to ONNX only join when they are the best trial
    pool = [r for r in done if r.oof is not None and (r is best or FAMILIES[r.family].onnx)][:20]
    while True:
        preds = [np.asarray(r.oof, dtype=np.float64)[mask] for r in pool]
        weights, ens_loss = greedy_ensemble(preds, y[mask], metric)
        chosen = [pool[i] for i in weights]
        single = loss(metric, y[mask], preds[0])
        if ens_loss >= single - 1e-9 or len(chosen) < 2:
            return [best], [1.0], None
        left = deadline - time.monotonic()
        cost = sum(_refit_cost(r, split) for r in chosen) / max(1, min(n_jobs, len(chosen)))
        if max_trials is not None or cost <= left or len(pool) <= 2:
            return chosen, [weights[i] for i in weights], ens_loss
        # too slow to refit them all: drop the costliest extra member and select again
        costly = max((r for r in chosen if r is not best), key=lambda r: _refit_cost(r, split))
        pool = [r for r in pool if r is not costly]


def _importance(
    fitted: list[Any], weights: list[float], pre: TabularPreprocessor
) -> dict[str, float]:
    """Importance per input column from the tree members (gain/impurity), weight-averaged."""
    n = len(pre.feature_names_out_)
    total = np.zeros(n)
    used = 0.0
    for est, w in zip(fitted, weights, strict=True):
        model = est.steps[-1][1] if hasattr(est, "steps") else est
        imp = getattr(model, "feature_importances_", None)
        if imp is None or len(imp) != n:
            continue
        imp = np.asarray(imp, dtype=np.float64)
        if imp.sum() > 0:
            total += w * imp / imp.sum()
            used += w
    if used == 0:
        return {}
    per_col: dict[str, float] = {}
    for src, v in zip(pre.source_of_feature_, total / used, strict=True):
        per_col[src] = per_col.get(src, 0.0) + float(v)
    return dict(sorted(per_col.items(), key=lambda kv: -kv[1]))


def _versions() -> dict[str, str]:
    """The library versions, from the installed metadata (importing xgboost costs time
    when no trial used it, and this runs after the budget's refit)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("numpy", "pandas", "scikit-learn", "lightgbm", "xgboost", "optuna"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            out[name] = "unknown"
    return out
