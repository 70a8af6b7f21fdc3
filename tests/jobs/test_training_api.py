"""The training-job API without workers: submit, idempotency, quotas, list, get, cancel,
trials, the event stream's history and resume, roles, hostile input, tenant isolation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from aiaas.data.models import DatasetVersion
from aiaas.db import get_session_factory
from aiaas.jobs.models import Job, JobTrial
from aiaas.settings import Settings
from tests.conftest import Tenants, make_dataset
from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem

URL = "/api/v1/training-jobs"
ROWS = [{"x1": i, "x2": (i * 7) % 11, "y": i % 2} for i in range(60)]


@pytest.fixture
def dataset(settings: Settings, tenants: Tenants) -> Any:
    return make_dataset(settings, tenants.a, ROWS, name="toy")


def _body(dataset: Any, **kw: Any) -> dict[str, Any]:
    return {"dataset_id": dataset.id, "target": "y", "time_budget_s": 10, "model_name": "toy"} | kw


def _submit(client: TestClient, tenants: Tenants, dataset: Any, **kw: Any) -> Any:
    return client.post(URL, headers=tenants.a.headers("developer"), json=_body(dataset, **kw))


def test_submit_queues_a_job_on_the_latest_version(client, tenants: Tenants, dataset):
    response = _submit(client, tenants, dataset, families=["linear"], seed=3)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["id"].startswith("job")
    assert (job["dataset_id"], job["dataset_version"], job["target"]) == (dataset.id, 1, "y")
    assert (job["task"], job["model_name"], job["time_budget_s"]) == ("auto", "toy", 10)
    assert job["options"]["families"] == ["linear"]
    assert job["options"]["seed"] == 3
    assert job["attempts"] == 0
    assert job["error"] is None
    assert job["result"] is None
    got = client.get(f"{URL}/{job['id']}", headers=tenants.a.headers("viewer"))
    assert got.status_code == 200
    assert got.json()["id"] == job["id"]


def test_the_same_idempotency_key_returns_the_same_job(client, tenants: Tenants, dataset):
    headers = tenants.a.headers("developer") | {"Idempotency-Key": "run-1"}
    first = client.post(URL, headers=headers, json=_body(dataset))
    again = client.post(URL, headers=headers, json=_body(dataset))
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = client.post(URL, headers=headers, json=_body(dataset, time_budget_s=20))
    assert_problem(other, 422, "invalid_input")
    listed = client.get(URL, headers=tenants.a.headers()).json()
    assert [j["id"] for j in listed["items"]] == [first.json()["id"]]


def test_a_key_submitted_twice_at_the_same_moment_still_makes_one_job(
    client, tenants: Tenants, dataset, monkeypatch
):
    """The race: both requests looked the key up before either inserted; the loser's insert
    hits the unique (org, key) constraint and it answers with the winner's job."""
    from aiaas.jobs import service

    headers = tenants.a.headers() | {"Idempotency-Key": "raced"}
    first = client.post(URL, headers=headers, json=_body(dataset))
    real = service._by_key
    looked: list[str] = []

    def stale_first(*args: Any) -> Any:  # the loser's first look-up saw no job yet
        looked.append("stale" if not looked else "real")
        return None if len(looked) == 1 else real(*args)

    monkeypatch.setattr(service, "_by_key", stale_first)
    again = client.post(URL, headers=headers, json=_body(dataset))
    assert looked == ["stale", "real"]  # it did insert, hit the constraint, and looked again
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    monkeypatch.setattr(service, "_by_key", real)
    listed = client.get(URL, headers=tenants.a.headers()).json()
    assert [j["id"] for j in listed["items"]] == [first.json()["id"]]


