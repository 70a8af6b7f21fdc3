"""The feature preprocessor (the target and its task: :mod:`aiaas.automl.target`).

``TabularPreprocessor`` turns a raw table into one float32 matrix that every model family
reads (and that the exported ONNX graphs take as input):

* numeric columns stay numeric (``inf`` becomes missing; missing stays ``NaN`` - trees handle it,
  the other families impute inside their own pipeline);
* categorical (string/bool/category) columns become integer codes ranked by frequency, ``-1``
  for missing or unseen values; only the ``max_levels`` most frequent levels get a code, the
  rest share one "other" code;
* datetime columns are expanded to parts (year, month, day, weekday, day of year, hour, days
  since the epoch);
* ID-like, constant and all-missing columns are dropped, each with its reason.

The learned state is plain data (lists, dicts, strings, numbers) so it saves through skops.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin

from aiaas.automl.errors import InvalidData
from aiaas.automl.target import plain_label
from aiaas.automl.types import Task

__all__ = ["MIN_ROWS", "TabularPreprocessor", "detect_leakage"]

log = logging.getLogger(__name__)

MIN_ROWS = 20
_DT_PARTS = ("year", "month", "day", "weekday", "dayofyear", "hour", "epoch_days")
_DATE_LIKE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}")


def _dtype_name(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_integer_dtype(s):
        return "integer"
    if pd.api.types.is_float_dtype(s):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    return "string"


def _to_datetime(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        out = s
    else:
        out = pd.to_datetime(s.astype("string"), errors="coerce", format="ISO8601", utc=True)
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def _looks_like_datetime(s: pd.Series) -> bool:
    sample = s.dropna().astype("string").head(200)
    if sample.empty or not sample.str.match(_DATE_LIKE).all():
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="ISO8601", utc=True)
    return bool(parsed.notna().mean() >= 0.95)


def _as_strings(s: pd.Series) -> pd.Series:
    """Categorical values as text (missing stays missing)."""
    out = s.astype("object").map(lambda v: v if v is None else str(plain_label(v)))
    return out.where(s.notna(), None)


class TabularPreprocessor(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Raw table → float32 matrix; see the module docstring for the rules."""

    def __init__(self, max_levels: int = 1000, max_onehot: int = 32) -> None:
        self.max_levels = max_levels
        self.max_onehot = max_onehot

    # sklearn API -------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> TabularPreprocessor:
        if not isinstance(X, pd.DataFrame):
            raise InvalidData("expected a pandas DataFrame")
        n = len(X)
        specs: list[dict[str, Any]] = []
        for name in X.columns:
            specs.append(self._fit_column(str(name), X[name], n))
        self.specs_ = specs
        self.input_columns_ = [s["name"] for s in specs]
        self.input_types_ = [s["dtype"] for s in specs]
        names: list[str] = []
        cat: list[int] = []
        high: list[int] = []
        ints: list[int] = []
        for s in specs:
            kind = s["kind"]
            if kind == "numeric":
                if s.get("few_ints"):
                    ints.append(len(names))
                names.append(s["name"])
            elif kind == "categorical":
                (cat if len(s["levels"]) <= self.max_onehot else high).append(len(names))
                names.append(s["name"])
            elif kind == "datetime":
                names.extend(f"{s['name']}.{p}" for p in s["parts"])
        if not names:
            raise InvalidData(
                "no usable feature column (every column is constant, empty or ID-like): "
                + "; ".join(f"{s['name']}: {s.get('reason', '')}" for s in specs)[:300]
            )
        self.feature_names_out_ = names
        self.source_of_feature_ = [
            s["name"]
            for s in specs
            for _ in range(
                len(s["parts"]) if s["kind"] == "datetime" else int(s["kind"] != "dropped")
            )
        ]
        self.categorical_features_ = cat
        self.highcard_features_ = high
        self.lowcard_int_features_ = ints
        self.n_features_in_ = len(specs)
        return self

    def transform(self, X: pd.DataFrame) -> NDArray[np.float32]:
        if not isinstance(X, pd.DataFrame):
            raise InvalidData("expected a pandas DataFrame")
        missing = [s["name"] for s in self.specs_ if s["kind"] != "dropped" and s["name"] not in X]
        if missing:
            raise InvalidData(f"missing input column(s): {', '.join(map(repr, missing[:10]))}")
        cols: list[NDArray[np.float64]] = []
        for s in self.specs_:
            kind = s["kind"]
            if kind == "dropped":
                continue
            col = X[s["name"]]
            if kind == "numeric":
                cols.append(_numeric(col))
            elif kind == "categorical":
                lookup = {v: float(i) for i, v in enumerate(s["levels"])}
                other = float(len(s["levels"])) if s["other"] else -1.0
                cols.append(_codes(_as_strings(col), lookup, other))
            else:
                dt = _to_datetime(col)
                cols.extend(_dt_part(dt, p) for p in s["parts"])
        out = np.column_stack(cols) if cols else np.empty((len(X), 0))
        return np.asarray(out, dtype=np.float32)

    # helpers -----------------------------------------------------------------------------
    def _fit_column(self, name: str, col: pd.Series, n: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": name, "dtype": _dtype_name(col)}
        non_null = col.dropna()
        if non_null.empty:
            return {**spec, "kind": "dropped", "reason": "all values missing"}
        if pd.api.types.is_datetime64_any_dtype(col) or (
            spec["dtype"] == "string" and _looks_like_datetime(col)
        ):
            dt = _to_datetime(col)
            parts = [p for p in _DT_PARTS if np.nanstd(_dt_part(dt, p)) > 0]
            if not parts:
                return {**spec, "kind": "dropped", "reason": "constant"}
            return {**spec, "dtype": "datetime", "kind": "datetime", "parts": parts}
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            values = _numeric(col)
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                return {**spec, "kind": "dropped", "reason": "no finite values"}
            uniq = np.unique(finite)
            if uniq.size <= 1:
                return {**spec, "kind": "dropped", "reason": "constant"}
            integral = bool(np.all(uniq == np.round(uniq)))
            if (
                integral
                and n >= MIN_ROWS
                and uniq.size == finite.size == n
                and (uniq[-1] - uniq[0] + 1) <= 2 * n
            ):
                return {**spec, "kind": "dropped", "reason": "ID-like (unique integer per row)"}
            few = integral and 2 < uniq.size <= 10
            return {**spec, "kind": "numeric", "few_ints": bool(few)}
        text = _as_strings(col).dropna()
        counts = text.value_counts(sort=True)
        if counts.size <= 1:
            return {**spec, "kind": "dropped", "reason": "constant"}
        if n >= MIN_ROWS and counts.size >= 0.95 * len(text) and counts.size > 50:
            return {**spec, "kind": "dropped", "reason": "ID-like (unique value per row)"}
        # order by frequency, ties by value so the coding is deterministic
        ordered = sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
        levels = [str(k) for k, _ in ordered[: self.max_levels]]
        return {
            **spec,
            "kind": "categorical",
            "levels": levels,
            "other": len(ordered) > self.max_levels,
        }

    def report(self) -> dict[str, Any]:
        """Which columns are used and how; which were dropped and why."""
        return {
            "used": {s["name"]: s["kind"] for s in self.specs_ if s["kind"] != "dropped"},
            "dropped": {s["name"]: s["reason"] for s in self.specs_ if s["kind"] == "dropped"},
            "n_features_out": len(self.feature_names_out_),
        }


def _codes(text: pd.Series, lookup: dict[str, float], other: float) -> NDArray[np.float64]:
    """Level → code; unseen → ``other``; missing → -1."""
    codes = text.map(lookup).astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    missing = text.isna().to_numpy()
    codes = np.where(np.isnan(codes), other, codes)
    return np.asarray(np.where(missing, -1.0, codes), dtype=np.float64)


def _numeric(col: pd.Series) -> NDArray[np.float64]:
    if pd.api.types.is_bool_dtype(col):
        return np.asarray(col.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan))
    if not pd.api.types.is_numeric_dtype(col):
        col = pd.to_numeric(col, errors="coerce")
    arr = col.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.where(np.isfinite(arr), arr, np.nan)
    return np.asarray(arr, dtype=np.float64)


