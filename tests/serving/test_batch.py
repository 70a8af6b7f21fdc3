"""Batch predictions: API → queue → worker thread → sandboxed scoring child → a new dataset.

The scored dataset's predictions are the model's own (``automl.load(dir).predict_proba``);
its input columns are carried over; its version says where it comes from. Plus the
endpoint's primary version, idempotency, cancel (queued and running), bad input at submit
and at run time, roles and tenant isolation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from aiaas.data.models import Dataset, DatasetVersion
from aiaas.jobs.models import JobEvent
from aiaas.settings import Settings
from aiaas.storage import get_store
from tests.conftest import Tenant, Tenants, make_dataset
from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem
from tests.jobs.conftest import Workers
from tests.registry.conftest import Register, saved_model_without_onnx  # noqa: F401
from tests.serving.conftest import COLOURS, TOLERANCE, classes, reference

URL = "/api/v1/batch-predictions"
CHUNK_ROWS = 97  # several chunks for a few hundred rows, the last one short


@pytest.fixture
def workers(settings: Settings) -> Iterator[Workers]:
    """Embedded workers scoring in small chunks (no warm training process: none trains)."""
    jobs = settings.jobs.model_copy(
        update={"batch_chunk_rows": CHUNK_ROWS, "warm_training_process": False}
    )
    w = Workers(settings.model_copy(update={"jobs": jobs}))
    yield w
    w.close()


Deploy = Callable[..., dict[str, Any]]


@pytest.fixture
def deploy(client: TestClient, register: Register) -> Deploy:
    """``deploy(tenant, model_dir, model="m", endpoint="ep", **body)``: register
    ``model_dir`` as the next version of ``model`` and serve it (``body`` default: that
    version) from a new endpoint."""

    def make(
        tenant: Tenant, model_dir: Path, *, model: str = "m", endpoint: str = "ep", **body: Any
    ) -> dict[str, Any]:
        version = register(tenant, model, model_dir=model_dir)
        spec = body or {"version": version.number}
        response = client.post(
            "/api/v1/endpoints",
            json={"name": endpoint, "model": model, **spec},
            headers=tenant.headers("developer"),
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    return make


def frame_rows(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """Rows of a, b, colour (the serving models' columns) and an id the models do not use;
    a few a values are missing (the models take missing numbers)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(COLOURS, n)
    return [
        {"id": i, "a": None if i % 50 == 7 else float(a[i]), "b": float(b[i]),
         "colour": str(colour[i])}
        for i in range(n)
    ]  # fmt: skip


def submit(client: TestClient, tenant: Tenant, role: str = "developer", **body: Any) -> Any:
    return client.post(URL, headers=tenant.headers(role), json=body)


def queued(client: TestClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = submit(client, tenant, **body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "queued"
    return job


def scored_table(settings: Settings, dataset_id: str) -> tuple[DatasetVersion, pa.Table]:
    """Version 1 of a dataset, and its rows as stored."""
    from aiaas.db import get_session_factory

    factory = get_session_factory(settings.resolved_database_url)
    with factory() as session:
        version = session.scalar(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == dataset_id, DatasetVersion.number == 1
            )
        )
        assert version is not None
    store = get_store(settings.resolved_artifacts_url)
    path = store.local_path(version.org_id, version.storage_key)
    assert path is not None
    return version, pq.read_table(path)


def event_types(workers: Workers, job_id: str) -> list[str]:
    with workers.factory() as session:
        stmt = select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        return list(session.scalars(stmt))


def dataset_names(workers: Workers, tenant: Tenant) -> list[str]:
    with workers.factory() as session:
        return sorted(session.scalars(select(Dataset.name).where(Dataset.org_id == tenant.org_id)))


# --------------------------------------------------------------------------- real runs


def test_an_endpoint_scores_a_dataset_into_a_new_one_as_the_model_predicts(
    client, settings, tenants: Tenants, deploy: Deploy, saved_model: Path, workers: Workers
):
    rows = frame_rows(500)
    source = make_dataset(settings, tenants.a, rows, name="customers")
    deploy(tenants.a, saved_model, model="churn", endpoint="churn-ep")
    job = queued(client, tenants.a, dataset_id=source.id, endpoint="churn-ep")
    assert (job["endpoint"], job["model_name"], job["model_version"]) == ("churn-ep", "churn", 1)
    assert (job["rows_done"], job["rows_total"], job["result_dataset_id"]) == (0, 500, None)
    assert job["output_name"] == f"customers-scored-{job['id'][4:12]}"
    workers.start()
    done = workers.finished(job["id"])
    assert done.status == "succeeded", (done.error_code, done.error_message)
    got = client.get(f"{URL}/{job['id']}", headers=tenants.a.headers("viewer")).json()
    assert (got["status"], got["rows_done"], got["rows_total"]) == ("succeeded", 500, 500)
    out_id = got["result_dataset_id"]
    assert got["result"]["prediction_columns"] == ["prediction", "p.0", "p.1"]
    # the new dataset, through the data API
    ds = client.get(f"/api/v1/datasets/{out_id}", headers=tenants.a.headers("viewer")).json()
    assert ds["name"] == job["output_name"]
    version, table = scored_table(settings, out_id)
    assert version.source == {
        "kind": "batch_prediction",
        "job_id": job["id"],
        "dataset_id": source.id,
        "dataset_version": 1,
        "dataset_version_id": source.versions[0].id,
        "model_name": "churn",
        "model_id": version.source["model_id"],
        "model_version": 1,
        "model_version_id": version.source["model_version_id"],
        "endpoint": "churn-ep",
        "endpoint_id": version.source["endpoint_id"],
    }
    assert table.column_names == ["id", "a", "b", "colour", "prediction", "p.0", "p.1"]
    assert table.select(["id", "a", "b", "colour"]).to_pylist() == rows
    want = reference(saved_model, [{k: r[k] for k in ("a", "b", "colour")} for r in rows])
    probs = np.column_stack([table["p.0"].to_numpy(), table["p.1"].to_numpy()])
    np.testing.assert_allclose(probs, want, atol=TOLERANCE)
    labels = np.asarray(classes(saved_model))[np.argmax(want, axis=1)]
    assert table["prediction"].to_pylist() == labels.tolist()
    types = event_types(workers, job["id"])
    assert types[:2] == ["queued", "started"]
    assert types[-1] == "succeeded"
    assert "progress" in types


@pytest.mark.parametrize("task", ["multiclass", "regression", "native"])
def test_a_model_version_scores_every_task(
    client, settings, tenants: Tenants, register: Register, models: dict[str, Path],
    saved_model_without_onnx: Path, workers: Workers, task: str,  # noqa: F811
):  # fmt: skip
    """By model and version (no endpoint), with a chosen name; ``native``: a model without
    its ONNX form, whose members run in the child."""
    model_dir = saved_model_without_onnx if task == "native" else models[task]
    register(tenants.a, "m", model_dir=model_dir)
    rows = frame_rows(300, seed=5)
    source = make_dataset(settings, tenants.a, rows, name="input")
    job = queued(
        client, tenants.a, dataset_id=source.id, model="m", version=1, output_name="Scored"
    )
    workers.start()
    done = workers.finished(job["id"])
    assert done.status == "succeeded", (done.error_code, done.error_message)
    version, table = scored_table(settings, (done.result or {})["dataset_id"])
    assert version.source["endpoint"] is None
    want = reference(model_dir, [{k: r[k] for k in ("a", "b", "colour")} for r in rows])
    if task == "regression":
        assert table.column_names[-1] == "prediction"
        np.testing.assert_allclose(table["prediction"].to_numpy(), want, atol=TOLERANCE)
        return
    names = [f"p.{c}" for c in classes(model_dir)]
    assert table.column_names[4:] == ["prediction", *names]
    got = np.column_stack([table[n].to_numpy() for n in names])
    np.testing.assert_allclose(got, want, atol=TOLERANCE)


def test_a_timestamp_column_feeds_a_date_model(
    client, settings, tenants: Tenants, register: Register, datetime_model: Path,
    workers: Workers,
):  # fmt: skip
    register(tenants.a, "dated", model_dir=datetime_model)
    rng = np.random.default_rng(9)
    days = rng.integers(0, 700, 200)
    when = (np.datetime64("2023-01-01") + days.astype("timedelta64[D]")).astype("datetime64[us]")
    table = pa.table({"a": rng.normal(size=200), "when": pa.array(when)})
    source = make_dataset(settings, tenants.a, table, name="dated-input")
    job = queued(client, tenants.a, dataset_id=source.id, model="dated")
    workers.start()
    done = workers.finished(job["id"])
    assert done.status == "succeeded", (done.error_code, done.error_message)
    _, scored = scored_table(settings, (done.result or {})["dataset_id"])
    plain_rows = [
        {"a": float(a), "when": str(w)[:10]}
        for a, w in zip(table["a"].to_pylist(), when, strict=True)
    ]
    want = reference(datetime_model, plain_rows)
    got = np.column_stack([scored["p.0"].to_numpy(), scored["p.1"].to_numpy()])
    np.testing.assert_allclose(got, want, atol=TOLERANCE)


def test_unknown_categories_fail_the_job_when_the_endpoint_refuses_them(
    client, settings, tenants: Tenants, deploy: Deploy, saved_model: Path, workers: Workers
):
    rows = frame_rows(300)
    rows[250]["colour"] = "purple"
    source = make_dataset(settings, tenants.a, rows, name="odd")
    deploy(tenants.a, saved_model, endpoint="strict", version=1, unknown_categories="error")
    job = queued(client, tenants.a, dataset_id=source.id, endpoint="strict")
    workers.start()
    done = workers.finished(job["id"])
    assert (done.status, done.error_code) == ("failed", "bad_input")
    assert done.error_message == (
        "row 56, column 'colour': unknown category 'purple' (this endpoint refuses categories "
        "the model never saw) (in rows 194 to 290 of the dataset; rows count from 0 there)"
    )
    assert dataset_names(workers, tenants.a) == ["odd"]  # nothing stored


def test_a_version_deleted_before_the_job_runs_fails_it_clearly(
    client, settings, tenants: Tenants, deploy: Deploy, saved_model: Path, workers: Workers
):
    source = make_dataset(settings, tenants.a, frame_rows(50), name="gone")
    deploy(tenants.a, saved_model)
    job = queued(client, tenants.a, dataset_id=source.id, endpoint="ep")
    r = client.delete(f"/api/v1/datasets/{source.id}", headers=tenants.a.headers())
    assert r.status_code == 204
    workers.start()
    done = workers.finished(job["id"])
    assert (done.status, done.error_code) == ("failed", "dataset_version_deleted")


def test_cancel_of_a_queued_job_is_at_once(
    client, settings, tenants: Tenants, deploy: Deploy, saved_model: Path
):
    source = make_dataset(settings, tenants.a, frame_rows(20), name="small")
    deploy(tenants.a, saved_model)
    job = queued(client, tenants.a, dataset_id=source.id, endpoint="ep")
    r = client.post(f"{URL}/{job['id']}/cancel", headers=tenants.a.headers("developer"))
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["cancel_requested"]) == ("cancelled", True)
    again = client.post(f"{URL}/{job['id']}/cancel", headers=tenants.a.headers("developer"))
    assert assert_problem(again, 409)["detail"] == "the job has already cancelled"
    events = client.get(f"{URL}/{job['id']}/events", headers=tenants.a.headers("viewer"))
    assert events.status_code == 200
    types = [json.loads(line[6:])["type"] for line in events.text.splitlines()
             if line.startswith("data: ")]  # fmt: skip
    assert types == ["queued", "cancelled"]


def million_rows(n: int = 1_000_000) -> pa.Table:
    rng = np.random.default_rng(3)
    return pa.table(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "colour": pa.array(np.asarray(COLOURS)[rng.integers(0, 3, n)]),
        }
    )


