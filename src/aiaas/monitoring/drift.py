"""Data drift of served inputs against a reference (pure: numpy, scipy, pandas).

The reference is frozen once (:func:`reference`): per numeric column, quantile bin edges
and each bin's mean and count; per categorical column, its most frequent values and an
``other`` bin; a ``missing`` bin for both. A window of served rows is binned with those
frozen edges (:func:`histogram`), so windows merge by adding counts (hour → day) and a
window is read once. :func:`compare` then tests each column as the most used open-source
tool does by default (Evidently), on the bins:

- a reference of at most ``SMALL_REFERENCE`` rows: numeric → two-sample Kolmogorov–Smirnov
  on the binned distributions (binning can only shrink the statistic: conservative);
  categorical → chi-squared on the 2 × k table of counts (for two categories, the same as
  the two-proportion z-test); a column drifts when its p-value, after a Benjamini–Hochberg
  correction across the columns so tested, is below ``alpha``;
- a larger reference: numeric → the Wasserstein distance between the binned
  distributions (bins at their reference means), divided by the reference's standard
  deviation; categorical → the Jensen–Shannon distance; a column drifts at ≥ ``threshold``.

PSI is computed for every column, whatever its test. The dataset drifts when at least
``share`` of the columns do (or, with importances, that share of the total importance).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

SMALL_REFERENCE = 1000
BINS = 20
TOP_K = 20
_EPS = 1e-4  # PSI and Jensen–Shannon: empty bins as this share


@dataclass(frozen=True)
class ColumnReference:
    name: str
    kind: str  # numeric | categorical
    n: int
    #: numeric: the interior edges (bins: (-inf, e0], (e0, e1], …, (e_last, inf), missing)
    edges: list[float] = field(default_factory=list)
    #: numeric: each bin's mean in the reference (an empty bin: its edge), and the std
    centers: list[float] = field(default_factory=list)
    std: float = 0.0
    #: categorical: the kept values (bins: each of them, other, missing)
    categories: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Reference:
    columns: list[ColumnReference]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        return cls([ColumnReference(**c) for c in data["columns"]])


@dataclass(frozen=True)
class ColumnDrift:
    name: str
    kind: str
    test: str  # ks | chi2 | wasserstein | jensen_shannon
    statistic: float
    p_value: float | None  # the corrected one, for ks and chi2
    threshold: float
    drifted: bool
    psi: float
    n_reference: int
    n_current: int


@dataclass(frozen=True)
class DriftReport:
    columns: list[ColumnDrift]
    share: float
    drifted_share: float
    drifted: bool


def reference(
    columns: dict[str, NDArray[Any]], kinds: dict[str, str], *, bins: int = BINS, top_k: int = TOP_K
) -> Reference:
    """Freeze the reference statistics of ``columns`` (name → values; ``kinds`` says which
    are ``numeric``, the rest are categorical)."""
    out = []
    for name, values in columns.items():
        if kinds.get(name) == "numeric":
            out.append(_numeric_reference(name, np.asarray(values, dtype=np.float64), bins))
        else:
            out.append(_categorical_reference(name, values, top_k))
    return Reference(out)


def _numeric_reference(name: str, values: NDArray[np.float64], bins: int) -> ColumnReference:
    finite = values[np.isfinite(values)]
    if len(finite):
        qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
        edges = np.unique(qs)
    else:
        edges = np.array([], dtype=np.float64)
    ref = ColumnReference(name, "numeric", len(values), edges=edges.tolist())
    counts = _numeric_counts(ref, values)
    index = np.searchsorted(edges, finite, side="left")
    sums = np.bincount(index, weights=finite, minlength=len(edges) + 1)
    filled = counts[:-1]
    fallback = np.concatenate([edges[:1], edges]) if len(edges) else np.zeros(1)
    centers = np.where(filled > 0, sums / np.maximum(filled, 1), fallback[: len(filled)])
    std = float(np.std(finite)) if len(finite) else 0.0
    return ColumnReference(
        name, "numeric", len(values), edges=edges.tolist(), centers=centers.tolist(), std=std,
        counts=counts.tolist(),
    )  # fmt: skip


def _categorical_reference(name: str, values: Any, top_k: int) -> ColumnReference:
    import pandas as pd

    texts = pd.Series(values, dtype="object").map(_text, na_action="ignore")
    kept = [str(v) for v in texts.value_counts().index[:top_k]]
    ref = ColumnReference(name, "categorical", len(texts), categories=kept)
    return ColumnReference(
        name, "categorical", len(texts), categories=kept, counts=histogram(ref, values).tolist()
    )


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def histogram(ref: ColumnReference, values: Any) -> NDArray[np.int64]:
    """``values`` counted into the frozen bins of ``ref`` (windows add up)."""
    if ref.kind == "numeric":
        return _numeric_counts(ref, np.asarray(values, dtype=np.float64))
    import pandas as pd

    # each distinct value once (hashing in C), then only the distinct ones as text
    codes, uniques = pd.factorize(pd.Series(values, dtype="object"), use_na_sentinel=True)
    texts = [_text(v) for v in uniques]
    kept = pd.Index(ref.categories, dtype="object").get_indexer(texts) if texts else []
    k = len(ref.categories)
    lookup = np.append(np.where(np.asarray(kept) < 0, k, kept), k + 1).astype(np.int64)
    index = lookup[codes]  # code -1 (missing) → the last entry: the missing bin
    return np.bincount(index, minlength=k + 2).astype(np.int64)


def _numeric_counts(ref: ColumnReference, values: NDArray[np.float64]) -> NDArray[np.int64]:
    edges = np.asarray(ref.edges, dtype=np.float64)
    finite = np.isfinite(values)
    index = np.searchsorted(edges, values[finite], side="left")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return np.append(counts, int((~finite).sum())).astype(np.int64)


def compare(
    ref: Reference,
    current: dict[str, NDArray[np.int64]],
    *,
    alpha: float = 0.05,
    threshold: float = 0.1,
    share: float = 0.5,
    importance: dict[str, float] | None = None,
) -> DriftReport:
    """Test each column's ``current`` counts (from :func:`histogram`) against ``ref``."""
    raw: list[tuple[ColumnReference, str, float, float | None, NDArray[np.int64]]] = []
    for col in ref.columns:
        counts = np.asarray(current[col.name], dtype=np.int64)
        test, stat, p = _test(col, np.asarray(col.counts, dtype=np.int64), counts)
        raw.append((col, test, stat, p, counts))
    p_values = [p for _, _, _, p, _ in raw if p is not None]
    corrected = iter(_benjamini_hochberg(p_values))
    found = []
    for col, test, stat, p, counts in raw:
        psi = _psi(np.asarray(col.counts, dtype=np.int64), counts)
        n = int(counts.sum())
        if p is not None:
            q = next(corrected)
            found.append(ColumnDrift(col.name, col.kind, test, stat, q, alpha, q < alpha, psi,
                                     col.n, n))  # fmt: skip
        else:
            found.append(ColumnDrift(col.name, col.kind, test, stat, None, threshold,
                                     stat >= threshold, psi, col.n, n))  # fmt: skip
    weights = importance or {}
    total = sum(weights.get(c.name, 0.0) for c in found) if weights else float(len(found))
    hit = (
        sum(weights.get(c.name, 0.0) for c in found if c.drifted)
        if weights
        else float(sum(c.drifted for c in found))
    )
    drifted_share = hit / total if total > 0 else 0.0
    return DriftReport(found, share, drifted_share, bool(found) and drifted_share >= share)


