"""Model families and their one conditional search space.

Each family knows its strong cheap starting configurations (tried first, cheapest first), how
to sample a configuration from an Optuna trial, how to build and fit an estimator on the
preprocessed float32 matrix (with early stopping on the validation fold for the boosting
families) and how to turn a tuned configuration into a fixed one for the final refit.

Optuna parameter names are ``"<family>:<param>"`` under one ``"family"`` choice, which makes
the space conditional (TPE with ``group=True`` models each family's sub-space separately).
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler, TargetEncoder

from aiaas.automl.types import Task

__all__ = ["FAMILIES", "Context", "Family", "FitInfo", "TrialTimeout"]

Params = dict[str, Any]
Matrix = NDArray[np.float32]  # the preprocessed features
Labels = NDArray[Any]  # class codes 0..k-1, or the (standardised) regression target
Weights = NDArray[np.float64] | None  # per-row sample weights; None = unweighted


class TrialTimeout(Exception):
    """Raised inside a boosting loop when the search deadline passes."""


def _past_deadline(ctx: Context) -> bool:
    """Whether an interruptible fit must stop now: ``True`` to stop and keep what it grew
    (``ctx.keep_partial``); past the deadline otherwise, :class:`TrialTimeout`."""
    if time.monotonic() <= ctx.deadline:
        return False
    if ctx.keep_partial:
        return True
    raise TrialTimeout


@dataclass
class Context:
    """What a family needs to know about the data and the run."""

    task: Task
    n_classes: int
    n_rows: int
    n_features: int
    categorical: list[int]
    highcard: list[int]
    lowcard_ints: list[int]
    n_jobs: int
    seed: int
    deadline: float = math.inf  # time.monotonic(); the interruptible families stop at it
    # at the deadline keep the model grown so far (rounds, trees) instead of TrialTimeout:
    # the final refit, and the first trials (a search must end with a model)
    keep_partial: bool = False

    @property
    def is_cls(self) -> bool:
        return self.task != "regression"


@dataclass
class FitInfo:
    """What one fit learned besides the model (e.g. the early-stopped number of rounds)."""

    rounds: int | None = None
    leaves: int = 0  # tree leaves of the fitted model: what its ONNX conversion costs
    truncated: bool = False  # stopped at the deadline with the model grown so far


class Family:
    """Base class: one model family of the search space."""

    name: ClassVar[str] = ""
    onnx: ClassVar[bool] = True

    def available(self, ctx: Context) -> bool:
        return True

    def preload(self) -> None:
        """Import the family's library now, so its first trial's measured time is all fit."""

    def leaves(self, est: Any, ctx: Context) -> int:
        """Tree leaves of a fitted model, a bound where counting is slow (0: no trees)."""
        return 0

    def defaults(self, ctx: Context) -> list[Params]:
        raise NotImplementedError

    def suggest(self, trial: Any, ctx: Context) -> Params:
        raise NotImplementedError

    def build(self, params: Params, ctx: Context, *, rounds: int | None = None) -> Any:
        raise NotImplementedError

    def fit(
        self,
        est: Any,
        X: Matrix,
        y: Labels,
        w: Weights,
        X_val: Matrix | None,
        y_val: Labels | None,
        ctx: Context,
    ) -> FitInfo:
        est.fit(X, y, **_sw(est, w))
        return FitInfo()

    def refit_rounds(self, infos: list[FitInfo], train_fraction: float) -> int | None:
        """Rounds for the refit on all data: the folds' mean, a little more for more data."""
        rounds = [i.rounds for i in infos if i.rounds]
        if not rounds:
            return None
        scale = (1.0 / min(max(train_fraction, 0.5), 1.0)) ** 0.5
        return max(1, int(round(float(np.mean(rounds)) * scale)))


def _sw(est: Any, w: Weights) -> dict[str, Any]:
    if w is None:
        return {}
    if isinstance(est, Pipeline):
        return {f"{est.steps[-1][0]}__sample_weight": w}
    return {"sample_weight": w}


def _p(trial: Any, family: str, kind: str, name: str, *args: Any, **kw: Any) -> Any:
    method: Callable[..., Any] = getattr(trial, f"suggest_{kind}")
    return method(f"{family}:{name}", *args, **kw)