def test_cancel_of_a_running_job_stops_it_and_stores_nothing(
    client, settings, tenants: Tenants, deploy: Deploy, saved_model: Path, workers: Workers
):
    source = make_dataset(settings, tenants.a, million_rows(), name="big")
    deploy(tenants.a, saved_model)
    job = queued(client, tenants.a, dataset_id=source.id, endpoint="ep")
    workers.start()
    workers.wait(job["id"], lambda j: j.status == "running")
    r = client.post(f"{URL}/{job['id']}/cancel", headers=tenants.a.headers("developer"))
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["cancel_requested"]) == ("running", True)
    asked = datetime.fromisoformat(r.json()["updated_at"])
    done = workers.finished(job["id"], timeout=30)
    assert done.status == "cancelled"
    assert done.finished_at is not None
    assert (done.finished_at - asked).total_seconds() < 3  # killed, not run to its end
    assert dataset_names(workers, tenants.a) == ["big"]
    assert event_types(workers, job["id"])[-1] == "cancelled"


# --------------------------------------------------------------------------- the API alone


@pytest.fixture
def scorable(settings: Settings, tenants: Tenants, register: Register) -> Any:
    """Org A: dataset ``input`` (a, b, colour, id) and model ``m`` with versions 1 and 2."""
    register(tenants.a, "m")
    register(tenants.a, "m")
    return make_dataset(settings, tenants.a, frame_rows(30), name="input")


