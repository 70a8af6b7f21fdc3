"""The search: Optuna ask/tell over the conditional space, CV, pruning, time accounting.

Every trial is a checkpoint (``study.ask`` → evaluate fold by fold → ``study.tell``), so the
loop can stop between trials for the budget, ``max_trials`` or a callback. Strong cheap
defaults are enqueued first; TPE (``multivariate``, ``group``) takes over from there. A trial
whose running fold score falls in the worst quarter is pruned; the boosting families also
stop early on the validation fold. Families not yet measured are skipped while their expected
cost exceeds what is left of the search time.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from aiaas.automl.errors import InvalidConfig
from aiaas.automl.families import FAMILIES, Context, Family, FitInfo, TrialTimeout
from aiaas.automl.metrics import Metric, loss, score

__all__ = ["Split", "TrialResult", "fit_predict", "make_splits", "parallel_map", "run_search"]

log = logging.getLogger(__name__)

# relative cost of a family's first trial versus LightGBM's default (a prior; measured after)
_COST_PRIOR = {
    "lightgbm": 1.0,
    "xgboost": 1.5,
    "histgb": 6.0,
    "extra_trees": 2.0,
    "random_forest": 4.0,
    "linear": 0.5,
    "knn": 1.0,
    "mlp": 5.0,
}
# the order in which the families' default configurations are tried (cheap and strong first)
_DEFAULT_ORDER = [
    ("lightgbm", 0),
    ("linear", 0),
    ("xgboost", 0),
    ("lightgbm", 2),
    ("extra_trees", 0),
    ("lightgbm", 1),
    ("random_forest", 0),
    ("knn", 0),
    ("mlp", 0),
]


@dataclass
class Split:
    """Train/validation index pairs and the share of rows each model trains on."""

    folds: list[tuple[NDArray[np.intp], NDArray[np.intp]]]
    kind: str  # "kfold" | "holdout"
    train_fraction: float
    oof_mask: NDArray[np.bool_]


@dataclass
class TrialResult:
    """One trial of the search (one leaderboard row)."""

    number: int
    family: str
    params: dict[str, Any]
    state: str  # complete | pruned | failed | skipped | timeout
    score: float | None = None
    score_std: float | None = None
    loss: float | None = None
    fit_time: float = 0.0
    fold_fit_time: float = 0.0
    rounds: list[int] = field(default_factory=list)
    error: str | None = None
    oof: NDArray[np.float32] | None = field(default=None, repr=False)

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            "family": self.family,
            "params": dict(self.params),
            "state": self.state,
            "score": self.score,
            "score_std": self.score_std,
            "fit_time_s": round(self.fit_time, 3),
            "rounds": list(self.rounds) or None,
            "error": self.error,
        }


def make_splits(y: NDArray[Any], task: str, cv: int | float | None, seed: int) -> Split:
    """k-fold (stratified for classification) for small data, holdout for large."""
    n = len(y)
    if cv is None:
        cv = 5 if n <= 10_000 else 3 if n <= 30_000 else 0.2
    strat = task != "regression"
    idx = np.arange(n)
    mask = np.zeros(n, dtype=np.bool_)
    if isinstance(cv, float) and not float(cv).is_integer():
        if not 0.0 < cv < 1.0:
            raise InvalidConfig("cv as a float is the holdout fraction, in (0, 1)")
        stratify = y if strat and np.bincount(y).min() >= 2 else None
        tr, va = train_test_split(idx, test_size=cv, random_state=seed, stratify=stratify)
        mask[va] = True
        return Split([(np.sort(tr), np.sort(va))], "holdout", 1.0 - cv, mask)
    k = int(cv)
    if not 2 <= k <= 20:
        raise InvalidConfig("cv must be a number of folds in 2..20 or a holdout fraction")
    k = min(k, n // 2)
    splitter: Any
    if strat and np.bincount(y).max() >= k:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has only N members"
        folds = [(tr, va) for tr, va in splitter.split(idx, y if strat else None)]
    mask[:] = True
    return Split(folds, "kfold", (k - 1) / k, mask)


def _predict(
    est: Any, X: NDArray[np.float32], ctx: Context, present: NDArray[Any] | None
) -> NDArray[np.float64]:
    if not ctx.is_cls:
        return np.asarray(est.predict(X), dtype=np.float64).ravel()
    p = np.asarray(est.predict_proba(X), dtype=np.float64)
    if present is not None and present.size < ctx.n_classes:
        full = np.zeros((p.shape[0], ctx.n_classes))
        full[:, present] = p
        return full
    return p


def fit_predict(
    fam: Family,
    params: dict[str, Any],
    ctx: Context,
    X_tr: NDArray[np.float32],
    y_tr: NDArray[Any],
    w: NDArray[np.float64] | None,
    X_va: NDArray[np.float32] | None,
    y_va: NDArray[Any] | None,
    *,
    rounds: int | None = None,
) -> tuple[Any, FitInfo, NDArray[np.float64] | None]:
    """Build, fit (early stopping on the validation rows) and predict the validation rows."""
    present = None
    y_fit, y_es, X_es = y_tr, y_va, X_va
    if ctx.is_cls:
        present = np.unique(y_tr)
        if present.size < ctx.n_classes:
            # a rare class missing from this fold: train on the classes present
            y_fit = np.searchsorted(present, y_tr)
            if X_va is not None and y_va is not None:
                keep = np.isin(y_va, present)
                X_es, y_es = X_va[keep], np.searchsorted(present, y_va[keep])
    est = fam.build(params, ctx, rounds=rounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = fam.fit(est, X_tr, y_fit, w, X_es, y_es, ctx)
        pred = _predict(est, X_va, ctx, present) if X_va is not None else None
    return est, info, pred


@lru_cache(maxsize=4)
def _pool(width: int) -> ThreadPoolExecutor:
    """A long-lived thread pool for running folds (or refits) side by side."""
    return ThreadPoolExecutor(max_workers=width, thread_name_prefix="aiaas-automl")


def _weights(y: NDArray[Any], balanced: bool) -> NDArray[np.float64] | None:
    if not balanced:
        return None
    return np.asarray(compute_sample_weight("balanced", y), dtype=np.float64)


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], width: int) -> list[Any]:
    """``map`` over ``items`` on ``width`` threads (BLAS/OpenMP pinned to one thread each)."""
    if width <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with threadpool_limits(limits=1):
        return list(_pool(width).map(fn, items))


def run_search(
    X: NDArray[np.float32],
    y: NDArray[Any],
    ctx: Context,
    metric: Metric,
    split: Split,
    *,
    budget: float,
    t_start: float,
    max_trials: int | None,
    families: Sequence[str] | None,
    sampler: str,
    balanced: bool,
    callbacks: Sequence[Callable[[TrialResult], Any]],
    reserve_fn: Callable[[list[TrialResult]], float],
    score_scale: float = 1.0,
) -> list[TrialResult]:
    """Run trials until the budget (minus the refit reserve), ``max_trials`` or a callback."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [n for n in (families or list(FAMILIES)) if n in FAMILIES]
    unknown = set(families or ()) - set(FAMILIES)
    if unknown:
        raise InvalidConfig(
            f"unknown model families: {sorted(unknown)}; choose from {list(FAMILIES)}"
        )
    names = [n for n in names if FAMILIES[n].available(ctx)]
    if not names:
        raise InvalidConfig("no model family is available for this data")

    defaults: list[tuple[str, dict[str, Any]]] = []
    for fam_name, i in _DEFAULT_ORDER:
        if fam_name in names:
            confs = FAMILIES[fam_name].defaults(ctx)
            if i < len(confs):
                defaults.append((fam_name, confs[i]))
    if sampler == "grid":
        defaults += _grid(names, ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning for group/multivariate
        if sampler == "tpe":
            samp: Any = optuna.samplers.TPESampler(
                seed=ctx.seed, multivariate=True, group=True, n_startup_trials=len(defaults)
            )
        elif sampler in ("random", "grid"):
            samp = optuna.samplers.RandomSampler(seed=ctx.seed)
        else:
            raise InvalidConfig("sampler must be 'tpe', 'random' or 'grid'")
        pruner = optuna.pruners.PercentilePruner(
            75.0, n_startup_trials=max(5, len(defaults)), n_warmup_steps=0
        )
        study = optuna.create_study(direction="minimize", sampler=samp, pruner=pruner)
        for fam_name, conf in defaults:
            study.enqueue_trial(
                {"family": fam_name, **{f"{fam_name}:{k}": v for k, v in conf.items()}},
                skip_if_exists=True,
            )

    results: list[TrialResult] = []
    family_time: dict[str, list[float]] = {}
    skipped_in_row = 0
    deadline = t_start + budget
    n_grid = len(defaults)
    while True:
        if (
            max_trials is not None
            and len([r for r in results if r.state != "skipped"]) >= max_trials
        ):
            break
        if sampler == "grid" and len(results) >= n_grid:
            break
        search_end = deadline - reserve_fn(results)
        now = time.monotonic()
        if now >= search_end and any(r.state == "complete" for r in results):
            break
        if now >= deadline:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask()
            fam_name = trial.suggest_categorical("family", names)
            fam = FAMILIES[fam_name]
            params = fam.suggest(trial, ctx)
        # cost-aware: skip a configuration we cannot afford now (never the first trials)
        expected = _expected_cost(fam_name, family_time, split)
        left = search_end - now
        if results and expected is not None and expected > max(left, 0.0) and max_trials is None:
            # told as pruned (not failed) so TPE learns to avoid what we cannot afford
            study.tell(trial, state=TrialState.PRUNED)
            results.append(
                TrialResult(
                    trial.number,
                    fam_name,
                    params,
                    "skipped",
                    error="expected cost exceeds the time left",
                )
            )
            skipped_in_row += 1
            cheapest = min(
                (c for n in names if (c := _expected_cost(n, family_time, split)) is not None),
                default=0.0,
            )
            if skipped_in_row >= 60 or cheapest > left:
                break
            continue
        skipped_in_row = 0
        ctx.deadline = search_end if max_trials is None else math.inf
        res = _evaluate(trial, fam, params, ctx, X, y, split, metric, balanced, score_scale)
        family_time.setdefault(fam_name, []).append(res.fit_time)
        if res.state == "complete":
            study.tell(trial, res.loss)
        elif res.state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, state=TrialState.FAIL)
        results.append(res)
        _trim_oof(results)
        stop = False
        for cb in callbacks:
            if cb(res) is False:
                stop = True
        if stop:
            break
    return results


