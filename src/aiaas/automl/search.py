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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from aiaas.automl.errors import InvalidConfig
from aiaas.automl.families import FAMILIES, Context, Family, FitInfo, Params, TrialTimeout
from aiaas.automl.metrics import Metric, loss, score
from aiaas.automl.types import Task

if TYPE_CHECKING:  # executors.py imports this module; the loop imports it when it runs
    from aiaas.automl.executors import TrialExecutor

__all__ = [
    "Split",
    "SplitKind",
    "TrialResult",
    "TrialState",
    "fit_predict",
    "make_splits",
    "parallel_map",
    "run_search",
]

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


# a refit on all rows costs about one fold's fit / train_fraction, times this margin
_REFIT_MARGIN = 1.1

Fold = tuple[NDArray[np.intp], NDArray[np.intp]]  # (train rows, validation rows)
SplitKind = Literal["kfold", "holdout"]
# how a trial ended: "skipped" was never run (it could not be afforded in the time left),
# "timeout" was interrupted at the search deadline, "cancelled" was still running when a
# callback stopped the search (only with an executor that runs trials in parallel)
TrialState = Literal["complete", "pruned", "failed", "skipped", "timeout", "cancelled"]


@dataclass
class Split:
    """Train/validation index pairs and the share of rows each model trains on."""

    folds: list[Fold]
    kind: SplitKind
    train_fraction: float
    oof_mask: NDArray[np.bool_]


@dataclass
class TrialResult:
    """One trial of the search (one leaderboard row)."""

    number: int
    family: str
    params: dict[str, Any]
    state: TrialState
    score: float | None = None
    score_std: float | None = None
    loss: float | None = None
    fit_time: float = 0.0
    fold_fit_time: float = 0.0
    rounds: list[int] = field(default_factory=list)
    fold_scores: list[float] = field(default_factory=list)  # per validated fold, in order
    # stopped at its deadline with what it had (fewer folds or rounds): only a first trial,
    # so that a search too short for one full trial still ends with a model
    partial: bool = False
    leaves: int = 0  # tree leaves of its largest fold model (the cost of an ONNX export)
    error: str | None = None
    worker: str | None = None  # "host:pid" of the process that evaluated it; None: this one
    started_at: float | None = None  # wall clock (time.time()) when its evaluation began
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


def make_splits(y: NDArray[Any], task: Task, cv: int | float | None, seed: int) -> Split:
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
        info.leaves = fam.leaves(est, ctx) if fam.onnx else 0
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
    executor: TrialExecutor | None = None,
) -> list[TrialResult]:
    """Run trials until the budget (minus the refit reserve), ``max_trials`` or a callback.

    ``executor`` evaluates the trials (default: :class:`~aiaas.automl.executors.LocalExecutor`,
    one at a time in this process).
    """
    import optuna

    from aiaas.automl.executors import LocalExecutor

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = _family_names(families, ctx)
    for name in names:
        FAMILIES[name].preload()
    starts = _starting_configs(names, ctx, sampler)
    loop = _TrialLoop(
        study=_build_study(starts, sampler, ctx.seed),
        names=names,
        X=X,
        y=y,
        ctx=ctx,
        metric=metric,
        split=split,
        deadline=t_start + budget,
        max_trials=max_trials,
        grid_size=len(starts) if sampler == "grid" else None,
        balanced=balanced,
        callbacks=callbacks,
        reserve_fn=reserve_fn,
        score_scale=score_scale,
        executor=executor or LocalExecutor(),
    )
    return loop.run()


def _family_names(families: Sequence[str] | None, ctx: Context) -> list[str]:
    """The families to search: those asked for (default all) that suit this data."""
    names = [n for n in (families or list(FAMILIES)) if n in FAMILIES]
    unknown = set(families or ()) - set(FAMILIES)
    if unknown:
        raise InvalidConfig(
            f"unknown model families: {sorted(unknown)}; choose from {list(FAMILIES)}"
        )
    names = [n for n in names if FAMILIES[n].available(ctx)]
    if not names:
        raise InvalidConfig("no model family is available for this data")
    return names