def _n_threads(ctx: Context) -> int:
    return max(1, ctx.n_jobs)


# ---------------------------------------------------------------------------------- LightGBM
class LightGBM(Family):
    name = "lightgbm"
    MAX_ROUNDS = 3000

    def preload(self) -> None:
        # LightGBM's time is the yardstick for every family not yet measured (search.py)
        _lgb_takes_eval_xy()

    def defaults(self, ctx: Context) -> list[Params]:
        return [
            # the library's defaults, early-stopped instead of a fixed 100 rounds
            {"learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 20,
             "subsample": 1.0, "colsample_bytree": 1.0, "reg_alpha": 1e-8, "reg_lambda": 1e-8,
             "extra_trees": False, "cat_smooth": 10.0},
            # slower, larger, bagged: usually the strongest single GBM (AutoGluon's GBMLarge)
            {"learning_rate": 0.03, "num_leaves": 128, "min_child_samples": 5,
             "subsample": 0.9, "colsample_bytree": 0.7, "reg_alpha": 1e-8, "reg_lambda": 1.0,
             "extra_trees": False, "cat_smooth": 10.0},
            # randomised splits: a diverse ensemble member (GBMXT)
            {"learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 10,
             "subsample": 1.0, "colsample_bytree": 0.8, "reg_alpha": 1e-8, "reg_lambda": 1e-8,
             "extra_trees": True, "cat_smooth": 10.0},
        ]  # fmt: skip

    def suggest(self, trial: Any, ctx: Context) -> Params:
        f = self.name
        return {
            "learning_rate": _p(trial, f, "float", "learning_rate", 0.01, 0.3, log=True),
            "num_leaves": _p(trial, f, "int", "num_leaves", 4, 256, log=True),
            "min_child_samples": _p(trial, f, "int", "min_child_samples", 2, 100, log=True),
            "subsample": _p(trial, f, "float", "subsample", 0.5, 1.0),
            "colsample_bytree": _p(trial, f, "float", "colsample_bytree", 0.3, 1.0),
            "reg_alpha": _p(trial, f, "float", "reg_alpha", 1e-8, 10.0, log=True),
            "reg_lambda": _p(trial, f, "float", "reg_lambda", 1e-8, 10.0, log=True),
            "extra_trees": _p(trial, f, "categorical", "extra_trees", [False, True]),
            "cat_smooth": _p(trial, f, "float", "cat_smooth", 1.0, 50.0, log=True),
        }

    def build(self, params: Params, ctx: Context, *, rounds: int | None = None) -> Any:
        import lightgbm as lgb

        cls = lgb.LGBMClassifier if ctx.is_cls else lgb.LGBMRegressor
        p = dict(params)
        return cls(
            n_estimators=rounds or self.MAX_ROUNDS,
            subsample_freq=1 if p.get("subsample", 1.0) < 1.0 else 0,
            n_jobs=_n_threads(ctx),
            random_state=ctx.seed,
            deterministic=True,
            force_col_wise=True,
            verbose=-1,
            **p,
        )

    def leaves(self, est: Any, ctx: Context) -> int:
        # at most num_leaves per tree (large data fills them); dump_model() would be slow
        return int(est.booster_.num_trees()) * int(est.get_params()["num_leaves"])

    def fit(
        self,
        est: Any,
        X: Matrix,
        y: Labels,
        w: Weights,
        X_val: Matrix | None,
        y_val: Labels | None,
        ctx: Context,
    ) -> FitInfo:
        import lightgbm as lgb

        stopped: list[int] = []

        def _stop(env: Any) -> None:
            if _past_deadline(ctx):  # keep the trees so far (LightGBM ends the loop cleanly)
                stopped.append(env.iteration)
                raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

        _stop.order = 5  # type: ignore[attr-defined]
        kw: dict[str, Any] = {"categorical_feature": ctx.categorical or "auto"}
        cbs: list[Any] = [_stop]
        if X_val is not None and y_val is not None and est.n_estimators == self.MAX_ROUNDS:
            if _lgb_takes_eval_xy():
                kw.update(eval_X=X_val, eval_y=y_val)
            else:
                kw["eval_set"] = [(X_val, y_val)]
            cbs.append(lgb.early_stopping(50, first_metric_only=True, verbose=False))
        est.fit(X, y, sample_weight=w, callbacks=cbs, **kw)
        best = getattr(est, "best_iteration_", None) or est.n_estimators
        if X_val is None:  # a final model: make it export to ONNX exactly
            _float32_thresholds(est)
        return FitInfo(rounds=int(best), truncated=bool(stopped))