def test_the_primary_version_of_an_endpoint_is_its_heaviest_or_its_alias(
    client, tenants: Tenants, scorable
):
    h = tenants.a.headers("developer")
    split = [{"version": 1, "weight": 30}, {"version": 2, "weight": 70}]
    r = client.post("/api/v1/endpoints", headers=h, json={"name": "split", "model": "m",
                                                          "traffic": split})  # fmt: skip
    assert r.status_code == 201, r.text
    assert queued(client, tenants.a, dataset_id=scorable.id, endpoint="split")["model_version"] == 2
    r = client.put("/api/v1/models/m/aliases/champion", headers=h, json={"version": 1})
    assert r.status_code == 200, r.text
    r = client.post("/api/v1/endpoints", headers=h, json={"name": "champ", "model": "m",
                                                          "alias": "champion"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert queued(client, tenants.a, dataset_id=scorable.id, endpoint="champ")["model_version"] == 1
    latest = queued(client, tenants.a, dataset_id=scorable.id, model="m")
    assert (latest["model_version"], latest["endpoint"]) == (2, None)
    listed = client.get(URL, headers=tenants.a.headers("viewer")).json()
    assert [j["model_version"] for j in listed["items"]] == [2, 1, 2]
    one = client.get(f"{URL}?limit=1", headers=tenants.a.headers("viewer")).json()
    assert len(one["items"]) == 1
    assert one["next_cursor"]


def test_the_same_idempotency_key_returns_the_same_job(client, tenants: Tenants, scorable):
    h = tenants.a.headers("developer") | {"Idempotency-Key": "score-1"}
    body = {"dataset_id": scorable.id, "model": "m", "version": 1}
    first = client.post(URL, headers=h, json=body)
    again = client.post(URL, headers=h, json=body)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = client.post(URL, headers=h, json=body | {"version": 2})
    assert assert_problem(other, 422, "invalid_input")["detail"] == (
        "this Idempotency-Key was already used for a different request"
    )
    assert len(client.get(URL, headers=h).json()["items"]) == 1


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"dataset_id": "ds_missing", "model": "m"}, 404, "dataset 'ds_missing' not found"),
        ({"dataset_version": 2, "model": "m"}, 404, None),
        ({"model": "nope"}, 404, "model 'nope' not found"),
        ({"model": "m", "version": 9}, 404, "model version 'm@9' not found"),
        ({"endpoint": "nope"}, 404, "endpoint 'nope' not found"),
        ({}, 422, None),  # neither endpoint nor model
        ({"endpoint": "ep", "model": "m"}, 422, None),  # both
        ({"version": 1}, 422, None),  # a version without its model
        ({"model": "m", "output_name": "INPUT"}, 409, "a dataset named 'INPUT' already exists"),
        ({"model": "m", "output_name": ""}, 422, None),
        ({"model": "m", "dataset_version": 0}, 422, None),
        ({"model": "m", "colour": "red"}, 422, None),  # an unknown field
    ],
)
def test_bad_requests_are_refused_at_submit(
    client, tenants: Tenants, scorable, body: dict[str, Any], status: int, detail: str | None
):
    problem = assert_problem(
        submit(client, tenants.a, **({"dataset_id": scorable.id} | body)), status
    )
    if detail is not None:
        assert problem["detail"] == detail
    assert client.get(URL, headers=tenants.a.headers()).json()["items"] == []


