"""Training jobs run for real: API → queue → worker thread → sandboxed training child →
registered model version; cancel, failures, and the whole-job time budget."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from aiaas.data.models import DatasetVersion
from aiaas.jobs.models import Job, JobEvent, JobTrial
from aiaas.registry.models import ModelVersion
from aiaas.settings import Settings
from tests.conftest import Tenants, make_dataset
from tests.jobs.conftest import Workers, toy_rows

URL = "/api/v1/training-jobs"
#: what a job may take beyond its budget: the child's start-up and the registration
BUDGET_SLACK_S = 4.0


@pytest.fixture
def dataset(settings: Settings, tenants: Tenants) -> Any:
    return make_dataset(settings, tenants.a, toy_rows(), name="toy")


def _submit(client: Any, tenants: Tenants, dataset: Any, **kw: Any) -> dict[str, Any]:
    body = {"dataset_id": dataset.id, "target": "y", "time_budget_s": 10, "model_name": "toy"}
    response = client.post(URL, headers=tenants.a.headers("developer"), json=body | kw)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def _event_types(workers: Workers, job_id: str) -> list[str]:
    with workers.factory() as session:
        stmt = select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        return list(session.scalars(stmt))


def test_a_job_trains_streams_trials_and_registers_version_1_within_its_budget(
    client, tenants: Tenants, dataset, workers: Workers
):
    job = _submit(client, tenants, dataset, families=["linear", "lightgbm"])
    workers.start()
    done = workers.finished(job["id"])
    assert done.status == "succeeded", (done.error_code, done.error_message)
    elapsed = (done.finished_at - done.started_at).total_seconds()  # type: ignore[operator]
    assert elapsed <= 10 * 1.05 + BUDGET_SLACK_S, elapsed
    result = done.result or {}
    assert (result["model_name"], result["model_version"], result["task"]) == ("toy", 1, "binary")
    assert result["cv_score"] is not None
    assert "holdout_score" in result  # None here: 400 rows are cross-validated, no holdout
    types = _event_types(workers, job["id"])
    assert types[:2] == ["queued", "started"]
    assert types[-1] == "succeeded"
    assert "trial" in types
    assert "best" in types
    trials = client.get(f"{URL}/{job['id']}/trials", headers=tenants.a.headers("viewer")).json()
    assert trials["count"] >= 2
    assert {t["family"] for t in trials["items"]} >= {"linear"}
    scores = [t["score"] for t in trials["items"] if t["score"] is not None]
    assert scores == sorted(scores, reverse=True)
    version = client.get("/api/v1/models/toy/versions/1", headers=tenants.a.headers("viewer"))
    assert version.status_code == 200, version.text
    body = version.json()
    assert body["lineage"]["job_id"] == job["id"]
    assert body["lineage"]["dataset_id"] == dataset.id
    assert body["lineage"]["dataset_version"] == 1
    # the stream of a finished job replays everything and ends
    stream = client.get(f"{URL}/{job['id']}/events", headers=tenants.a.headers("viewer"))
    sent = [
        json.loads(line[6:])["type"]
        for line in stream.text.splitlines()
        if line.startswith("data: ")
    ]
    assert sent == types


def test_a_second_job_for_the_same_model_registers_version_2(
    client, tenants: Tenants, dataset, workers: Workers
):
    first = _submit(client, tenants, dataset, families=["linear"], time_budget_s=10)
    second = _submit(client, tenants, dataset, families=["linear"], time_budget_s=10, seed=1)
    workers.start()
    assert workers.finished(first["id"]).status == "succeeded"
    done = workers.finished(second["id"])
    assert done.status == "succeeded"
    assert (done.result or {})["model_version"] == 2


def test_cancel_stops_a_running_job_within_seconds_and_registers_nothing(
    client, tenants: Tenants, dataset, workers: Workers
):
    job = _submit(client, tenants, dataset, time_budget_s=120)
    workers.start()
    workers.wait(job["id"], lambda j: j.status == "running")
    time.sleep(2.0)  # the child is up and training
    asked = time.monotonic()
    response = client.post(f"{URL}/{job['id']}/cancel", headers=tenants.a.headers("developer"))
    assert response.status_code == 202
    done = workers.finished(job["id"], timeout=30)
    assert done.status == "cancelled"
    assert time.monotonic() - asked < 5.0
    with workers.factory() as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0


def test_a_version_deleted_before_the_job_runs_fails_it_clearly(
    client, tenants: Tenants, dataset, workers: Workers
):
    job = _submit(client, tenants, dataset)
    with workers.factory() as session, session.begin():
        session.execute(delete(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id))
    workers.start()
    done = workers.finished(job["id"])
    assert (done.status, done.error_code) == ("failed", "dataset_version_deleted")
    assert "no longer exists" in (done.error_message or "")


def test_a_missing_target_column_fails_the_job_and_the_worker_goes_on(
    client, tenants: Tenants, dataset, workers: Workers
):
    broken = _submit(client, tenants, dataset)
    with workers.factory() as session, session.begin():  # as if the spec were tampered with
        job = session.get(Job, broken["id"])
        assert job is not None
        job.spec = {**job.spec, "target": "gone"}
    fine = _submit(client, tenants, dataset, families=["linear"], time_budget_s=10)
    workers.start()
    done = workers.finished(broken["id"])
    assert (done.status, done.error_code) == ("failed", "missing_target")
    assert workers.finished(fine["id"]).status == "succeeded"


def test_out_of_memory_in_training_fails_the_job_not_the_worker(
    client, settings, tenants: Tenants, dataset
):
    workers = Workers(settings)
    tiny = workers.settings.jobs.model_copy(update={"training_address_space_bytes": 200 << 20})
    workers.settings = workers.settings.model_copy(update={"jobs": tiny})
    from aiaas.jobs.context import JobsContext

    workers.ctx = JobsContext.build(workers.settings, workers.ctx.store)
    job = _submit(client, tenants, dataset)
    workers.start()
    try:
        done = workers.finished(job["id"])
    finally:
        workers.close()
    assert done.status == "failed"
    assert done.error_code in {"out_of_memory", "resource_limit", "training_crashed"}, (
        done.error_code
    )
    with workers.factory() as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0


def test_a_retried_job_starts_its_trials_again_and_registers_once(
    client, tenants: Tenants, dataset, workers: Workers
):
    job = _submit(client, tenants, dataset, families=["linear"], time_budget_s=10)
    with workers.factory() as session, session.begin():  # a first attempt's leftovers
        session.execute(update(Job).where(Job.id == job["id"]).values(attempts=1))
        session.add(
            JobTrial(job_id=job["id"], org_id=tenants.a.org_id, number=0, attempt=1,
                     family="linear", params={}, state="ok", score=0.1, fold_scores=[])
        )  # fmt: skip
    workers.start()
    done = workers.finished(job["id"])
    assert done.status == "succeeded"
    assert done.attempts == 2
    with workers.factory() as session:
        attempts = set(
            session.scalars(select(JobTrial.attempt).where(JobTrial.job_id == job["id"]))
        )
        versions = session.scalar(select(func.count()).select_from(ModelVersion))
    assert attempts == {2}
    assert versions == 1


def test_thread_pool_families_train_inside_the_sandbox(client, tenants: Tenants, dataset, workers):
    """Thread pools (joblib's, OpenMP's) work under the training sandbox: HistGB's binning
    needs a POSIX semaphore, and failed there once; the forests use joblib's threads."""
    families = ["histgb", "random_forest", "extra_trees"]
    # a budget that reaches each family at ~2.5 s a forest trial on a busy 2-core machine
    job = _submit(client, tenants, dataset, families=families, ensemble=False, time_budget_s=30)
    workers.start()
    assert workers.finished(job["id"]).status == "succeeded"
    trials = client.get(f"{URL}/{job['id']}/trials", headers=tenants.a.headers()).json()
    failed = [(t["family"], t["error"]) for t in trials["items"] if t["state"] == "failed"]
    assert failed == []
    assert {t["family"] for t in trials["items"]} == set(families)