_THRESHOLDS = re.compile(r"^threshold=(.*)$", re.MULTILINE)


def _float32_thresholds(est: Any) -> None:
    """Round LightGBM's split thresholds down to float32 without changing any prediction.

    Inputs are float32 values, LightGBM sends ``x <= t`` left with ``t`` a double; ONNX's tree
    ensembles compare in float32, where ``float32(t)`` may round up past an input value and
    flip the split. No float32 lies in ``(floor32(t), t]``, so replacing ``t`` by the largest
    float32 below it keeps every native decision and makes the ONNX graph match exactly.
    """
    import lightgbm as lgb

    def floor32(match: re.Match[str]) -> str:
        vals = np.array(match.group(1).split(), dtype=np.float64)
        f32 = vals.astype(np.float32)
        up = f32.astype(np.float64) > vals
        f32[up] = np.nextafter(f32[up], np.float32(-np.inf))
        return "threshold=" + " ".join(repr(float(v)) for v in f32.astype(np.float64))

    text = _THRESHOLDS.sub(floor32, est.booster_.model_to_string())
    # the header's byte offsets no longer hold; without them LightGBM parses tree by tree
    text = re.sub(r"^tree_sizes=.*\n", "", text, count=1, flags=re.MULTILINE)
    est._Booster = lgb.Booster(model_str=text)