def test_a_dataset_the_model_cannot_score_is_refused_at_submit(
    client, settings, tenants: Tenants, scorable
):
    lacking = make_dataset(settings, tenants.a, [{"a": 1.0, "b": 2.0}], name="lacking")
    body = {"dataset_id": lacking.id, "model": "m"}
    problem = assert_problem(submit(client, tenants.a, **body), 422, "invalid_input")
    assert problem["detail"] == "the dataset version lacks column(s) the model needs: 'colour'"
    texty = make_dataset(settings, tenants.a, [{"a": "x", "b": 2.0, "colour": "red"}], name="texty")
    problem = assert_problem(submit(client, tenants.a, dataset_id=texty.id, model="m"), 422)
    assert problem["detail"] == (
        "the model takes numbers in column(s) the dataset version holds as other types: "
        "'a' (string)"
    )
    clash = make_dataset(
        settings, tenants.a, [{"a": 1.0, "b": 2.0, "colour": "red", "p.1": 0.5}], name="clash"
    )
    problem = assert_problem(submit(client, tenants.a, dataset_id=clash.id, model="m"), 422)
    assert problem["detail"] == (
        "the dataset version already has column(s) named like the prediction columns: 'p.1'"
    )


def test_roles(client, tenants: Tenants, scorable):
    body = {"dataset_id": scorable.id, "model": "m"}
    assert_problem(submit(client, tenants.a, "viewer", **body), 403, "forbidden")
    job = queued(client, tenants.a, **body)
    assert client.get(URL, headers=tenants.a.headers("viewer")).status_code == 200
    assert client.get(f"{URL}/{job['id']}", headers=tenants.a.headers("viewer")).status_code == 200
    r = client.post(f"{URL}/{job['id']}/cancel", headers=tenants.a.headers("viewer"))
    assert_problem(r, 403, "forbidden")
    for role in ("owner", "admin"):
        assert submit(client, tenants.a, role, **body).status_code == 202


