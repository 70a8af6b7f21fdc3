"""The target column: which task it is (the one rule, :func:`infer_task`) and its encoding.

The rule (``task="auto"``), on the non-missing target values:

1. text, boolean or categorical values are classes: ``binary`` for two, else ``multiclass``;
2. numbers with exactly two distinct values are ``binary``;
3. numbers that are not all whole are ``regression``;
4. whole numbers (integers, or floats such as ``3.0``) are class codes when there are few
   of them relative to the rows: at most :func:`max_classes` distinct values — 10 % of the
   rows up to 100 values, 5 % of the rows beyond that, never more than 1000 (the
   unique-ratio rule of AutoGluon, made continuous in the row count) — else ``regression``;
5. except that at least five whole numbers evenly spaced on a step larger than one
   (10, 20, 30 … or 0, 25, 50 …) are a rounded quantity, not codes: ``regression``.

The call is *close* within a factor of two of the threshold of step 4, whenever step 5
decided, and for class codes stored as decimals (a float column of whole numbers without
missing values); ``fit`` then adds a warning saying how to override (``task="regression"``
or ``task="multiclass"``). An explicit ``task`` always wins, and is checked against the
values (a regression target must be numeric, a binary one must have two classes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from aiaas.automl.errors import InvalidTarget
from aiaas.automl.types import Task, TaskOption

__all__ = [
    "MAX_CLASSES",
    "TaskInference",
    "infer_task",
    "max_classes",
    "plain_label",
    "prepare_target",
]

MAX_CLASSES = 1000  # more distinct whole numbers are a quantity; more labels are refused
_RATIO_SMALL = 0.10  # classes may be up to this share of the rows ...
_RATIO_SMALL_CAP = 100  # ... as long as there are at most this many
_RATIO_LARGE = 0.05  # beyond that, this share of the rows
_CLOSE_FACTOR = 2.0  # distinct counts within this factor of the threshold are close calls
_GRID_MIN_VALUES = 5  # evenly spaced whole numbers on a step > 1: a quantity from this many


@dataclass(frozen=True)
class TaskInference:
    """What the task is and why (``report()["task_inference"]``)."""

    task: Task
    reason: str
    distinct: int  # distinct non-missing target values
    rows: int  # rows with a target
    close: bool  # the other answer was nearly as plausible: worth a warning
    requested: TaskOption = "auto"
    inferred: Task | None = None  # what the rule says (when ``task`` was given explicitly)

    def report(self) -> dict[str, Any]:
        return asdict(self)

    def warning(self) -> str | None:
        """The close-call warning with the override to use, or ``None``."""
        if not self.close or self.requested != "auto":
            return None
        other = "regression" if self.task != "regression" else "multiclass"
        return (
            f"the task was inferred as {self.task!r} but it was a close call ({self.reason}); "
            f"pass task={other!r} if the target is "
            + ("a quantity" if other == "regression" else "a set of classes")
        )


def max_classes(rows: int) -> int:
    """The most distinct whole numbers a target of ``rows`` rows may have as class codes."""
    small = min(_RATIO_SMALL * rows, _RATIO_SMALL_CAP)
    return int(min(MAX_CLASSES, max(min(10, rows // 5), small, _RATIO_LARGE * rows)))


def infer_task(y: pd.Series) -> TaskInference:
    """The task for a target column (missing values are ignored); the rule is above."""
    values = y.dropna()
    rows = len(values)
    if (
        pd.api.types.is_bool_dtype(values)
        or not pd.api.types.is_numeric_dtype(values)
        or isinstance(values.dtype, pd.CategoricalDtype)
    ):
        k = int(values.nunique())
        kind = (
            "boolean"
            if pd.api.types.is_bool_dtype(values)
            else "categorical"
            if isinstance(values.dtype, pd.CategoricalDtype)
            else "text"
        )
        task: Task = "binary" if k <= 2 else "multiclass"
        return TaskInference(task, f"the target holds {kind} values, so classes", k, rows, False)
    arr = values.to_numpy(dtype=np.float64)
    uniq = np.unique(arr[np.isfinite(arr)])
    k = int(uniq.size)
    if k <= 2:
        return TaskInference("binary", "the target has two distinct values", k, rows, False)
    if not np.all(uniq == np.round(uniq)):
        return TaskInference("regression", "the target has fractional numbers", k, rows, False)
    # a float column of whole numbers without missing values was written as decimals (3.0);
    # with missing values it may be an integer column that pandas had to make float
    decimals = pd.api.types.is_float_dtype(y) and not bool(y.isna().any())
    return _whole_numbers(uniq, rows, decimals)


def _whole_numbers(uniq: NDArray[np.float64], rows: int, decimals: bool) -> TaskInference:
    """Steps 4 and 5 of the rule: class codes or a quantity."""
    k, limit = int(uniq.size), max_classes(rows)
    close = limit / _CLOSE_FACTOR < k <= limit * _CLOSE_FACTOR
    counted = f"{k} distinct whole numbers in {rows} rows"
    if k > limit:
        reason = f"{counted}: more than the {limit} class codes allowed at this size"
        return TaskInference("regression", reason, k, rows, close)
    step = _common_step(uniq)
    if k >= _GRID_MIN_VALUES and step > 1:
        shown = ", ".join(f"{v:g}" for v in uniq[:3])
        reason = f"{counted}, evenly spaced on a step of {step:g} ({shown} ...): a rounded quantity"
        return TaskInference("regression", reason, k, rows, True)
    reason = f"{counted}: few enough to be class codes (at most {limit} at this size)"
    if decimals:
        reason += ", though stored as decimals (3.0), as codes rarely are"
    return TaskInference("multiclass", reason, k, rows, close or decimals)


def _common_step(uniq: NDArray[np.float64]) -> float:
    """The largest step every gap between the sorted distinct whole numbers is a multiple of."""
    gaps = np.diff(uniq)
    if gaps.size == 0 or np.abs(uniq).max() > 2**53:
        return 1.0
    return float(reduce(math.gcd, (int(g) for g in gaps)))


def prepare_target(
    y: pd.Series, task: TaskOption
) -> tuple[TaskInference, NDArray[Any], NDArray[Any] | None, NDArray[np.bool_]]:
    """Check the target and encode it.

    Returns ``(inference, y_encoded, classes, keep)`` where ``keep`` marks rows with a target
    (rows with a missing target are dropped and reported by the caller). Classification targets
    are encoded as ``0..k-1`` over the sorted ``classes``; regression targets as float64.
    """
    keep = np.array(y.notna().to_numpy(), dtype=np.bool_)
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
        with np.errstate(invalid="ignore"):
            arr = y.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(arr).any():
            raise InvalidTarget("the target contains infinite values; fix or drop those rows")
        keep &= ~np.isnan(arr)
    if not keep.any():
        raise InvalidTarget("the target column has no values")
    values = y[keep]
    inference = infer_task(y)
    if task != "auto":
        inference = TaskInference(
            task,
            f"task={task!r} was given",
            inference.distinct,
            inference.rows,
            False,
            requested=task,
            inferred=inference.task,
        )
    if inference.task == "regression":
        return inference, _regression_values(values), None, keep
    labels = np.asarray([plain_label(v) for v in values.to_numpy()], dtype=object)
    classes = _sorted_classes(labels)
    if classes.size < 2:
        raise InvalidTarget(
            f"the target has a single class ({classes[0]!r}); classification needs at least two"
        )
    if inference.task == "binary" and classes.size > 2:
        raise InvalidTarget(
            f"task 'binary' but the target has {classes.size} classes; use task='multiclass'"
        )
    if classes.size > MAX_CLASSES:
        raise InvalidTarget(
            f"the target has {classes.size} classes; at most {MAX_CLASSES} are supported"
        )
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    encoded = np.fromiter((lookup[v] for v in labels), dtype=np.int64, count=labels.size)
    return inference, encoded, classes, keep


def _regression_values(values: pd.Series) -> NDArray[np.float64]:
    """The target as float64; ``InvalidTarget`` when it is not numbers (text that parses is)."""
    if pd.api.types.is_bool_dtype(values):
        raise InvalidTarget(
            "a regression target must be numeric; this one is true/false (use task='binary')"
        )
    if not pd.api.types.is_numeric_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype):
        numeric = pd.to_numeric(values.astype("object"), errors="coerce")
        bad = int(numeric.isna().sum())
        if bad:
            raise InvalidTarget(
                f"a regression target must be numeric; {bad} value(s) are not "
                f"(e.g. {str(values[numeric.isna()].iloc[0])[:40]!r}); "
                "use task='binary' or 'multiclass' for labels"
            )
        values = numeric
    out: NDArray[np.float64] = values.to_numpy(dtype=np.float64)
    return out


def plain_label(v: Any) -> Any:
    """Normalise a label: numpy scalars to Python, integral floats to int."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _sorted_classes(labels: NDArray[Any]) -> NDArray[Any]:
    uniq = list(dict.fromkeys(labels.tolist()))
    try:
        uniq.sort()
    except TypeError:
        uniq.sort(key=str)
    out = np.empty(len(uniq), dtype=object)
    out[:] = uniq
    return out
