"""``aiaas serve --demo``'s bootstrap: a real training job run by a real worker, a prediction
through the app with the printed curl line's key and body, a second start that makes nothing
new and prints no key, and how an interrupted start is resumed."""

from __future__ import annotations

import json
import shlex
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from aiaas.auth.models import ApiKey, Organization
from aiaas.auth.tokens import API_KEY_PREFIX
from aiaas.cli import demo
from aiaas.data.models import Dataset, DatasetVersion
from aiaas.db import get_session_factory
from aiaas.jobs.models import FAILED, RUNNING, Job
from aiaas.registry.models import ModelVersion, RegisteredModel
from aiaas.serving.models import Endpoint
from aiaas.settings import Settings
from tests.jobs.conftest import Workers

BASE = "http://testserver"
TABLES = (
    Organization,
    ApiKey,
    Dataset,
    DatasetVersion,
    Job,
    RegisteredModel,
    ModelVersion,
    Endpoint,
)


@pytest.fixture
def workers(settings: Settings) -> Iterator[Workers]:
    w = Workers(settings)
    yield w
    w.close()


def counts(settings: Settings) -> dict[str, int]:
    with get_session_factory(settings.resolved_database_url)() as session:
        return {
            t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0
            for t in TABLES
        }


def parse_curl(line: str) -> tuple[str, str, str]:
    """The bearer token, the body and the URL of a printed curl line (as a shell reads it)."""
    words = shlex.split(line)
    assert words[:2] == ["curl", "-s"]
    headers = [words[i + 1] for i, w in enumerate(words) if w == "-H"]
    bearer = next(h for h in headers if h.startswith("Authorization: Bearer "))
    assert "Content-Type: application/json" in headers
    return bearer.removeprefix("Authorization: Bearer "), words[words.index("-d") + 1], words[-1]