def test_another_organizations_jobs_datasets_and_models_are_not_found(
    client, settings, tenants: Tenants, scorable, deploy: Deploy, saved_model: Path
):
    ha, hb = tenants.a.headers(), tenants.b.headers()
    deploy(tenants.a, saved_model, model="m", endpoint="a-ep")
    job = queued(client, tenants.a, dataset_id=scorable.id, endpoint="a-ep")
    base = f"{URL}/{job['id']}"
    assert_cross_tenant_404(client, base, hb, methods=("GET",))
    assert_cross_tenant_404(client, f"{base}/cancel", hb, methods=("POST",))
    assert_cross_tenant_404(client, f"{base}/events", hb, methods=("GET",))
    assert_not_listed(client, URL, hb, job["id"])
    # B cannot score A's dataset, nor with A's endpoint or model
    b_data = make_dataset(settings, tenants.b, frame_rows(5), name="b-input")
    r = submit(client, tenants.b, "owner", dataset_id=scorable.id, model="m")
    assert assert_problem(r, 404)["detail"] == f"dataset {scorable.id!r} not found"
    r = submit(client, tenants.b, "owner", dataset_id=b_data.id, endpoint="a-ep")
    assert assert_problem(r, 404)["detail"] == "endpoint 'a-ep' not found"
    r = submit(client, tenants.b, "owner", dataset_id=b_data.id, model="m")
    assert assert_problem(r, 404)["detail"] == "model 'm' not found"
    # a training job's id is no batch prediction, and the other way round
    assert_problem(client.get(f"/api/v1/training-jobs/{job['id']}", headers=ha), 404)
    assert client.get(base, headers=ha).json()["status"] == "queued"