def _dt_part(dt: pd.Series, part: str) -> NDArray[np.float64]:
    if part == "epoch_days":
        secs = (dt - pd.Timestamp("1970-01-01")).dt.total_seconds()
        return np.asarray(secs.to_numpy(dtype=np.float64, na_value=np.nan) / 86_400.0)
    attr = {"weekday": "day_of_week", "dayofyear": "day_of_year"}.get(part, part)
    acc = getattr(dt.dt, attr)
    return np.asarray(pd.Series(acc).astype("float64").to_numpy(dtype=np.float64, na_value=np.nan))


def detect_leakage(X: pd.DataFrame, y: NDArray[Any], task: Task, columns: list[str]) -> list[str]:
    """Columns (nearly) identical to, or fully determining, the target."""
    suspects: list[str] = []
    n = len(y)
    for name in columns:
        col = X[name]
        if task == "regression":
            if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                v = _numeric(col)
                ok = np.isfinite(v)
                if ok.sum() > 2 and np.nanstd(v[ok]) > 0:
                    r = np.corrcoef(v[ok], np.asarray(y, dtype=np.float64)[ok])[0, 1]
                    if abs(r) >= 0.999:
                        suspects.append(name)
            continue
        key = _as_strings(col).fillna("\x00missing")
        n_groups = key.nunique()
        if n_groups > max(20, n // 10) or n_groups < 2:
            continue
        frame = pd.DataFrame({"k": key.to_numpy(), "y": y})
        purity = frame.groupby("k")["y"].agg(lambda s: s.value_counts().iloc[0]).sum() / n
        if purity >= 0.999:
            suspects.append(name)
    return suspects
