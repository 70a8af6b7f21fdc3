"""Profile numbers against independent computations (pandas/numpy) on the PMLB datasets,
and the done-when check: every shared dataset uploads with the right schema and row count."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from aiaas.data.ingest import convert_to_parquet
from aiaas.data.limits import ingest_limits, profile_limits
from aiaas.data.profile import profile_parquet
from aiaas.settings import Settings
from tests.data.conftest import MOVIELENS, PMLB

INGEST = ingest_limits(Settings())
PROFILE = profile_limits(Settings())

PMLB_ROWS = {
    "adult": 48842,
    "magic": 19020,
    "hypothyroid": 3163,
    "wine_quality_white": 4898,
    "satimage": 6435,
    "splice": 3188,
    "537_houses": 20640,
    "1028_SWD": 1000,
}
pytestmark = pytest.mark.skipif(not PMLB.exists(), reason="../shared/datasets not present")


@pytest.mark.parametrize("name", sorted(PMLB_ROWS))
def test_pmlb_profile_matches_pandas(tmp_path, name):
    src = tmp_path / "upload"
    shutil.copyfile(PMLB / f"{name}.tsv.gz", src)
    result = convert_to_parquet(src, tmp_path, filename=f"{name}.tsv.gz", limits=INGEST)
    assert result.row_count == PMLB_ROWS[name]
    assert result.compression == "gzip"
    report = profile_parquet(result.parquet_path, replace(PROFILE, threads=1))
    df = pd.read_csv(PMLB / f"{name}.tsv.gz", sep="\t")
    assert report["row_count"] == len(df)
    assert [c["name"] for c in report["columns"]] == list(df.columns)
    assert report["duplicate_rows"] == int(df.duplicated().sum())
    for col in report["columns"]:
        s = df[col["name"]]
        assert col["type"] in ("integer", "float"), col
        assert col["missing"] == int(s.isna().sum())
        assert col["distinct"] == s.nunique()
        assert col["min"] == pytest.approx(s.min())
        assert col["max"] == pytest.approx(s.max())
        assert col["mean"] == pytest.approx(s.mean(), rel=1e-9, abs=1e-9)
        assert col["std"] == pytest.approx(s.std(ddof=1), rel=1e-9, abs=1e-9)
        for q in (5, 25, 50, 75, 95):
            assert col["quantiles"][f"p{q:02d}"] == pytest.approx(s.quantile(q / 100), abs=1e-9)
        q1, q3 = s.quantile(0.25), s.quantile(0.75)
        lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        assert col["outliers"]["count"] == int(((s < lo) | (s > hi)).sum())
        counts = col["histogram"]["counts"]
        assert sum(counts) == len(s)
        expected, _ = np.histogram(s, bins=np.asarray(col["histogram"]["edges"]))
        # DuckDB bins are (lo, hi], numpy's [lo, hi): totals match, bins agree within ties
        assert np.abs(np.cumsum(counts) - np.cumsum(expected)).max() <= s.value_counts().max()
        if "top_values" in col:
            top = s.value_counts()
            assert col["top_values"][0]["count"] == int(top.iloc[0])
    q = report["quality"]
    assert q["completeness"] == 1.0  # PMLB has no missing values
    assert q["uniqueness"] == pytest.approx(1 - df.duplicated().sum() / len(df), abs=1e-4)
    assert 0 < q["score"] <= 100
    assert report["anomaly"]["method"] == "isolation_forest"
    assert 0 <= report["anomaly"]["share"] <= 1


def test_every_shared_dataset_uploads(client, tenants, upload):
    h = tenants.a.headers("developer")
    files = sorted(PMLB.glob("*.tsv.gz")) + sorted(MOVIELENS.glob("*.csv"))
    for path in files:
        r = upload(h, path.read_bytes(), name=path.name, filename=path.name)
        assert r.status_code == 201, (path.name, r.text)
        v = r.json()["version"]
        ds = r.json()["id"]
        if path.name == "ratings.csv":
            assert v["row_count"] == 100_000
            assert [(c["name"], c["type"]) for c in v["schema"]] == [
                ("user_id", "integer"),
                ("item_id", "integer"),
                ("rating", "integer"),
                ("timestamp", "integer"),
            ]
        elif path.name == "items.csv":
            assert v["row_count"] == 1682
            types = {c["name"]: c["type"] for c in v["schema"]}
            assert types["item_id"] == "integer"
            assert types["title"] == "string"
            assert types["release_date"] in ("datetime", "string")
        else:
            stem = path.name.removesuffix(".tsv.gz")
            assert v["row_count"] == PMLB_ROWS[stem]
            assert v["schema"][-1]["name"] == "target"
        prof = client.get(f"/api/v1/datasets/{ds}/versions/1/profile", headers=h).json()
        assert prof["row_count"] == v["row_count"]


def test_text_findings_and_pii_in_profile(tmp_path):
    rows = ["id,email,amount_text,when_text,mixed,const,card"]
    for i in range(200):
        rows.append(
            f"{i},user{i}@example.com,{i * 1.5},2024-01-{i % 28 + 1:02d},"
            f"{i if i % 2 else 'n/a'},same,4111 1111 1111 1111"
        )
    src = tmp_path / "upload"
    src.write_text("\n".join(rows) + "\n")
    result = convert_to_parquet(
        src,
        tmp_path,
        options=__import__("aiaas.data.ingest", fromlist=["x"]).IngestOptions(),
        limits=INGEST,
    )
    report = profile_parquet(result.parquet_path, PROFILE)
    cols = {c["name"]: c for c in report["columns"]}
    kinds = {(f["column"], f["kind"]) for f in report["findings"]}
    assert ("id", "id_like") in kinds
    assert ("const", "constant") in kinds
    assert ("mixed", "mixed_types") in kinds
    assert cols["email"]["pii"][0]["kind"] == "email"
    assert cols["card"]["pii"][0]["kind"] == "payment_card"
    # personal values never appear in the report
    assert cols["card"]["top_values"][0]["value"].endswith("11")
    assert "4111" not in str(report)
    assert "@example.com" not in str(report)
    assert cols["amount_text"]["type"] == "float"  # DuckDB typed it; not text
    assert report["quality"]["consistency"] < 1.0


def test_float_extremes_profile_without_inf_in_sql(tmp_path):
    """Values near the double's limit: max - min, the bin edges and the IQR fences overflow to
    inf, which once went into the SQL as a bare ``inf`` (a 500 on upload)."""
    import json
    import warnings

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "extremes.parquet"
    spread = [-1.7e308, 1.7e308] + [float(i) for i in range(50)]
    halves = [1.7e308] * 26 + [-1.7e308] * 26
    pq.write_table(pa.table({"spread": spread, "halves": halves}), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor a float32 overflow in the anomaly forest
        report = profile_parquet(path, PROFILE)
    json.dumps(report, allow_nan=False)  # every number in the report is finite
    cols = {c["name"]: c for c in report["columns"]}
    for col in cols.values():
        edges = col["histogram"]["edges"]
        assert (edges[0], edges[-1]) == (-1.7e308, 1.7e308)
        assert edges == sorted(set(edges))  # increasing
        assert sum(col["histogram"]["counts"]) == 52
    assert cols["spread"]["histogram"]["counts"][0] == 1
    assert cols["spread"]["histogram"]["counts"][-1] == 1
    assert cols["spread"]["outliers"]["count"] == 2
    fences = cols["halves"]["outliers"]
    assert (fences["lower"], fences["upper"], fences["count"]) == (
        -1.7976931348623157e308,
        1.7976931348623157e308,
        0,
    )