def _test(
    col: ColumnReference, ref: NDArray[np.int64], cur: NDArray[np.int64]
) -> tuple[str, float, float | None]:
    if cur.sum() == 0 or ref.sum() == 0:
        return ("ks" if col.kind == "numeric" else "chi2"), 0.0, 1.0
    small = col.n <= SMALL_REFERENCE
    if col.kind == "numeric":
        # the value bins only: missing values are a share of their own (PSI sees them)
        r, c = ref[:-1].astype(np.float64), cur[:-1].astype(np.float64)
        if r.sum() == 0 or c.sum() == 0:
            return "ks", 0.0, 1.0
        if small:
            return _ks(r, c)
        return "wasserstein", _wasserstein(col, r, c), None
    if small:
        return _chi2(ref, cur)
    return "jensen_shannon", _jensen_shannon(ref, cur), None


def _ks(ref: NDArray[np.float64], cur: NDArray[np.float64]) -> tuple[str, float, float]:
    from scipy.stats import kstwo

    n, m = ref.sum(), cur.sum()
    d = float(np.max(np.abs(np.cumsum(ref) / n - np.cumsum(cur) / m)))
    en = round(n * m / (n + m))
    return "ks", d, float(kstwo.sf(d, max(en, 1)))


def _chi2(ref: NDArray[np.int64], cur: NDArray[np.int64]) -> tuple[str, float, float]:
    from scipy.stats import chi2_contingency

    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return "chi2", 0.0, 1.0
    result = chi2_contingency(table, correction=False)
    return "chi2", float(result.statistic), float(result.pvalue)


def _wasserstein(col: ColumnReference, ref: NDArray[np.float64], cur: NDArray[np.float64]) -> float:
    from scipy.stats import wasserstein_distance

    centers = np.asarray(col.centers, dtype=np.float64)
    distance = float(wasserstein_distance(centers, centers, ref, cur))
    return distance / col.std if col.std > 0 else (0.0 if distance == 0 else math.inf)


def _shares(counts: NDArray[Any]) -> NDArray[np.float64]:
    total = counts.sum()
    shares = counts / total if total else np.zeros(len(counts))
    return np.maximum(shares, _EPS)


def _jensen_shannon(ref: NDArray[np.int64], cur: NDArray[np.int64]) -> float:
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(_shares(ref), _shares(cur)))


def _psi(ref: NDArray[np.int64], cur: NDArray[np.int64]) -> float:
    if cur.sum() == 0 or ref.sum() == 0:
        return 0.0
    p, q = _shares(ref), _shares(cur)
    return float(np.sum((q - p) * np.log(q / p)))


def _benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Adjusted p-values (the false discovery rate across the columns), in input order."""
    if not p_values:
        return []
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return [float(v) for v in out]