@pytest.mark.slow  # a real 20 s training job: 25 s on an idle machine, 60-90 s on a busy one
def test_first_start_trains_deploys_and_prints_a_working_curl_the_second_reuses_it(
    settings: Settings, workers: Workers, client: TestClient
) -> None:
    workers.start()
    lines: list[str] = []
    env = demo.Env.build(settings, lines.append)
    first = demo.bootstrap(env, BASE, timeout_s=300)
    output = "\n".join(lines)
    assert first.key is not None
    assert first.key.startswith(API_KEY_PREFIX)
    assert output.count(first.key) == 1  # shown once, in the curl line
    assert "demo: created organization 'demo'" in output
    assert "demo: stored dataset 'breast_cancer' (569 rows, 31 columns)" in output
    assert "demo: trained 'demo-classifier' version 1" in output
    assert lines[-1].startswith("demo: ready")
    assert lines[-1].endswith(first.curl)

    key, body, url = parse_curl(first.curl)
    assert (key, url) == (first.key, f"{BASE}/api/v1/endpoints/demo/predict")
    instances = json.loads(body)["instances"]
    assert len(instances) == 1
    assert len(instances[0]) == 30
    assert "diagnosis" not in instances[0]
    answer = client.post(
        urlsplit(url).path,
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    assert prediction["label"] == "malignant"  # the data's first row is
    assert set(prediction["probabilities"]) == {"malignant", "benign"}
    assert (answer.json()["model"], answer.json()["version"]) == ("demo-classifier", 1)

    made = counts(settings)
    assert made.pop("jobs") in {1, 2, 3}  # more: a job's process started too slowly (busy box)
    assert made == dict.fromkeys(made, 1)
    made = counts(settings)
    lines.clear()
    second = demo.bootstrap(env, BASE, timeout_s=5)
    again = "\n".join(lines)
    assert counts(settings) == made
    assert second.key is None
    assert API_KEY_PREFIX not in again
    assert second.curl == first.curl.replace(first.key, "$AIAAS_API_KEY")
    assert "admin create-api-key --org demo --role developer" in again
    assert (second.org_id, second.dataset_id, second.model_version) == (
        first.org_id,
        first.dataset_id,
        1,
    )


def _set_status(settings: Settings, job_id: str, status: str) -> None:
    factory = get_session_factory(settings.resolved_database_url)
    with factory() as session, session.begin():
        session.execute(update(Job).where(Job.id == job_id).values(status=status))


def test_an_interrupted_start_waits_for_its_job_and_resubmits_a_failed_one(
    settings: Settings,
) -> None:
    env = demo.Env.build(settings, lambda _: None)
    principal = demo.ensure_org(env)
    dataset_id = demo.ensure_dataset(env, principal)
    assert demo.ensure_org(env).org_id == principal.org_id  # found, not made again
    assert demo.ensure_dataset(env, principal) == dataset_id

    job_id, submitted, budget = demo.training_job(env, principal, dataset_id, 10)
    assert (submitted, budget) == (True, 10)
    queued = demo.training_job(env, principal, dataset_id, 30)
    assert queued == (job_id, False, 10)  # waited for, with its own budget
    _set_status(settings, job_id, RUNNING)
    assert demo.training_job(env, principal, dataset_id, 30) == (job_id, False, 10)
    _set_status(settings, job_id, FAILED)
    retry_id, submitted, budget = demo.training_job(env, principal, dataset_id, 30)
    assert (submitted, budget) == (True, 30)
    assert retry_id != job_id
    assert demo.training_job(env, principal, dataset_id, 10) == (retry_id, False, 30)
    assert counts(settings)["jobs"] == 2


def test_a_job_that_fails_while_waited_for_is_submitted_once_more(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    env = demo.Env.build(settings, lines.append)
    principal = demo.ensure_org(env)
    dataset_id = demo.ensure_dataset(env, principal)
    slow_start = (FAILED, None, "the time budget ran out", "time_budget")
    outcomes = iter([slow_start, ("succeeded", {"model_version": 1}, None, None)])

    def ends(env: Any, principal: Any, job_id: str, timeout_s: float) -> demo.JobState:
        _set_status(settings, job_id, FAILED)  # not waited for again by the next attempt
        return demo.JobState(job_id, *next(outcomes))

    monkeypatch.setattr(demo, "wait_for_job", ends)
    assert demo.ensure_model(env, principal, dataset_id, 10, 60) == 1
    assert any("failed: the time budget ran out" in line for line in lines)
    factory = get_session_factory(settings.resolved_database_url)
    with factory() as session:
        budgets = session.scalars(select(Job.spec).order_by(Job.created_at)).all()
    assert [b["time_budget_s"] for b in budgets] == [10, 30]  # a slow start: 3x the time

    outcomes = iter([(FAILED, None, "boom", "training_crashed")] * 3)
    with pytest.raises(demo.DemoError, match="failed 3 times"):
        demo.ensure_model(env, principal, dataset_id, 10, 60)
    assert counts(settings)["jobs"] == 5


def test_a_failure_in_the_background_is_one_line(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed: list[str] = []
    monkeypatch.setattr(typer, "echo", printed.append)

    def broken(*args: Any, **kwargs: Any) -> demo.Demo:
        raise demo.DemoError("no worker")

    monkeypatch.setattr(demo, "bootstrap", broken)
    demo.start(settings, BASE, job_workers=0).join(10)
    assert printed[-1] == "demo: not ready: no worker"
    assert printed[0] == "demo: the model behind endpoint 'demo' is set up once the server is up"
    assert "no job worker" in printed[1]


def test_the_server_is_waited_for_until_it_listens() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        started = time.monotonic()
        demo._wait_listening(f"http://0.0.0.0:{port}", timeout_s=5)  # 0.0.0.0: via loopback
        assert time.monotonic() - started < 2
    started = time.monotonic()
    demo._wait_listening(f"http://127.0.0.1:{port}", timeout_s=0.5)  # closed: gives up
    assert 0.5 <= time.monotonic() - started < 3
