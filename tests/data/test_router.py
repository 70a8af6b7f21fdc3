"""Dataset routes end to end: upload, versions, download, append, transform, delete, isolation."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from tests.data.conftest import data_files
from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem

CSV = b"id,name,score,when\n1,alice,1.5,2024-01-02\n2,bob,,2024-02-03\n3,carol,3.5,2024-03-04\n"


def test_upload_get_list_download(client, tenants, upload):
    h = tenants.a.headers("developer")
    r = upload(h, CSV, name="people")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("ds_")
    assert body["name"] == "people"
    v = body["version"]
    assert v["number"] == 1
    assert v["row_count"] == 3
    assert [(c["name"], c["type"]) for c in v["schema"]] == [
        ("id", "integer"),
        ("name", "string"),
        ("score", "float"),
        ("when", "datetime"),
    ]
    assert len(v["sha256"]) == 64
    assert v["source"]["kind"] == "upload"
    assert v["source"]["format"] == "csv"
    assert v["parent_version"] is None

    ds = body["id"]
    assert client.get(f"/api/v1/datasets/{ds}", headers=h).json()["version"]["row_count"] == 3
    listed = client.get("/api/v1/datasets", headers=tenants.a.headers("viewer")).json()
    assert [d["id"] for d in listed["items"]] == [ds]

    csv = client.get(f"/api/v1/datasets/{ds}/versions/1/download?format=csv", headers=h)
    assert csv.status_code == 200
    assert csv.text.splitlines()[0] == '"id","name","score","when"'
    assert len(csv.text.strip().splitlines()) == 4
    pqr = client.get(f"/api/v1/datasets/{ds}/versions/1/download?format=parquet", headers=h)
    table = pq.read_table(io.BytesIO(pqr.content))
    assert table.num_rows == 3
    assert table.column("name").to_pylist() == ["alice", "bob", "carol"]

    prof = client.get(f"/api/v1/datasets/{ds}/versions/1/profile", headers=h).json()
    score = next(c for c in prof["columns"] if c["name"] == "score")
    assert score["missing"] == 1
    assert score["mean"] == pytest.approx(2.5)
    assert 0 <= prof["quality"]["score"] <= 100


def test_new_version_append_transform_lineage(client, tenants, upload):
    h = tenants.a.headers("developer")
    ds = upload(h, CSV, name="people").json()["id"]
    r = client.post(
        f"/api/v1/datasets/{ds}/versions",
        headers=h,
        files={"file": ("v2.csv", CSV + b"4,dave,4.5,2024-04-05\n")},
    )
    assert r.status_code == 201, r.text
    assert r.json()["number"] == 2
    assert r.json()["parent_version"] == 1
    r = client.post(
        f"/api/v1/datasets/{ds}/rows",
        headers=h,
        json={"records": [{"id": 5, "name": "eve", "score": 5, "when": "2024-05-06"}, {"id": 6}]},
    )
    assert r.status_code == 201, r.text
    assert r.json()["number"] == 3
    assert r.json()["row_count"] == 6
    assert r.json()["source"] == {"kind": "append", "records": 2}

    recipe = {
        "steps": [
            {"op": "impute", "columns": ["score"], "strategy": "mean"},
            {"op": "filter", "conditions": [{"column": "id", "cmp": "le", "value": 5}]},
            {"op": "hash", "columns": ["name"]},
        ]
    }
    r = client.post(f"/api/v1/datasets/{ds}/versions/3/transform", headers=h, json=recipe)
    assert r.status_code == 201, r.text
    v4 = r.json()
    assert v4["number"] == 4
    assert v4["parent_version"] == 3
    assert v4["row_count"] == 5
    assert [s["op"] for s in v4["recipe"]] == ["impute", "filter", "hash"]
    versions = client.get(f"/api/v1/datasets/{ds}/versions", headers=h).json()
    assert [v["number"] for v in versions] == [4, 3, 2, 1]
    assert client.get(f"/api/v1/datasets/{ds}", headers=h).json()["version"]["number"] == 4

    bad = {
        "steps": [
            {"op": "drop_columns", "columns": ["id"]},
            {"op": "cast", "columns": {"nope": "integer"}},
        ]
    }
    r = client.post(f"/api/v1/datasets/{ds}/versions/4/transform", headers=h, json=bad)
    body = assert_problem(r, 422)
    assert "step 1 (cast)" in body["detail"]
    r = client.post(f"/api/v1/datasets/{ds}/rows", headers=h, json={"records": [{"nope": 1}]})
    assert_problem(r, 422)
    r = client.post(
        f"/api/v1/datasets/{ds}/rows", headers=h, json={"records": [{"id": "not a number"}]}
    )
    assert_problem(r, 422)
    assert len(client.get(f"/api/v1/datasets/{ds}/versions", headers=h).json()) == 4


def test_patch_delete_and_files_removed(client, tenants, upload, settings):
    h = tenants.a.headers("developer")
    ds = upload(h, CSV, name="people").json()["id"]
    upload(h, CSV, name="other")
    r = client.patch(f"/api/v1/datasets/{ds}", headers=h, json={"description": "d"})
    assert r.status_code == 200
    assert r.json()["description"] == "d"
    assert_problem(client.patch(f"/api/v1/datasets/{ds}", headers=h, json={"name": "other"}), 409)
    assert_problem(upload(h, CSV, name="people"), 409)
    before = len(data_files(settings))
    assert client.delete(f"/api/v1/datasets/{ds}", headers=h).status_code == 204
    assert len(data_files(settings)) == before - 2
    assert_problem(client.get(f"/api/v1/datasets/{ds}", headers=h), 404)


def test_roles(client, tenants, upload):
    assert_problem(upload(tenants.a.headers("viewer"), CSV), 403)
    ds = upload(tenants.a.headers("developer"), CSV).json()["id"]
    assert (
        client.get(f"/api/v1/datasets/{ds}", headers=tenants.a.headers("viewer")).status_code == 200
    )
    assert_problem(
        client.delete(f"/api/v1/datasets/{ds}", headers=tenants.a.headers("viewer")), 403
    )
    body = {"name": "x", "url": "postgresql://u@localhost/db", "query": "select 1"}
    r = client.post("/api/v1/datasets/import", headers=tenants.a.headers("developer"), json=body)
    assert_problem(r, 403)


def test_cross_tenant_isolation(client, tenants, upload):
    ha, hb = tenants.a.headers("owner"), tenants.b.headers("owner")
    ds = upload(ha, CSV, name="secret-a").json()["id"]
    assert_cross_tenant_404(client, f"/api/v1/datasets/{ds}", hb, json={"description": "x"})
    for url in (
        f"/api/v1/datasets/{ds}/versions",
        f"/api/v1/datasets/{ds}/versions/1",
        f"/api/v1/datasets/{ds}/versions/1/profile",
        f"/api/v1/datasets/{ds}/versions/1/download?format=csv",
        f"/api/v1/datasets/{ds}/versions/1/download?format=parquet",
    ):
        assert_cross_tenant_404(client, url, hb, methods=("GET",))
    assert_cross_tenant_404(
        client, f"/api/v1/datasets/{ds}/rows", hb, methods=("POST",), json={"records": [{"id": 1}]}
    )
    assert_cross_tenant_404(
        client,
        f"/api/v1/datasets/{ds}/versions/1/transform",
        hb,
        methods=("POST",),
        json={"steps": [{"op": "drop_duplicates"}]},
    )
    r = client.post(f"/api/v1/datasets/{ds}/versions", headers=hb, files={"file": ("x.csv", CSV)})
    assert_problem(r, 404)
    assert_not_listed(client, "/api/v1/datasets", hb, ds)
    # same name in the other org is fine (names are unique per org)
    assert upload(hb, CSV, name="secret-a").status_code == 201
    # and A's data is untouched
    assert client.get(f"/api/v1/datasets/{ds}", headers=ha).json()["version"]["number"] == 1