def _starting_configs(names: list[str], ctx: Context, sampler: str) -> list[tuple[str, Params]]:
    """The configurations enqueued before the sampler takes over (the grid, for ``grid``)."""
    starts: list[tuple[str, Params]] = []
    for fam_name, i in _DEFAULT_ORDER:
        if fam_name in names:
            confs = FAMILIES[fam_name].defaults(ctx)
            if i < len(confs):
                starts.append((fam_name, confs[i]))
    if sampler == "grid":
        starts += _grid(names, ctx)
    return starts


def _build_study(starts: list[tuple[str, Params]], sampler: str, seed: int) -> Any:
    """A minimising Optuna study with the sampler, the pruner and ``starts`` enqueued."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning for group/multivariate
        if sampler == "tpe":
            samp: Any = optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=len(starts)
            )
        elif sampler in ("random", "grid"):
            samp = optuna.samplers.RandomSampler(seed=seed)
        else:
            raise InvalidConfig("sampler must be 'tpe', 'random' or 'grid'")
        pruner = optuna.pruners.PercentilePruner(
            75.0, n_startup_trials=max(5, len(starts)), n_warmup_steps=0
        )
        study = optuna.create_study(direction="minimize", sampler=samp, pruner=pruner)
        for fam_name, conf in starts:
            study.enqueue_trial(
                {"family": fam_name, **{f"{fam_name}:{k}": v for k, v in conf.items()}},
                skip_if_exists=True,
            )
    return study


@dataclass
class _TrialLoop:
    """The ask → evaluate → tell loop: its stopping rules and its skip policy.

    The executor evaluates; the loop keeps ``executor.slots`` trials in flight (one for the
    local executor: ask, evaluate, tell, callbacks, as a plain sequential loop) and tells
    Optuna and calls the callbacks here, in this process, as each trial finishes.
    """

    study: Any
    names: list[str]
    X: NDArray[np.float32]
    y: NDArray[Any]
    ctx: Context
    metric: Metric
    split: Split
    deadline: float
    max_trials: int | None
    grid_size: int | None  # ``sampler="grid"``: stop once every enqueued configuration ran
    balanced: bool
    callbacks: Sequence[Callable[[TrialResult], Any]]
    reserve_fn: Callable[[list[TrialResult]], float]
    score_scale: float
    executor: TrialExecutor
    results: list[TrialResult] = field(default_factory=list)
    family_time: dict[str, list[float]] = field(default_factory=dict)
    skipped_in_row: int = 0
    asked: dict[int, Any] = field(default_factory=dict)  # trials in flight, by number

    def run(self) -> list[TrialResult]:
        from aiaas.automl.executors import TrialWork

        ex = self.executor
        work = TrialWork(
            self.X, self.y, self.ctx, self.metric, self.split, self.balanced, self.score_scale
        )
        ex.start(work)
        try:
            self._drive(ex)
        finally:
            ex.close()
        return self.results

    def _drive(self, ex: TrialExecutor) -> None:
        """Submit while a slot is free; record each finished trial; stop in-flight ones at
        the deadline (``timeout``) or when a callback says stop (``cancelled``)."""
        open_ = True
        while True:
            while open_ and len(self.asked) < ex.slots:
                submitted = self._submit_next(ex)
                open_ = submitted is not None
            if not self.asked:
                return
            finished = ex.wait(self._stop_at() - time.monotonic())
            if not finished:  # only at the stop time, with trials still in flight
                self._report(ex.cancel("timeout", "stopped at the time budget"))
                return
            if not self._report(finished):
                self._report(ex.cancel("cancelled", "the search was stopped"))
                return

    def _submit_next(self, ex: TrialExecutor) -> bool | None:
        """Ask for a trial and submit it (``True``), or skip it when it cannot be afforded
        (``False``); ``None`` when the search takes no more trials."""
        from aiaas.automl.executors import TrialSpec

        if (window := self._window()) is None:
            return None
        now, search_end = window
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask()
            fam_name = trial.suggest_categorical("family", self.names)
            fam = FAMILIES[fam_name]
            params = fam.suggest(trial, self.ctx)
        left = search_end - now
        if self._unaffordable(fam_name, left):
            self._skip(trial, fam_name, params)
            return None if self.skipped_in_row >= 60 or self._cheapest() > left else False
        self.skipped_in_row = 0
        deadline, keep = self._trial_deadline(now, search_end)
        self.asked[trial.number] = trial
        ex.submit(TrialSpec(trial, fam, params, deadline, keep_partial=keep))
        return True

    def _trial_deadline(self, now: float, search_end: float) -> tuple[float, bool]:
        """When a trial must stop, and whether it then keeps what it has.

        Until a trial is complete, a trial stops early enough for its own refit to fit in
        the budget (``_FIRST_TRIAL_SHARE``) and is kept with the folds and rounds it has:
        a budget too short for one full trial still ends with a model, on time. After that a
        trial stops at the end of the search and is lost (``timeout``). With ``max_trials``
        trials run to their end.
        """
        if self.max_trials is not None:
            return math.inf, False
        if any(r.state == "complete" for r in self.results):
            return search_end, False
        share = _first_trial_share(self.split)
        return min(search_end, now + share * (self.deadline - now)), True

    def _window(self) -> tuple[float, float] | None:
        """``(now, end of the search)``, or ``None`` when the search is over."""
        results, running = self.results, len(self.asked)
        if (
            self.max_trials is not None
            and len([r for r in results if r.state != "skipped"]) + running >= self.max_trials
        ):
            return None
        if self.grid_size is not None and len(results) + running >= self.grid_size:
            return None
        search_end = self.deadline - self.reserve_fn(results)
        now = time.monotonic()
        if now >= search_end and any(r.state == "complete" for r in results):
            return None
        if now >= self.deadline:
            return None
        return now, search_end

    def _stop_at(self) -> float:
        """When trials still in flight are stopped: the end of the search once a trial is
        complete, else the end of the budget (as long as ``_window`` keeps the search open);
        with ``max_trials`` never (a trial then runs to its end, in-process as well)."""
        if self.max_trials is not None:
            return math.inf
        if any(r.state == "complete" for r in self.results):
            return self.deadline - self.reserve_fn(self.results)
        return self.deadline

    def _unaffordable(self, fam_name: str, left: float) -> bool:
        """Cost-aware: a configuration we cannot afford now (never the first trials)."""
        expected = _expected_cost(fam_name, self.family_time, self.split)
        return (
            bool(self.results)
            and expected is not None
            and expected > max(left, 0.0)
            and self.max_trials is None
        )

    def _skip(self, trial: Any, fam_name: str, params: Params) -> None:
        from optuna.trial import TrialState as OptunaState

        # told as pruned (not failed) so TPE learns to avoid what we cannot afford
        self.study.tell(trial, state=OptunaState.PRUNED)
        self.results.append(
            TrialResult(
                trial.number,
                fam_name,
                params,
                "skipped",
                error="expected cost exceeds the time left",
            )
        )
        self.skipped_in_row += 1

    def _cheapest(self) -> float:
        """The expected cost of the cheapest family measured so far."""
        costs = (_expected_cost(n, self.family_time, self.split) for n in self.names)
        return min((c for c in costs if c is not None), default=0.0)

    def _report(self, finished: list[TrialResult]) -> bool:
        """Record every finished trial and call the callbacks; ``False`` when one said stop."""
        go_on = True
        for res in finished:
            self._record(res)
            go_on = self._callbacks_continue(res) and go_on
        return go_on

    def _record(self, res: TrialResult) -> None:
        """Tell Optuna how the trial ended and add it to the results (and the cost model)."""
        from optuna.trial import TrialState as OptunaState

        trial = self.asked.pop(res.number)
        self.family_time.setdefault(res.family, []).append(res.fit_time)
        if res.state == "complete":
            self.study.tell(trial, res.loss)
        elif res.state == "pruned":
            self.study.tell(trial, state=OptunaState.PRUNED)
        else:
            self.study.tell(trial, state=OptunaState.FAIL)
        self.results.append(res)
        _trim_oof(self.results)

    def _callbacks_continue(self, res: TrialResult) -> bool:
        """Call every callback with ``res``; ``False`` from any of them stops the search."""
        stop = False
        for cb in self.callbacks:
            if cb(res) is False:
                stop = True
        return not stop


def _first_trial_share(split: Split) -> float:
    """The share of the time left a first trial may take so that its refit on all rows
    (about one fold's fit scaled by ``1 / train_fraction``) still fits after it."""
    refit = _REFIT_MARGIN / max(split.train_fraction, 0.2)
    return 1.0 / (1.0 + refit)


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
    params: Params,
    ctx: Context,
    X: NDArray[np.float32],
    y: NDArray[Any],
    split: Split,
    metric: Metric,
    balanced: bool,
    score_scale: float = 1.0,
) -> TrialResult:
    """Cross-validate one configuration; the trial reports to the pruner after each batch."""
    res = TrialResult(trial.number, fam.name, params, "complete")
    n = len(y)
    oof = np.zeros((n, ctx.n_classes)) if ctx.is_cls else np.zeros(n)
    folds = _FoldScores(y, metric, score_scale, oof, res.rounds)
    t0 = time.monotonic()
    # small data: folds run side by side, one thread each (no OpenMP spinning, no idle core);
    # a single holdout fold: one model with every thread
    width = ctx.n_jobs if split.kind == "kfold" and ctx.n_jobs > 1 else 1
    fold_ctx = replace(ctx, n_jobs=1) if width > 1 else ctx

    def run_fold(fold: Fold) -> tuple[FitInfo, NDArray[np.float64]]:
        tr, va = fold
        w = _weights(y[tr], balanced)
        _, info, pred = fit_predict(fam, params, fold_ctx, X[tr], y[tr], w, X[va], y[va])
        assert pred is not None  # given validation rows, fit_predict predicts them
        return info, pred

    try:
        ended = _run_folds(trial, split.folds, run_fold, width, folds, ctx)
        if ended == "pruned":
            res.state = "pruned"
        res.partial = ended == "partial" or folds.truncated
    except TrialTimeout:
        res.state = "timeout"
        res.error = "stopped at the time budget"
    except Exception as exc:  # a failing configuration must not end the search
        res.state = "failed"
        res.error = f"{type(exc).__name__}: {str(exc)[:200]}"
        log.debug("trial %s failed", trial.number, exc_info=True)
    res.fit_time = time.monotonic() - t0
    # one fold's fit on one thread (folds ran ``width`` at a time)
    res.fold_fit_time = res.fit_time * width / max(1, len(folds.losses))
    res.fold_scores = list(folds.scores)
    res.leaves = folds.leaves
    if folds.scores:
        res.score = float(np.mean(folds.scores))
        res.score_std = float(np.std(folds.scores))
    if res.state == "complete":
        res.loss = float(np.mean(folds.losses))
        # out-of-fold predictions for every row only (the ensemble selection needs them)
        res.oof = oof.astype(np.float32) if len(folds.losses) == len(split.folds) else None
    return res