def test_an_idempotency_key_is_per_organization(client, settings, tenants: Tenants, dataset):
    b_dataset = make_dataset(settings, tenants.b, ROWS, name="toy")
    key = {"Idempotency-Key": "same-key"}
    a = client.post(URL, headers=tenants.a.headers() | key, json=_body(dataset))
    b = client.post(URL, headers=tenants.b.headers() | key, json=_body(b_dataset))
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"target": "nope"}, 422, "invalid_input"),
        ({"dataset_version": 2}, 404, "not_found"),
        ({"dataset_id": "ds_missing"}, 404, "not_found"),
        ({"time_budget_s": 100000}, 403, "forbidden"),
        ({"time_budget_s": 1}, 422, "invalid_input"),
        ({"time_budget_s": -5}, 422, "invalid_input"),
        ({"time_budget_s": "NaN"}, 422, "invalid_input"),
        ({"families": ["no-such-family"]}, 422, "invalid_input"),
        ({"families": []}, 422, "invalid_input"),
        ({"families": ["linear"], "exclude_families": ["linear"]}, 422, "invalid_input"),
        ({"task": "clustering"}, 422, "invalid_input"),
        ({"metric": "DROP TABLE"}, 422, "invalid_input"),
        ({"model_name": "../../etc/passwd"}, 422, "invalid_input"),
        ({"model_name": "x" * 5000}, 422, "invalid_input"),
        ({"cv_folds": 1}, 422, "invalid_input"),
        ({"seed": -1}, 422, "invalid_input"),
        ({"surprise": True}, 422, "invalid_input"),
        ({"dataset_version": 10**30}, 422, "invalid_input"),
    ],
)
def test_bad_requests_are_clear_problems_and_queue_nothing(
    client, tenants: Tenants, dataset, change, status, code
):
    response = _submit(client, tenants, dataset, **change)
    assert_problem(response, status, code)
    assert client.get(URL, headers=tenants.a.headers()).json()["items"] == []


@pytest.mark.parametrize("raw", [b"", b"[]", b'"x"', b'{"dataset_id": null}', b"1" * 10])
def test_bodies_of_the_wrong_shape_are_422(client, tenants: Tenants, raw):
    headers = tenants.a.headers() | {"Content-Type": "application/json"}
    assert_problem(client.post(URL, headers=headers, content=raw), 422)


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b'{"a": NaN'])
def test_bodies_that_are_not_json_are_400(client, tenants: Tenants, raw):
    headers = tenants.a.headers() | {"Content-Type": "application/json"}
    assert_problem(client.post(URL, headers=headers, content=raw), 400, "invalid_json")


def test_a_hostile_idempotency_key_is_refused(client, tenants: Tenants, dataset):
    headers = tenants.a.headers() | {"Idempotency-Key": "k" * 201}
    assert_problem(client.post(URL, headers=headers, json=_body(dataset)), 422)


def test_too_many_waiting_jobs_is_429_with_retry_after(client, app, tenants: Tenants, dataset):
    limit = app.state.aiaas.settings.jobs.max_queued_per_org
    for _ in range(limit):
        assert _submit(client, tenants, dataset).status_code == 202
    response = _submit(client, tenants, dataset)
    assert_problem(response, 429)
    assert int(response.headers["Retry-After"]) >= 1


def test_list_filters_by_status_dataset_and_model(client, settings, tenants: Tenants, dataset):
    other = make_dataset(settings, tenants.a, ROWS, name="other")
    a = _submit(client, tenants, dataset).json()
    b = _submit(client, tenants, other, model_name="second").json()
    client.post(f"{URL}/{a['id']}/cancel", headers=tenants.a.headers())

    def ids(query: str) -> list[str]:
        response = client.get(f"{URL}?{query}", headers=tenants.a.headers("viewer"))
        assert response.status_code == 200, response.text
        return [j["id"] for j in response.json()["items"]]

    assert ids("") == [b["id"], a["id"]]  # newest first
    assert ids("status=cancelled") == [a["id"]]
    assert ids("status=queued") == [b["id"]]
    assert ids(f"dataset_id={other.id}") == [b["id"]]
    assert ids("model_name=second") == [b["id"]]
    assert ids("limit=1") == [b["id"]]
    assert_problem(client.get(f"{URL}?status=bogus", headers=tenants.a.headers()), 422)
    assert_problem(client.get(f"{URL}?limit=-1", headers=tenants.a.headers()), 422)


def test_cancel_a_queued_job_at_once_and_twice_is_409(client, tenants: Tenants, dataset):
    job = _submit(client, tenants, dataset).json()
    response = client.post(f"{URL}/{job['id']}/cancel", headers=tenants.a.headers("developer"))
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    again = client.post(f"{URL}/{job['id']}/cancel", headers=tenants.a.headers("developer"))
    assert_problem(again, 409, "conflict")


def test_cancel_of_a_running_job_asks_its_worker(client, settings, tenants: Tenants, dataset):
    job = _submit(client, tenants, dataset).json()
    factory = get_session_factory(settings.resolved_database_url)
    with factory() as session, session.begin():
        session.get(Job, job["id"]).status = "running"  # type: ignore[union-attr]
    response = client.post(f"{URL}/{job['id']}/cancel", headers=tenants.a.headers())
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["status"], body["cancel_requested"]) == ("running", True)