def _has_kw(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@cache
def _lgb_takes_eval_xy() -> bool:
    """Whether this LightGBM's ``fit`` takes ``eval_X``/``eval_y`` (newer than ``eval_set``)."""
    import lightgbm as lgb

    return _has_kw(lgb.LGBMModel.fit, "eval_X")


# ----------------------------------------------------------------------------------- XGBoost
class XGBoost(Family):
    name = "xgboost"
    MAX_ROUNDS = 3000

    def defaults(self, ctx: Context) -> list[Params]:
        return [
            {"learning_rate": 0.1, "max_depth": 6, "min_child_weight": 1.0, "subsample": 0.8,
             "colsample_bytree": 0.8, "reg_lambda": 1.0, "reg_alpha": 1e-8},
        ]  # fmt: skip

    def suggest(self, trial: Any, ctx: Context) -> Params:
        f = self.name
        return {
            "learning_rate": _p(trial, f, "float", "learning_rate", 0.01, 0.3, log=True),
            "max_depth": _p(trial, f, "int", "max_depth", 2, 10),
            "min_child_weight": _p(trial, f, "float", "min_child_weight", 0.1, 20.0, log=True),
            "subsample": _p(trial, f, "float", "subsample", 0.5, 1.0),
            "colsample_bytree": _p(trial, f, "float", "colsample_bytree", 0.3, 1.0),
            "reg_lambda": _p(trial, f, "float", "reg_lambda", 1e-3, 10.0, log=True),
            "reg_alpha": _p(trial, f, "float", "reg_alpha", 1e-8, 1.0, log=True),
        }

    def build(self, params: Params, ctx: Context, *, rounds: int | None = None) -> Any:
        import xgboost as xgb

        cls = xgb.XGBClassifier if ctx.is_cls else xgb.XGBRegressor
        extra: dict[str, Any] = {} if rounds else {"early_stopping_rounds": 50}
        return cls(
            n_estimators=rounds or self.MAX_ROUNDS,
            tree_method="hist",
            n_jobs=_n_threads(ctx),
            random_state=ctx.seed,
            verbosity=0,
            **extra,
            **params,
        )

    def leaves(self, est: Any, ctx: Context) -> int:
        per_round = ctx.n_classes if ctx.n_classes > 2 else 1
        bound = min(int(2 ** int(est.get_params()["max_depth"])), max(1, ctx.n_rows))
        return int(est.get_booster().num_boosted_rounds()) * per_round * bound

    def fit(
        self,
        est: Any,
        X: Matrix,
        y: Labels,
        w: Weights,
        X_val: Matrix | None,
        y_val: Labels | None,
        ctx: Context,
    ) -> FitInfo:
        import xgboost as xgb

        stopped: list[int] = []

        class _Stop(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                if _past_deadline(ctx):  # True ends training with the rounds so far
                    stopped.append(epoch)
                    return True
                return False

        est.set_params(callbacks=[_Stop()])
        try:
            if est.get_params().get("early_stopping_rounds") and X_val is not None:
                est.fit(X, y, sample_weight=w, eval_set=[(X_val, y_val)], verbose=False)
                rounds = int(est.best_iteration) + 1
            else:
                est.set_params(early_stopping_rounds=None)
                est.fit(X, y, sample_weight=w, verbose=False)
                rounds = int(est.get_booster().num_boosted_rounds())
        finally:
            est.set_params(callbacks=None)
        return FitInfo(rounds=rounds, truncated=bool(stopped))


# ------------------------------------------------------------------ HistGradientBoosting
class HistGB(Family):
    name = "histgb"
    onnx = False  # skl2onnx cannot convert it (as of 1.20)
    MAX_ROUNDS = 500  # it cannot be interrupted at the deadline, so keep it bounded

    def defaults(self, ctx: Context) -> list[Params]:
        return [
            {"learning_rate": 0.06, "max_leaf_nodes": 31, "min_samples_leaf": 20,
             "l2_regularization": 1e-8, "max_features": 1.0},
        ]  # fmt: skip

    def suggest(self, trial: Any, ctx: Context) -> Params:
        f = self.name
        return {
            "learning_rate": _p(trial, f, "float", "learning_rate", 0.01, 0.3, log=True),
            "max_leaf_nodes": _p(trial, f, "int", "max_leaf_nodes", 4, 128, log=True),
            "min_samples_leaf": _p(trial, f, "int", "min_samples_leaf", 2, 100, log=True),
            "l2_regularization": _p(trial, f, "float", "l2_regularization", 1e-8, 10, log=True),
            "max_features": _p(trial, f, "float", "max_features", 0.3, 1.0),
        }

    def build(self, params: Params, ctx: Context, *, rounds: int | None = None) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier as C
        from sklearn.ensemble import HistGradientBoostingRegressor as R

        cls = C if ctx.is_cls else R
        return cls(
            max_iter=rounds or self.MAX_ROUNDS,
            early_stopping=rounds is None,
            n_iter_no_change=20,
            categorical_features=ctx.categorical or None,
            random_state=ctx.seed,
            **params,
        )

    CHUNK = 25

    def fit(
        self,
        est: Any,
        X: Matrix,
        y: Labels,
        w: Weights,
        X_val: Matrix | None,
        y_val: Labels | None,
        ctx: Context,
    ) -> FitInfo:
        early = bool(est.early_stopping and X_val is not None)
        if not early and not (ctx.keep_partial and math.isfinite(ctx.deadline)):
            est.fit(X, y, sample_weight=w)
            return FitInfo(rounds=int(est.n_iter_))
        # grow in chunks (warm start) so the deadline can interrupt it
        cap = int(est.max_iter)
        est.set_params(warm_start=True)
        target = 0
        val = {"X_val": X_val, "y_val": y_val} if early else {}
        while True:
            target = min(target + self.CHUNK, cap)
            est.set_params(max_iter=target)
            est.fit(X, y, sample_weight=w, **val)
            if est.n_iter_ < target or target >= cap:
                break
            if _past_deadline(ctx):
                return FitInfo(rounds=int(est.n_iter_), truncated=True)
        return FitInfo(rounds=int(est.n_iter_))


# ---------------------------------------------------------------------- bagged trees
class _Forest(Family):
    extra_trees: ClassVar[bool] = False

    def defaults(self, ctx: Context) -> list[Params]:
        return [{"max_features": 0.5, "min_samples_leaf": 1}]

    def suggest(self, trial: Any, ctx: Context) -> Params:
        f = self.name
        return {
            "max_features": _p(trial, f, "float", "max_features", 0.1, 1.0),
            "min_samples_leaf": _p(trial, f, "int", "min_samples_leaf", 1, 32, log=True),
        }

    def build(self, params: Params, ctx: Context, *, rounds: int | None = None) -> Any:
        from sklearn import ensemble as E

        if self.extra_trees:
            model = E.ExtraTreesClassifier if ctx.is_cls else E.ExtraTreesRegressor
        else:
            model = E.RandomForestClassifier if ctx.is_cls else E.RandomForestRegressor
        # fewer trees on big data keeps a forest affordable; leaves grow with rows
        n_trees = 300 if ctx.n_rows <= 5_000 else 200 if ctx.n_rows <= 20_000 else 100
        est = model(
            n_estimators=n_trees,
            n_jobs=_n_threads(ctx),
            random_state=ctx.seed,
            max_samples=None,
            **params,
        )
        imputer = SimpleImputer(strategy="median", keep_empty_features=True)
        return Pipeline([("impute", imputer), ("model", est)])

    def leaves(self, est: Any, ctx: Context) -> int:
        return sum(int(t.tree_.n_leaves) for t in est.steps[-1][1].estimators_)

    CHUNK_S = 0.2  # seconds of trees per chunk, once the first chunk measured their cost
    FIRST_CHUNK = 10

    def fit(
        self,
        est: Any,
        X: Matrix,
        y: Labels,
        w: Weights,
        X_val: Matrix | None,
        y_val: Labels | None,
        ctx: Context,
    ) -> FitInfo:
        model = est.steps[-1][1]
        total = int(model.n_estimators)
        if not math.isfinite(ctx.deadline) or total <= self.FIRST_CHUNK:
            est.fit(X, y, **_sw(est, w))
            return FitInfo()
        # grow the forest in chunks (warm start gives the same trees as one fit) so the
        # deadline can interrupt it; chunks of about CHUNK_S seconds after the first
        model.set_params(warm_start=True)
        n, chunk = 0, self.FIRST_CHUNK
        while n < total:
            t0 = time.monotonic()
            grown, n = n, min(n + chunk, total)
            model.set_params(n_estimators=n)
            est.fit(X, y, **_sw(est, w))
            per_tree = (time.monotonic() - t0) / max(1, n - grown)
            chunk = max(self.FIRST_CHUNK, int(self.CHUNK_S / max(per_tree, 1e-6)))
            if n < total and _past_deadline(ctx):
                model.set_params(n_estimators=n)
                return FitInfo(truncated=True)
        return FitInfo()


class RandomForest(_Forest):
    name = "random_forest"


class ExtraTrees(_Forest):
    name = "extra_trees"
    extra_trees = True


# --------------------------------------------------------- families on scaled/encoded input
def _dense_encoder(ctx: Context, *, scale_cats: bool = False) -> ColumnTransformer:
    """Impute+scale numbers, one-hot low-cardinality columns, target-encode the rest."""
    onehot = sorted(set(ctx.categorical) | set(ctx.lowcard_ints))
    skip = set(ctx.categorical) | set(ctx.highcard)
    numeric = [i for i in range(ctx.n_features) if i not in skip]
    parts: list[tuple[str, Any, list[int]]] = []
    if numeric:
        parts.append(
            (
                "num",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            )
        )
    if onehot:
        parts.append(
            (
                "onehot",
                Pipeline(
                    [
                        (
                            "impute",
                            SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                        ),
                        (
                            "encode",
                            OneHotEncoder(
                                handle_unknown="ignore", sparse_output=False, dtype=np.float32
                            ),
                        ),
                    ]
                ),
                onehot,
            )
        )
    if ctx.highcard:
        target_type = (
            "continuous" if not ctx.is_cls else ("binary" if ctx.n_classes == 2 else "multiclass")
        )
        parts.append(
            (
                "target",
                Pipeline(
                    [
                        ("encode", TargetEncoder(target_type=target_type, cv=5)),
                        ("scale", StandardScaler()),
                    ]
                ),
                ctx.highcard,
            )
        )
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


class Linear(Family):
    name = "linear"

    def defaults(self, ctx: Context) -> list[Params]:
        return [{"C": 1.0} if ctx.is_cls else {"alpha": 1.0, "l1_ratio": 0.0}]

    def suggest(self, trial: Any, ctx: Context) -> Params:
        f = self.name
        if ctx.is_cls:
            return {"C": _p(trial, f, "float", "C", 1e-3, 1e2, log=True)}
        return {
            "alpha": _p(trial, f, "float", "alpha", 1e-4, 1e2, log=True),
            "l1_ratio": _p(trial, f, "float", "l1_ratio", 0.0, 1.0),
        }

    def build(self, params: Params, ctx: Context, *, rounds: int | None = None) -> Any:
        from sklearn.linear_model import ElasticNet, LogisticRegression, Ridge

        model: Any
        if ctx.is_cls:
            model = LogisticRegression(C=params["C"], max_iter=500, random_state=ctx.seed)
        elif params.get("l1_ratio", 0.0) <= 1e-3:
            model = Ridge(alpha=params["alpha"], random_state=ctx.seed)
        else:
            # ElasticNet's alpha is per-sample; scale so both share one sensible range
            model = ElasticNet(
                alpha=params["alpha"] / max(ctx.n_rows, 1) * 10,
                l1_ratio=params["l1_ratio"],
                max_iter=2000,
                random_state=ctx.seed,
            )
        return Pipeline([("encode", _dense_encoder(ctx)), ("model", model)])


class KNN(Family):
    name = "knn"

    def available(self, ctx: Context) -> bool:
        return ctx.n_rows <= 50_000

    def defaults(self, ctx: Context) -> list[Params]:
        return [{"n_neighbors": 15}]

    def suggest(self, trial: Any, ctx: Context) -> Params:
        f = self.name
        # distance weighting is not exported faithfully by skl2onnx: uniform votes only
        return {"n_neighbors": _p(trial, f, "int", "n_neighbors", 2, 100, log=True)}

    def build(self, params: Params, ctx: Context, *, rounds: int | None = None) -> Any:
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

        cls = KNeighborsClassifier if ctx.is_cls else KNeighborsRegressor
        k = min(int(params["n_neighbors"]), max(1, ctx.n_rows // 2))
        model = cls(n_neighbors=k, weights="uniform", n_jobs=_n_threads(ctx))
        return Pipeline([("encode", _dense_encoder(ctx)), ("model", model)])

    def fit(
        self,
        est: Any,
        X: Matrix,
        y: Labels,
        w: Weights,
        X_val: Matrix | None,
        y_val: Labels | None,
        ctx: Context,
    ) -> FitInfo:
        est.fit(X, y)  # k-NN takes no sample weights
        return FitInfo()


class MLP(Family):
    name = "mlp"

    def available(self, ctx: Context) -> bool:
        return ctx.n_rows >= 100

    def defaults(self, ctx: Context) -> list[Params]:
        return [{"width": 128, "depth": 2, "alpha": 1e-4, "learning_rate_init": 1e-3}]

    def suggest(self, trial: Any, ctx: Context) -> Params:
        f = self.name
        return {
            "width": _p(trial, f, "categorical", "width", [32, 64, 128, 256]),
            "depth": _p(trial, f, "int", "depth", 1, 3),
            "alpha": _p(trial, f, "float", "alpha", 1e-6, 1e-1, log=True),
            "learning_rate_init": _p(trial, f, "float", "learning_rate_init", 1e-4, 1e-2, log=True),
        }

    def build(self, params: Params, ctx: Context, *, rounds: int | None = None) -> Any:
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        cls = MLPClassifier if ctx.is_cls else MLPRegressor
        width, depth = int(params["width"]), int(params["depth"])
        sizes = tuple(max(8, width // (2**i)) for i in range(depth))
        model = cls(
            hidden_layer_sizes=sizes,
            alpha=params["alpha"],
            learning_rate_init=params["learning_rate_init"],
            batch_size=min(256, max(16, ctx.n_rows // 10)),
            max_iter=200,
            early_stopping=True,
            n_iter_no_change=10,
            random_state=ctx.seed,
        )
        return Pipeline([("encode", _dense_encoder(ctx)), ("model", model)])

    def fit(
        self,
        est: Any,
        X: Matrix,
        y: Labels,
        w: Weights,
        X_val: Matrix | None,
        y_val: Labels | None,
        ctx: Context,
    ) -> FitInfo:
        est.fit(X, y)  # early stopping uses its own split; weights unsupported in old sklearn
        return FitInfo()


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        LightGBM(),
        XGBoost(),
        HistGB(),
        ExtraTrees(),
        RandomForest(),
        Linear(),
        KNN(),
        MLP(),
    )
}