@dataclass
class _FoldScores:
    """One trial's out-of-fold predictions, rounds and per-fold scores, filled fold by fold."""

    y: NDArray[Any]
    metric: Metric
    score_scale: float
    oof: NDArray[np.float64]
    rounds: list[int]
    scores: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    truncated: bool = False  # a fold's model stopped at the deadline (``ctx.keep_partial``)
    leaves: int = 0

    def add(self, va: NDArray[np.intp], info: FitInfo, pred: NDArray[np.float64]) -> None:
        self.oof[va] = pred
        self.truncated = self.truncated or info.truncated
        self.leaves = max(self.leaves, info.leaves)
        if info.rounds:
            self.rounds.append(info.rounds)
        # scores in the target's own units (regression targets are standardised)
        self.scores.append(score(self.metric, self.y[va], pred) * self.score_scale)
        self.losses.append(loss(self.metric, self.y[va], pred) * self.score_scale)


def _run_folds(
    trial: Any,
    folds: list[Fold],
    run_fold: Callable[[Fold], tuple[FitInfo, NDArray[np.float64]]],
    width: int,
    out: _FoldScores,
    ctx: Context,
) -> Literal["complete", "pruned", "partial"]:
    """Fit the folds ``width`` at a time into ``out``; how the trial ended: ``partial`` when
    ``ctx.keep_partial`` and the deadline passed with folds still to fit."""
    for start in range(0, len(folds), width):
        batch = folds[start : start + width]
        if width > 1:
            with threadpool_limits(limits=1):
                outs = list(_pool(width).map(run_fold, batch))
        else:
            outs = [run_fold(f) for f in batch]
        for (_, va), (info, pred) in zip(batch, outs, strict=True):
            out.add(va, info, pred)
        step = start + len(batch) - 1
        trial.report(float(np.mean(out.losses)), step)
        if step < len(folds) - 1 and trial.should_prune():
            return "pruned"
        if step < len(folds) - 1 and ctx.keep_partial and time.monotonic() > ctx.deadline:
            return "partial"
    return "complete"


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
