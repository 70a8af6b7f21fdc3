"""``make_dataset``: a dataset with one version, stored without HTTP or the ingest process,
reads back through the API like an upload, and only for its own organization."""

from __future__ import annotations

import io
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import make_dataset
from tests.data.conftest import data_files
from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem

PEOPLE = [
    {"id": 1, "name": "alice", "score": 1.5},
    {"id": 2, "name": "bob", "score": None},
]


def sql(client, headers, query):
    return client.post("/api/v1/sql", headers=headers, json={"query": query})


def test_reads_back_through_the_api(client, tenants, settings):
    ds = make_dataset(settings, tenants.a, PEOPLE, name="people", description="two people")
    assert (ds.latest_version, [v.number for v in ds.versions]) == (1, [1])
    h = tenants.a.headers("viewer")

    r = client.get(f"/api/v1/datasets/{ds.id}", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["name"], body["description"]) == (ds.id, "people", "two people")
    version = body["version"]
    assert version["id"] == ds.versions[0].id
    assert (version["number"], version["row_count"], version["column_count"]) == (1, 2, 3)
    assert version["schema"] == [
        {"name": "id", "type": "integer", "physical": "BIGINT", "nullable": False},
        {"name": "name", "type": "string", "physical": "VARCHAR", "nullable": False},
        {"name": "score", "type": "float", "physical": "DOUBLE", "nullable": True},
    ]
    assert version["source"] == {"kind": "test_factory", "rows": 2}
    assert version["parent_version"] is None

    r = client.get(f"/api/v1/datasets/{ds.id}/versions/1", headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == version
    r = client.get(f"/api/v1/datasets/{ds.id}/versions", headers=h)
    assert r.json() == [version]
    profile = client.get(f"/api/v1/datasets/{ds.id}/versions/1/profile", headers=h).json()
    assert profile["row_count"] == 2

    r = client.get(f"/api/v1/datasets/{ds.id}/versions/1/download", headers=h)
    assert r.status_code == 200, r.text
    assert r.text.splitlines() == ['"id","name","score"', '1,"alice",1.5', '2,"bob",']
    r = client.get(f"/api/v1/datasets/{ds.id}/versions/1/download?format=parquet", headers=h)
    assert r.status_code == 200, r.text
    assert pq.read_table(io.BytesIO(r.content)).to_pylist() == PEOPLE

    r = sql(client, h, "SELECT name, score FROM people ORDER BY id")
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [["alice", 1.5], ["bob", None]]
    assert sql(client, h, 'SELECT count(*) FROM "people@1"').json()["rows"] == [[2]]


def test_pyarrow_table_keeps_its_types(client, tenants, settings):
    table = pa.table(
        {
            "i": pa.array([1, 2], pa.int32()),
            "f": [0.5, None],
            "s": ["x", "y"],
            "b": [True, False],
            "t": pa.array([datetime(2024, 1, 1), datetime(2024, 1, 2)], pa.timestamp("us")),
        }
    )
    ds = make_dataset(settings, tenants.a, table, name="typed")
    r = client.get(f"/api/v1/datasets/{ds.id}", headers=tenants.a.headers("viewer"))
    assert [(c["name"], c["type"], c["physical"]) for c in r.json()["version"]["schema"]] == [
        ("i", "integer", "INTEGER"),
        ("f", "float", "DOUBLE"),
        ("s", "string", "VARCHAR"),
        ("b", "boolean", "BOOLEAN"),
        ("t", "datetime", "TIMESTAMP"),
    ]
    assert r.json()["version"]["row_count"] == 2


def test_another_organization_gets_404(client, tenants, settings):
    ds = make_dataset(settings, tenants.a, PEOPLE, name="people")
    hb = tenants.b.headers("owner")
    base = f"/api/v1/datasets/{ds.id}"
    assert_cross_tenant_404(client, base, hb, json={"description": "mine now"})
    for url in (
        f"{base}/versions",
        f"{base}/versions/1",
        f"{base}/versions/1/profile",
        f"{base}/versions/1/download",
        f"{base}/versions/1/download?format=parquet",
    ):
        assert_cross_tenant_404(client, url, hb, methods=("GET",))
    assert_not_listed(client, "/api/v1/datasets", hb, ds.id)
    body = assert_problem(sql(client, hb, "SELECT * FROM people"), 422, "invalid_input")
    assert body["detail"].startswith("Catalog Error: Table with name people does not exist!")

    # the same name in the other organization is its own dataset, with its own rows
    make_dataset(settings, tenants.b, [{"id": 9, "name": "zoe", "score": 0.0}], name="people")
    assert sql(client, hb, "SELECT name FROM people").json()["rows"] == [["zoe"]]
    ha = tenants.a.headers("viewer")
    assert sql(client, ha, "SELECT name FROM people ORDER BY id").json()["rows"] == [
        ["alice"],
        ["bob"],
    ]
    assert client.get(base, headers=ha).json()["name"] == "people"


def test_stores_the_version_files_and_no_scratch(tenants, settings):
    ds = make_dataset(settings, tenants.a, PEOPLE)
    artifacts = settings.data_dir / "artifacts"
    stored = [str(p.relative_to(artifacts)) for p in data_files(settings)]
    prefix = f"orgs/{tenants.a.org_id}/datasets/{ds.id}/{ds.versions[0].id}"
    assert stored == [f"{prefix}/data.parquet", f"{prefix}/profile.json"]
