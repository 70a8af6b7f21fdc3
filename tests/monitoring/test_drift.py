"""Drift (``aiaas.monitoring.drift``) on real data: a shifted feature is found, an unshifted
sample is not, and the false-positive rate on unshifted windows is measured and bounded.

PMLB's ``adult`` (48,842 rows: 9 numeric columns, 5 integer-encoded categorical ones, kept as
categories here) and ``magic`` (19,020 rows, 10 numeric columns), split at random into a
reference and windows from the same distribution.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aiaas.monitoring import drift
from tests.helpers import shared_dataset

ADULT_CATEGORIES = ("workclass", "marital-status", "occupation", "relationship", "race")


def load(name: str) -> pd.DataFrame:
    return pd.read_csv(shared_dataset("pmlb", f"{name}.tsv.gz"), sep="\t").drop(columns="target")


def kinds(frame: pd.DataFrame) -> dict[str, str]:
    return {c: ("categorical" if c in ADULT_CATEGORIES else "numeric") for c in frame.columns}


def split(frame: pd.DataFrame, n_ref: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return shuffled.iloc[:n_ref], shuffled.iloc[n_ref:]


def freeze(ref: pd.DataFrame) -> drift.Reference:
    return drift.reference({c: ref[c].to_numpy() for c in ref.columns}, kinds(ref))


def report(ref: drift.Reference, window: pd.DataFrame, **options: Any) -> drift.DriftReport:
    counts = {c.name: drift.histogram(c, window[c.name].to_numpy()) for c in ref.columns}
    return drift.compare(ref, counts, **options)


@pytest.mark.parametrize("n_ref", [20_000, 800], ids=["large-reference", "small-reference"])
def test_a_shifted_feature_is_found_and_the_rest_is_not(n_ref: int) -> None:
    frame = load("adult")
    ref_frame, rest = split(frame, n_ref)
    ref = freeze(ref_frame)
    window = rest.iloc[:5000].copy()
    same = report(ref, window)
    assert [c.name for c in same.columns if c.drifted] == []
    assert not same.drifted
    tests = {c.name: c.test for c in same.columns}
    if n_ref > drift.SMALL_REFERENCE:
        assert (tests["age"], tests["race"]) == ("wasserstein", "jensen_shannon")
    else:
        assert (tests["age"], tests["race"]) == ("ks", "chi2")

    window["age"] = window["age"] + 8  # the population grew older
    window["relationship"] = 0  # and one category took over
    moved = report(ref, window)
    assert sorted(c.name for c in moved.columns if c.drifted) == ["age", "relationship"]
    by_name = {c.name: c for c in moved.columns}
    assert by_name["age"].psi > 0.1 > by_name["hours-per-week"].psi
    assert not moved.drifted  # 2 of 14 columns: below the default share of 0.5
    weighted = report(ref, window, importance={"age": 3.0, "capital-gain": 1.0})
    assert weighted.drifted
    assert weighted.drifted_share == 0.75


def test_false_positive_rate_on_unshifted_windows() -> None:
    """Windows drawn from the reference's own distribution: the share of (window, column)
    pairs flagged, for both kinds of test, stays near or under the tests' level."""
    frame = load("magic")
    ref_frame, rest = split(frame, 10_000, seed=1)
    ref = freeze(ref_frame)
    small_ref = freeze(ref_frame.iloc[:800])
    rng = np.random.default_rng(2)
    flagged = {"large": 0, "small": 0}
    dataset_flags = 0
    windows = 40
    for _ in range(windows):
        window = rest.iloc[rng.choice(len(rest), size=1000, replace=False)]
        large = report(ref, window)
        small = report(small_ref, window)
        flagged["large"] += sum(c.drifted for c in large.columns)
        flagged["small"] += sum(c.drifted for c in small.columns)
        dataset_flags += large.drifted + small.drifted
    pairs = windows * len(ref.columns)
    rates = {k: v / pairs for k, v in flagged.items()}
    # measured (40 windows of 1,000 rows, 10 columns): in the closing note of the issue
    record = f"false-positive rate per column: {rates}, dataset-level {dataset_flags}/{2 * windows}"
    sys.stderr.write(record + "\n")
    assert rates["large"] <= 0.02  # a normed Wasserstein of 0.1 is far above sampling noise
    assert rates["small"] <= 0.05  # Benjamini–Hochberg at 0.05 across the columns
    assert dataset_flags == 0


def test_windows_merge_by_adding_counts_and_the_reference_round_trips() -> None:
    frame = load("adult")
    ref = freeze(split(frame, 5000)[0])
    assert drift.Reference.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref
    a, b = frame.iloc[:700], frame.iloc[700:1500]
    for col in ref.columns:
        merged = drift.histogram(col, a[col.name].to_numpy()) + drift.histogram(
            col, b[col.name].to_numpy()
        )
        whole = drift.histogram(col, pd.concat([a, b])[col.name].to_numpy())
        assert merged.tolist() == whole.tolist(), col.name
        assert int(whole.sum()) == 1500


def test_missing_unseen_and_degenerate_columns() -> None:
    ref = drift.reference(
        {
            "x": np.r_[np.arange(2000.0), [np.nan] * 10],
            "const": np.ones(2010),
            "colour": np.array(["red", "green"] * 1000 + [None] * 10, dtype=object),
        },
        {"x": "numeric", "const": "numeric", "colour": "categorical"},
    )
    col = {c.name: c for c in ref.columns}
    assert col["x"].counts[-1] == 10  # the missing bin
    assert col["colour"].categories == ["red", "green"]
    window = {
        "x": np.r_[np.arange(0.0, 2000.0, 2.0), [np.nan] * 900, [np.inf] * 100],
        "const": np.ones(2000),
        "colour": np.array(["blue"] * 1500 + ["red"] * 500, dtype=object),
    }
    counts = {k: drift.histogram(col[k], v) for k, v in window.items()}
    assert counts["colour"].tolist() == [500, 0, 1500, 0]  # red, green, other, missing
    assert counts["x"][-1] == 1000  # NaN and ±inf: missing
    found = {c.name: c for c in drift.compare(ref, counts).columns}
    assert found["colour"].drifted  # unseen categories took over
    assert found["x"].psi > 1  # most values missing now: PSI sees it
    assert not found["const"].drifted
    empty = drift.compare(ref, {k: np.zeros(len(col[k].counts), dtype=np.int64) for k in col})
    assert not empty.drifted
    assert all(c.n_current == 0 and not c.drifted for c in empty.columns)
