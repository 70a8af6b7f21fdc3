"""``fit``: from a table and a target column to a :class:`TrainedModel`.

Time accounting: the search runs until ``time_budget`` minus a reserve for refitting the
final members on all rows (estimated from the trials' measured fit times); ensemble selection
then only uses members whose refit still fits the time left, so the whole call ends within
the budget plus a small margin.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from aiaas.automl.ensemble import greedy_ensemble
from aiaas.automl.errors import InvalidConfig, InvalidData, InvalidTarget, SearchFailed
from aiaas.automl.families import FAMILIES, Context
from aiaas.automl.metrics import get_metric, loss
from aiaas.automl.model import TrainedModel
from aiaas.automl.preprocess import MIN_ROWS, TabularPreprocessor, detect_leakage, prepare_target
from aiaas.automl.search import (
    Split,
    TrialResult,
    fit_predict,
    make_splits,
    parallel_map,
    run_search,
)

__all__ = ["fit"]

log = logging.getLogger(__name__)

TASKS = ("auto", "binary", "multiclass", "regression")


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
) -> TrainedModel:
    """Search models for ``target`` within ``time_budget`` seconds and return the best.

    Args:
        data: the training table (pandas DataFrame, or a mapping of columns).
        target: name of the column to predict.
        task: ``auto`` (inferred), ``binary``, ``multiclass`` or ``regression``.
        metric: roc_auc, log_loss, accuracy, balanced_accuracy, f1, rmse, mae or r2;
            default roc_auc (binary), log_loss (multiclass), rmse (regression).
        time_budget: seconds for the whole call (search, ensembling and refit).
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

    Raises:
        InvalidData, InvalidTarget, InvalidConfig, SearchFailed (all ``AutoMLError``).
    """
    t_start = time.monotonic()
    wall_start = time.time()
    if task not in TASKS:
        raise InvalidConfig(f"task must be one of {', '.join(TASKS)}")
    if (
        not isinstance(time_budget, int | float)
        or not math.isfinite(time_budget)
        or time_budget <= 0
    ):
        raise InvalidConfig("time_budget must be a positive number of seconds")
    if max_trials is not None and max_trials < 1:
        raise InvalidConfig("max_trials must be at least 1")
    n_jobs = default_n_jobs() if n_jobs is None or n_jobs <= 0 else int(n_jobs)

    frame = _as_frame(data)
    if target not in frame.columns:
        raise InvalidTarget(f"target column {target!r} is not in the data")
    if frame.columns.duplicated().any():
        raise InvalidData("column names must be unique")
    n_total = len(frame)
    task, y, classes, keep = prepare_target(frame[target], task)
    n_dropped = int((~keep).sum())
    features = frame.loc[keep].drop(columns=[target]).reset_index(drop=True)
    features.columns = [str(c) for c in features.columns]
    if len(features) < MIN_ROWS:
        raise InvalidData(f"need at least {MIN_ROWS} rows with a target; got {len(features)}")
    if features.shape[1] == 0:
        raise InvalidData("the data has no feature columns besides the target")
    metric_obj = get_metric(metric, task)
    warnings_out: list[str] = []
    if n_dropped:
        warnings_out.append(f"dropped {n_dropped} row(s) with a missing target")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = TabularPreprocessor().fit(features)
        X = pre.transform(features)
    used = [s["name"] for s in pre.specs_ if s["kind"] != "dropped"]
    leaks = detect_leakage(features, y, task, used)
    for name in leaks:
        msg = f"column {name!r} is (nearly) identical to the target: possible leakage"
        warnings_out.append(msg)
        log.warning(msg)
    for name, reason in pre.report()["dropped"].items():
        warnings_out.append(f"dropped column {name!r}: {reason}")

    n_classes = 0 if classes is None else len(classes)
    y_mean, y_std = 0.0, 1.0
    y_fit: NDArray[Any] = y
    if task == "regression":
        y_mean = float(np.mean(y))
        y_std = float(np.std(y)) or 1.0
        y_fit = (y - y_mean) / y_std
    ctx = Context(
        task=task,
        n_classes=n_classes,
        n_rows=len(y),
        n_features=X.shape[1],
        categorical=list(pre.categorical_features_),
        highcard=list(pre.highcard_features_),
        lowcard_ints=list(pre.lowcard_int_features_),
        n_jobs=n_jobs,
        seed=seed,
    )
    balanced = False
    if task != "regression" and metric_obj.name in ("balanced_accuracy", "f1"):
        counts = np.bincount(y, minlength=n_classes)
        balanced = bool(counts.max() > 1.5 * max(counts.min(), 1))
    split = make_splits(y, task, cv, seed)
    # rmse/mae computed on the standardised target are reported in the target's units
    score_scale = y_std if metric_obj.name in ("rmse", "mae") else 1.0

    def reserve(results: list[TrialResult]) -> float:
        done = sorted((r for r in results if r.state == "complete"), key=_loss_key)[:3]
        est = sum(_refit_cost(r, split) for r in done) / min(n_jobs, max(1, len(done)))
        if distill and task != "multiclass":  # the student: ~1 LightGBM refit per class
            lgb_done = [r for r in done if r.family == "lightgbm"]
            est += sum(_refit_cost(r, split) for r in lgb_done[:1]) * max(1, n_classes)
        return min(0.3 * time_budget, 1.3 * est + 0.04 * time_budget + 0.2)

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n_jobs):
        t_search = time.monotonic()
        results = run_search(
            X,
            y_fit,
            ctx,
            metric_obj,
            split,
            budget=time_budget,
            t_start=t_start,
            max_trials=max_trials,
            families=families,
            sampler=sampler,
            balanced=balanced,
            callbacks=callbacks,
            reserve_fn=reserve,
            score_scale=score_scale,
        )
        search_s = time.monotonic() - t_search
        done = sorted((r for r in results if r.state == "complete"), key=_loss_key)
        if not done:
            errors = {r.error for r in results if r.error}
            raise SearchFailed(
                "no trial finished within the time budget"
                + (f" ({'; '.join(sorted(errors))[:200]})" if errors else "")
                + "; raise time_budget"
            )
        t_ens = time.monotonic()
        members, weights, ens_loss = _select(
            done, y_fit, split, metric_obj, ensemble, t_start + time_budget, max_trials, n_jobs
        )
        ens_s = time.monotonic() - t_ens
        t_refit = time.monotonic()
        ctx.deadline = math.inf
        w_full = None
        if balanced:
            from sklearn.utils.class_weight import compute_sample_weight

            w_full = np.asarray(compute_sample_weight("balanced", y), dtype=np.float64)
        width = min(n_jobs, len(members))
        # one model on small data runs faster on one thread than on several busy ones
        small = X.shape[0] * X.shape[1] < 500_000
        refit_ctx = replace(ctx, n_jobs=1) if width > 1 or small else ctx

        def refit(r: TrialResult) -> Any:
            fam = FAMILIES[r.family]
            rounds = fam.refit_rounds(_infos(r), split.train_fraction)
            est, _, _ = fit_predict(
                fam, r.params, refit_ctx, X, y_fit, w_full, None, None, rounds=rounds
            )
            return est

        fitted = parallel_map(refit, members, width)
        refit_s = time.monotonic() - t_refit
        distilled: dict[str, Any] | None = None
        if distill and task == "multiclass":
            warnings_out.append(
                "distillation skipped: multiclass students measured clearly worse than the "
                "ensemble (binary and regression only)"
            )
        elif distill and len(members) > 1:
            teacher = [(r, w) for r, w in zip(members, weights, strict=True)]
            student, distilled = _distill(teacher, fitted, done, X, y_fit, split, ctx, w_full)
            fitted, weights = [student], [1.0]

    best = done[0]
    oof_mask = split.oof_mask
    ens_score = None
    if ens_loss is not None:
        ens_loss *= score_scale
        ens_score = -ens_loss if metric_obj.greater_is_better else ens_loss
    if distilled is not None:
        members = [best]  # the student stands in for the ensemble (recorded in the report)
    importance = _importance(fitted, weights, members, pre)
    leaderboard = [r.row() for r in sorted(results, key=_board_key)]
    report: dict[str, Any] = {
        "task": task,
        "metric": metric_obj.name,
        "greater_is_better": metric_obj.greater_is_better,
        "data": {
            "rows": n_total,
            "rows_used": int(len(y)),
            "rows_dropped_missing_target": n_dropped,
            "columns": int(features.shape[1]),
            "features_out": int(X.shape[1]),
            "classes": None if classes is None else [_plain(c) for c in classes],
            "class_counts": None if classes is None else np.bincount(y).tolist(),
        },
        "columns": pre.report(),
        "warnings": warnings_out,
        "validation": {
            "kind": split.kind,
            "folds": len(split.folds),
            "rows_scored": int(oof_mask.sum()),
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
        "holdout_score": best.score if split.kind == "holdout" else None,
        "ensemble": {
            "members": [
                {"trial": r.number, "family": r.family, "weight": w}
                for r, w in zip(members, weights, strict=True)
            ],
            "oof_score": ens_score,
        },
        "pipeline": {
            "preprocessing": "TabularPreprocessor (impute/encode/datetime parts)",
            "model": "weighted ensemble"
            if len(members) > 1
            else ("lightgbm student" if distilled else best.family),
            "families": ["lightgbm"] if distilled else [r.family for r in members],
        },
        "distillation": distilled,
        "trials": {
            "total": len(results),
            "complete": sum(r.state == "complete" for r in results),
            "pruned": sum(r.state == "pruned" for r in results),
            "failed": sum(r.state == "failed" for r in results),
            "timeout": sum(r.state == "timeout" for r in results),
            "skipped": sum(r.state == "skipped" for r in results),
        },
        "timings": {
            "search_s": round(search_s, 3),
            "ensemble_s": round(ens_s, 3),
            "refit_s": round(refit_s, 3),
            "total_s": round(time.monotonic() - t_start, 3),
            "time_budget_s": time_budget,
        },
        "seed": seed,
        "n_jobs": n_jobs,
        "started_at": wall_start,
        "versions": _versions(),
    }
    return TrainedModel(
        task=task,
        metric=metric_obj.name,
        preprocessor=pre,
        members=fitted,
        weights=weights,
        families=["lightgbm"] if distilled else [r.family for r in members],
        classes=None if classes is None else [_plain(c) for c in classes],
        y_mean=y_mean,
        y_std=y_std,
        leaderboard=leaderboard,
        report=report,
        feature_importance=importance,
    )


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
    mask = split.oof_mask
    soft: NDArray[np.float64] = sum(  # type: ignore[assignment]
        w * np.asarray(r.oof, dtype=np.float64) for r, w in teacher if r.oof is not None
    )
    in_sample = np.zeros_like(soft)
    if not mask.all():
        for est, (_, w) in zip(fitted, teacher, strict=True):
            if ctx.is_cls:
                in_sample += w * np.asarray(est.predict_proba(X), dtype=np.float64)
            else:
                in_sample += w * np.asarray(est.predict(X), dtype=np.float64).ravel()
        soft = np.where(mask[:, None] if soft.ndim == 2 else mask, soft, in_sample)
    fam = FAMILIES["lightgbm"]
    # a moderate student: LightGBM's default configuration, with the rounds it early-stopped at
    params = fam.defaults(ctx)[0]
    base = next((r for r in done if r.family == "lightgbm" and r.params == params), None)
    rounds = (fam.refit_rounds(_infos(base), split.train_fraction) if base else None) or 300
    base_w = np.ones(len(y)) if w_full is None else w_full
    X_fit: NDArray[np.float32]
    y_fit: NDArray[Any]
    w_fit: NDArray[np.float64] | None
    if ctx.is_cls:
        k = ctx.n_classes
        X_fit = np.repeat(X, k, axis=0)
        y_fit = np.tile(np.arange(k), len(y))
        w_fit = (soft * base_w[:, None]).ravel()
        keep = w_fit > 1e-6
        X_fit, y_fit, w_fit = X_fit[keep], y_fit[keep], w_fit[keep]
    else:
        X_fit, y_fit, w_fit = X, soft, w_full
    student, _, _ = fit_predict(fam, params, ctx, X_fit, y_fit, w_fit, None, None, rounds=rounds)
    pred = student.predict_proba(X) if ctx.is_cls else student.predict(X)
    if ctx.is_cls:
        fidelity = float(np.mean(np.argmax(pred, axis=1) == np.argmax(soft, axis=1)))
        gap = float(np.mean(np.abs(np.asarray(pred) - soft)))
    else:
        fidelity = float(np.corrcoef(np.asarray(pred, dtype=np.float64), soft)[0, 1])
        gap = float(np.mean(np.abs(np.asarray(pred) - soft)))
    info = {
        "teacher": [{"trial": r.number, "family": r.family, "weight": w} for r, w in teacher],
        "student_params": params,
        "student_rounds": rounds,
        "fidelity": fidelity,  # label agreement (classification) or correlation (regression)
        "mean_abs_gap": gap,
        "seconds": round(time.monotonic() - t0, 3),
    }
    return student, info


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _loss_key(r: TrialResult) -> float:
    return r.loss if r.loss is not None else math.inf


def _board_key(r: TrialResult) -> tuple[int, float, int]:
    order = {"complete": 0, "pruned": 1, "timeout": 2, "failed": 3, "skipped": 4}
    return (order.get(r.state, 5), _loss_key(r), r.number)


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
    metric: Any,
    allow: bool,
    deadline: float,
    max_trials: int | None,
    n_jobs: int,
) -> tuple[list[TrialResult], list[float], float | None]:
    """The final members: greedy ensemble over the best trials when it beats the best one."""
    best = done[0]
    mask = split.oof_mask
    if not allow or len(done) < 2:
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
    fitted: list[Any], weights: list[float], members: list[TrialResult], pre: TabularPreprocessor
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
    import lightgbm
    import optuna
    import sklearn
    import xgboost

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
        "xgboost": xgboost.__version__,
        "optuna": optuna.__version__,
    }
