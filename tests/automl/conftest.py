"""Small datasets for the AutoML tests (sklearn's bundled data and shared/datasets/pmlb)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import SHARED_DATASETS, shared_dataset

PMLB = SHARED_DATASETS / "pmlb"


def pmlb(name: str, n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """A PMLB dataset from shared/ (optionally a random sample of ``n`` rows).

    Missing: the test skips, or fails when CI=true (:func:`tests.helpers.shared_dataset`).
    """
    path = shared_dataset("pmlb", f"{name}.tsv.gz")
    df = pd.read_csv(path, sep="\t")
    if n is not None and n < len(df):
        df = df.sample(n=n, random_state=seed).reset_index(drop=True)
    return df


@pytest.fixture(scope="session")
def binary_df() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    df = data.frame.rename(columns={"target": "label"})
    df["label"] = np.where(df["label"] == 1, "benign", "malignant")
    return df


@pytest.fixture(scope="session")
def multiclass_df() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    return load_wine(as_frame=True).frame


@pytest.fixture(scope="session")
def regression_df() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame


@pytest.fixture(scope="session")
def mixed_df() -> pd.DataFrame:
    """Numbers, strings, datetimes, missing values, an ID column and a constant column."""
    rng = np.random.default_rng(0)
    n = 400
    x1 = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue", "ünïcode"], size=n)
    when = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D")
    logit = 1.5 * x1 + (colour == "red") * 1.0 - (when.month > 6) * 0.8
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    x2 = rng.normal(size=n)
    x2[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "x1": x1,
            "x2": x2,
            "colour": colour,
            "when": when.strftime("%Y-%m-%d"),
            "constant": 7,
            "y": y,
        }
    )