def test_trials_are_a_leaderboard_best_first(client, settings, tenants: Tenants, dataset):
    job = _submit(client, tenants, dataset).json()
    factory = get_session_factory(settings.resolved_database_url)
    scores = [0.5, None, 0.9, 0.7]
    with factory() as session, session.begin():
        for n, score in enumerate(scores):
            session.add(
                JobTrial(job_id=job["id"], org_id=tenants.a.org_id, number=n, attempt=1,
                         family="linear", params={"C": n}, state="ok" if score else "failed",
                         score=score, fold_scores=[score], fit_time_s=0.1 * n)
            )  # fmt: skip
    response = client.get(f"{URL}/{job['id']}/trials", headers=tenants.a.headers("viewer"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 4
    assert [t["number"] for t in body["items"]] == [2, 3, 0, 1]
    by_number = client.get(f"{URL}/{job['id']}/trials?sort=number", headers=tenants.a.headers())
    assert [t["number"] for t in by_number.json()["items"]] == [0, 2, 3, 1]  # failed last
    bad = client.get(f"{URL}/{job['id']}/trials?sort=;drop", headers=tenants.a.headers())
    assert_problem(bad, 422)


def _sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"]} | json.loads(
                fields["data"]))  # fmt: skip
    return events


def test_events_of_a_finished_job_are_its_history_and_resume_after_an_id(
    client, tenants: Tenants, dataset
):
    job = _submit(client, tenants, dataset).json()
    client.post(f"{URL}/{job['id']}/cancel", headers=tenants.a.headers())
    response = client.get(f"{URL}/{job['id']}/events", headers=tenants.a.headers("viewer"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: ")
    events = _sse(response.text)
    assert [e["event"] for e in events] == ["queued", "cancelled"]
    resumed = client.get(
        f"{URL}/{job['id']}/events",
        headers=tenants.a.headers() | {"Last-Event-ID": str(events[0]["id"])},
    )
    assert [e["event"] for e in _sse(resumed.text)] == ["cancelled"]
    bad = client.get(
        f"{URL}/{job['id']}/events", headers=tenants.a.headers() | {"Last-Event-ID": "x"}
    )
    assert_problem(bad, 422)


def test_roles_viewer_reads_developer_submits_and_cancels(client, tenants: Tenants, dataset):
    assert_problem(client.post(URL, headers=tenants.a.headers("viewer"), json=_body(dataset)), 403)
    job = _submit(client, tenants, dataset).json()
    assert client.get(URL, headers=tenants.a.headers("viewer")).status_code == 200
    cancel = client.post(f"{URL}/{job['id']}/cancel", headers=tenants.a.headers("viewer"))
    assert_problem(cancel, 403)
    assert_problem(client.get(URL), 401)


def test_another_organization_cannot_see_use_or_infer_a_job(
    client, settings, tenants: Tenants, dataset
):
    job = _submit(client, tenants, dataset).json()
    b = tenants.b.headers()
    for suffix in ("", "/trials", "/events"):
        assert_cross_tenant_404(client, f"{URL}/{job['id']}{suffix}", b, methods=("GET",))
    assert_cross_tenant_404(client, f"{URL}/{job['id']}/cancel", b, methods=("POST",))
    assert_not_listed(client, URL, b, job["id"])
    assert_not_listed(client, f"{URL}?dataset_id={dataset.id}", b, job["id"])
    # B cannot train on A's dataset either (a 404 like any dataset it does not have)
    assert_problem(client.post(URL, headers=b, json=_body(dataset)), 404)
    # and A's idempotency keys tell B nothing
    key = {"Idempotency-Key": "k1"}
    client.post(URL, headers=tenants.a.headers() | key, json=_body(dataset))
    b_data = make_dataset(settings, tenants.b, ROWS, name="toy")
    mine = client.post(URL, headers=b | key, json=_body(b_data))
    assert mine.status_code == 202
    assert mine.json()["dataset_id"] == b_data.id
    assert client.get(f"{URL}/{job['id']}", headers=tenants.a.headers()).json()["status"] == (
        "queued"
    )


def test_a_job_survives_its_dataset_version_being_deleted_as_a_row(
    client, settings, tenants: Tenants, dataset
):
    """The job keeps its spec (the worker fails it clearly: tests/jobs/test_training_run)."""
    job = _submit(client, tenants, dataset).json()
    factory = get_session_factory(settings.resolved_database_url)
    with factory() as session, session.begin():
        session.execute(delete(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id))
    got = client.get(f"{URL}/{job['id']}", headers=tenants.a.headers())
    assert got.status_code == 200
    assert got.json()["dataset_version"] == 1
