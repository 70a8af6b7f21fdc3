"""Workers with test handlers (registered by name, as ``training.run`` is): how a handler's
ending becomes the job's status, cancel and lost leases reaching a running handler."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from aiaas.db import get_session_factory
from aiaas.db.base import utcnow
from aiaas.jobs import queue
from aiaas.jobs.models import CANCELLED, FAILED, QUEUED, SUCCEEDED, Job, JobEvent
from aiaas.jobs.queue import QueuePolicy
from aiaas.jobs.worker import JobCancelled, JobFailed, JobRun, Worker, WorkerTiming, start_workers
from aiaas.settings import Settings
from tests.conftest import Tenants

POLICY = QueuePolicy(lease_s=30, max_attempts=3, retry_backoff_s=0.0, max_concurrent_per_org=5)
FAST = WorkerTiming(heartbeat_s=0.1, poll_s=0.05)


@pytest.fixture
def factory(settings: Settings) -> sessionmaker[Session]:
    return get_session_factory(settings.resolved_database_url)


def _submit(factory: sessionmaker[Session], org_id: str, kind: str) -> str:
    with factory() as session, session.begin():
        return queue.enqueue(
            session, org_id=org_id, kind=kind, spec={}, max_attempts=3, created_by=None
        ).id


def _job(factory: sessionmaker[Session], job_id: str) -> Job:
    with factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def _ok(run: JobRun) -> None:
    run.event("step", {"n": 1}, progress=0.5)
    run.complete(lambda session, job: {"answer": 42})


def _fails(run: JobRun) -> None:
    raise JobFailed("bad_data", "the data is bad")


def _crashes(run: JobRun) -> None:
    raise KeyError("secret internals")


def test_a_handler_ending_well_succeeds_with_its_result_and_events(factory, tenants: Tenants):
    job_id = _submit(factory, tenants.a.org_id, "t.ok")
    worker = Worker(factory, {"t.ok": _ok}, POLICY, FAST)
    assert worker.run_once() is True
    job = _job(factory, job_id)
    assert (job.status, job.result, job.progress) == (SUCCEEDED, {"answer": 42}, 1.0)
    with factory() as session:
        types = session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id)).all()
    assert list(types) == ["queued", "started", "step", SUCCEEDED]
    assert worker.run_once() is False  # nothing left


@pytest.mark.parametrize(
    ("handler", "code", "message"),
    [(_fails, "bad_data", "the data is bad"), (_crashes, "internal", "internal error: KeyError")],
)
def test_a_failing_handler_fails_the_job_with_a_short_reason(
    factory, tenants: Tenants, handler, code, message
):
    job_id = _submit(factory, tenants.a.org_id, "t.x")
    Worker(factory, {"t.x": handler}, POLICY, FAST).run_once()
    job = _job(factory, job_id)
    assert (job.status, job.error_code, job.error_message) == (FAILED, code, message)
    assert "secret internals" not in (job.error_message or "")


def _waits_for_stop(run: JobRun) -> None:
    if not run.stop.wait(10):
        raise AssertionError("never told to stop")
    if run.cancel_requested.is_set():
        raise JobCancelled()
    run.complete(lambda session, job: {})  # lost: this must be refused


def test_cancel_reaches_a_running_handler_within_a_heartbeat(factory, tenants: Tenants):
    job_id = _submit(factory, tenants.a.org_id, "t.wait")
    worker = Worker(factory, {"t.wait": _waits_for_stop}, POLICY, FAST)
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    _wait_for(lambda: _job(factory, job_id).status == "running")
    asked = time.monotonic()
    with factory() as session, session.begin():
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    thread.join(10)
    assert _job(factory, job_id).status == CANCELLED
    assert time.monotonic() - asked < 2.0


def test_a_worker_that_lost_its_lease_changes_nothing(factory, tenants: Tenants):
    job_id = _submit(factory, tenants.a.org_id, "t.wait")
    worker = Worker(factory, {"t.wait": _waits_for_stop}, POLICY, FAST)
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    _wait_for(lambda: _job(factory, job_id).status == "running")
    with factory() as session, session.begin():  # as if it had stopped beating long ago
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=5))
        )
    queue.recover(factory, POLICY)  # another worker takes it back
    thread.join(10)
    job = _job(factory, job_id)
    assert (job.status, job.worker_id, job.result) == (QUEUED, None, None)


def test_start_workers_runs_jobs_in_threads_until_stopped(factory, tenants: Tenants):
    ids = [_submit(factory, tenants.a.org_id, "t.ok") for _ in range(4)]
    stop = threading.Event()
    threads = start_workers(2, factory, {"t.ok": _ok}, POLICY, FAST, stop)
    try:
        _wait_for(lambda: all(_job(factory, i).status == SUCCEEDED for i in ids))
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert not any(t.is_alive() for t in threads)