def _expected_cost(name: str, family_time: dict[str, list[float]], split: Split) -> float | None:
    if name in family_time:
        return float(np.median(family_time[name]))
    if name == "random_forest" and "extra_trees" in family_time:
        # same trees, but every split is searched: measured to cost ~3x extra trees
        return float(np.min(family_time["extra_trees"])) * 3.0
    if "lightgbm" in family_time:
        # relative to LightGBM's cheapest (default) configuration
        return float(np.min(family_time["lightgbm"])) * _COST_PRIOR.get(name, 2.0)
    return None


def _trim_oof(results: list[TrialResult], keep: int = 40) -> None:
    """Keep out-of-fold predictions only for the best trials (memory)."""
    done = [r for r in results if r.oof is not None and r.loss is not None]
    if len(done) <= keep:
        return
    done.sort(key=lambda r: r.loss if r.loss is not None else math.inf)
    for r in done[keep:]:
        r.oof = None


def _evaluate(
    trial: Any,
    fam: Family,
    params: dict[str, Any],
    ctx: Context,
    X: NDArray[np.float32],
    y: NDArray[Any],
    split: Split,
    metric: Metric,
    balanced: bool,
    score_scale: float = 1.0,
) -> TrialResult:
    res = TrialResult(trial.number, fam.name, params, "complete")
    n = len(y)
    oof = np.zeros((n, ctx.n_classes)) if ctx.is_cls else np.zeros(n)
    fold_scores: list[float] = []
    fold_losses: list[float] = []
    t0 = time.monotonic()
    # small data: folds run side by side, one thread each (no OpenMP spinning, no idle core);
    # a single holdout fold: one model with every thread
    width = ctx.n_jobs if split.kind == "kfold" and ctx.n_jobs > 1 else 1
    fold_ctx = replace(ctx, n_jobs=1) if width > 1 else ctx

    def run_fold(fold: tuple[NDArray[np.intp], NDArray[np.intp]]) -> tuple[Any, Any]:
        tr, va = fold
        w = _weights(y[tr], balanced)
        _, info, pred = fit_predict(fam, params, fold_ctx, X[tr], y[tr], w, X[va], y[va])
        return info, pred

    folds = split.folds
    try:
        for start in range(0, len(folds), width):
            batch = folds[start : start + width]
            if width > 1:
                with threadpool_limits(limits=1):
                    outs = list(_pool(width).map(run_fold, batch))
            else:
                outs = [run_fold(f) for f in batch]
            for (_, va), (info, pred) in zip(batch, outs, strict=True):
                oof[va] = pred
                if info.rounds:
                    res.rounds.append(info.rounds)
                # scores in the target's own units (regression targets are standardised)
                fold_scores.append(score(metric, y[va], pred) * score_scale)
                fold_losses.append(loss(metric, y[va], pred) * score_scale)
            step = start + len(batch) - 1
            trial.report(float(np.mean(fold_losses)), step)
            if step < len(folds) - 1 and trial.should_prune():
                res.state = "pruned"
                break
    except TrialTimeout:
        res.state = "timeout"
        res.error = "stopped at the time budget"
    except Exception as exc:  # a failing configuration must not end the search
        res.state = "failed"
        res.error = f"{type(exc).__name__}: {str(exc)[:200]}"
        log.debug("trial %s failed", trial.number, exc_info=True)
    res.fit_time = time.monotonic() - t0
    # one fold's fit on one thread (folds ran ``width`` at a time)
    res.fold_fit_time = res.fit_time * width / max(1, len(fold_losses))
    if fold_scores:
        res.score = float(np.mean(fold_scores))
        res.score_std = float(np.std(fold_scores))
    if res.state == "complete":
        res.loss = float(np.mean(fold_losses))
        res.oof = oof.astype(np.float32)
    return res


def _grid(names: list[str], ctx: Context) -> list[tuple[str, dict[str, Any]]]:
    """A small fixed grid per family (the ``sampler="grid"`` option)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        base = FAMILIES[name].defaults(ctx)[0]
        if name in ("lightgbm",):
            for lr in (0.03, 0.1):
                for leaves in (15, 63):
                    out.append((name, {**base, "learning_rate": lr, "num_leaves": leaves}))
        elif name == "xgboost":
            for depth in (4, 8):
                out.append((name, {**base, "max_depth": depth}))
        elif name in ("extra_trees", "random_forest"):
            for mf in (0.3, 0.7):
                out.append((name, {**base, "max_features": mf}))
        elif name == "linear":
            key = "C" if ctx.is_cls else "alpha"
            for v in (0.01, 0.1, 10.0):
                out.append((name, {**base, key: v}))
        elif name == "knn":
            for k in (5, 30):
                out.append((name, {**base, "n_neighbors": k}))
    return out
