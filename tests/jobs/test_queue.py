"""The queue on the real metadata database (SQLite here, PostgreSQL with
AIAAS_TEST_DATABASE_URL): atomic claims, leases, recovery with backoff, conditional finish."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from aiaas.db import get_session_factory
from aiaas.db.base import utcnow
from aiaas.jobs import queue
from aiaas.jobs.models import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job, JobEvent
from aiaas.jobs.queue import QueuePolicy
from aiaas.settings import Settings
from tests.conftest import Tenants

KIND = "test.noop"
POLICY = QueuePolicy(lease_s=30, max_attempts=3, retry_backoff_s=0.0, max_concurrent_per_org=50)


@pytest.fixture
def factory(settings: Settings) -> sessionmaker[Session]:
    return get_session_factory(settings.resolved_database_url)


def _enqueue(factory: sessionmaker[Session], org_id: str, n: int = 1, **kw: object) -> list[str]:
    ids = []
    with factory() as session, session.begin():
        for i in range(n):
            job = queue.enqueue(
                session,
                org_id=org_id,
                kind=str(kw.get("kind", KIND)),
                spec={"i": i},
                max_attempts=int(kw.get("max_attempts", 3)),  # type: ignore[call-overload]
                created_by=None,
            )
            ids.append(job.id)
    return ids


def _job(factory: sessionmaker[Session], job_id: str) -> Job:
    with factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _events(factory: sessionmaker[Session], job_id: str) -> list[str]:
    with factory() as session:
        stmt = select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        return list(session.scalars(stmt))


def _expire(factory: sessionmaker[Session], job_id: str) -> None:
    with factory() as session, session.begin():
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_claim_takes_the_oldest_job_once_and_marks_it_running(factory, tenants: Tenants):
    first, second = _enqueue(factory, tenants.a.org_id, 2)
    claimed = queue.claim(factory, "w1", [KIND], POLICY)
    assert claimed is not None
    assert claimed.id == first
    assert claimed.attempt == 1
    job = _job(factory, first)
    assert (job.status, job.worker_id, job.attempts) == (RUNNING, "w1", 1)
    assert job.lease_expires_at is not None
    assert job.lease_expires_at > utcnow()
    assert queue.claim(factory, "w2", [KIND], POLICY).id == second  # type: ignore[union-attr]
    assert queue.claim(factory, "w3", [KIND], POLICY) is None
    assert _events(factory, first) == ["queued", "started"]


def test_claim_only_takes_the_kinds_the_worker_has_handlers_for(factory, tenants: Tenants):
    _enqueue(factory, tenants.a.org_id, kind="other.kind")
    assert queue.claim(factory, "w1", [KIND], POLICY) is None
    assert queue.claim(factory, "w1", ["other.kind"], POLICY) is not None


def test_concurrent_workers_never_claim_the_same_job(factory, tenants: Tenants):
    ids = _enqueue(factory, tenants.a.org_id, 40)
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            while (c := queue.claim(factory, name, [KIND], POLICY)) is not None:
                with lock:
                    claims.append((c.id, name))
        except BaseException as exc:  # a lock error would be a failed claim: report it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counts = Counter(job_id for job_id, _ in claims)
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}
    for job_id, name in claims:
        assert _job(factory, job_id).worker_id == name


def test_per_org_concurrency_limit_holds_other_jobs_back(factory, tenants: Tenants):
    policy = QueuePolicy(lease_s=30, max_attempts=3, retry_backoff_s=0, max_concurrent_per_org=1)
    _enqueue(factory, tenants.a.org_id, 2)
    (b_job,) = _enqueue(factory, tenants.b.org_id)
    assert queue.claim(factory, "w1", [KIND], policy).org_id == tenants.a.org_id  # type: ignore[union-attr]
    second = queue.claim(factory, "w2", [KIND], policy)
    assert second is not None
    assert second.id == b_job
    assert queue.claim(factory, "w3", [KIND], policy) is None


def test_heartbeat_renews_only_for_the_holder_and_reports_cancel(factory, tenants: Tenants):
    (job_id,) = _enqueue(factory, tenants.a.org_id)
    queue.claim(factory, "w1", [KIND], POLICY)
    before = _job(factory, job_id).lease_expires_at
    time.sleep(0.01)
    assert queue.heartbeat(factory, job_id, "w1", 30) is False
    assert _job(factory, job_id).lease_expires_at > before  # type: ignore[operator]
    assert queue.heartbeat(factory, job_id, "intruder", 30) is None
    with factory() as session, session.begin():
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    assert queue.heartbeat(factory, job_id, "w1", 30) is True


def test_an_expired_lease_is_retried_with_backoff_and_the_old_worker_changes_nothing(
    factory, tenants: Tenants
):
    policy = QueuePolicy(lease_s=30, max_attempts=3, retry_backoff_s=60, max_concurrent_per_org=5)
    (job_id,) = _enqueue(factory, tenants.a.org_id)
    queue.claim(factory, "w1", [KIND], policy)
    _expire(factory, job_id)
    assert queue.recover(factory, policy) == 1
    job = _job(factory, job_id)
    assert (job.status, job.worker_id, job.attempts) == (QUEUED, None, 1)
    assert job.run_after > utcnow() + timedelta(seconds=50)  # backoff: not claimable yet
    assert queue.claim(factory, "w2", [KIND], policy) is None
    # the lost worker wakes up: its heartbeat and its finish are refused
    assert queue.heartbeat(factory, job_id, "w1", 30) is None
    with factory() as session, session.begin():
        assert queue.hold(session, job_id, "w1") is None
    assert _events(factory, job_id)[-1] == "retrying"


def test_backoff_doubles_and_the_last_attempt_fails_as_worker_lost(factory, tenants: Tenants):
    policy = QueuePolicy(lease_s=30, max_attempts=2, retry_backoff_s=10, max_concurrent_per_org=5)
    (job_id,) = _enqueue(factory, tenants.a.org_id, max_attempts=2)
    delays = []
    for attempt in (1, 2):
        with factory() as session, session.begin():  # make it claimable now
            session.execute(update(Job).where(Job.id == job_id).values(run_after=utcnow()))
        claimed = queue.claim(factory, f"w{attempt}", [KIND], policy)
        assert claimed is not None
        assert claimed.attempt == attempt
        _expire(factory, job_id)
        queue.recover(factory, policy)
        job = _job(factory, job_id)
        if job.status == QUEUED:
            delays.append((job.run_after - utcnow()).total_seconds())
    job = _job(factory, job_id)
    assert job.status == FAILED
    assert job.error_code == queue.WORKER_LOST
    assert "2 times" in (job.error_message or "")
    assert len(delays) == 1
    assert 8 < delays[0] <= 10
    assert _events(factory, job_id) == ["queued", "started", "retrying", "started", FAILED]


def test_recover_takes_a_dead_local_worker_at_once(factory, tenants: Tenants):
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    (job_id,) = _enqueue(factory, tenants.a.org_id)
    worker = f"{socket.gethostname()}:{dead.pid}:abc123"
    queue.claim(factory, worker, [KIND], POLICY)
    assert queue.recover(factory, POLICY) == 1  # the lease is fresh; the pid is gone
    assert _job(factory, job_id).status == QUEUED


def test_recover_leaves_live_workers_alone(factory, tenants: Tenants):
    (job_id,) = _enqueue(factory, tenants.a.org_id)
    queue.claim(factory, queue.worker_name(), [KIND], POLICY)
    assert queue.recover(factory, POLICY) == 0
    assert _job(factory, job_id).status == RUNNING


def test_finish_is_terminal_and_conditional_on_holding_the_job(factory, tenants: Tenants):
    (job_id,) = _enqueue(factory, tenants.a.org_id)
    queue.claim(factory, "w1", [KIND], POLICY)
    with factory() as session, session.begin():
        job = queue.hold(session, job_id, "w1")
        assert job is not None
        queue.finish(session, job, SUCCEEDED, result={"ok": 1})
    with factory() as session, session.begin():
        assert queue.hold(session, job_id, "w1") is None  # finished: nobody holds it now
    job = _job(factory, job_id)
    assert (job.status, job.progress, job.result) == (SUCCEEDED, 1.0, {"ok": 1})
    _expire(factory, job_id)
    assert queue.recover(factory, POLICY) == 0  # a terminal job is never retried


def test_cancel_queued_is_refused_once_a_worker_claimed_it(factory, tenants: Tenants):
    first, second = _enqueue(factory, tenants.a.org_id, 2)
    queue.claim(factory, "w1", [KIND], POLICY)
    with factory() as session, session.begin():
        assert queue.cancel_queued(session, session.get(Job, first)) is False
        assert queue.cancel_queued(session, session.get(Job, second)) is True
    assert _job(factory, first).status == RUNNING
    assert _job(factory, second).status == CANCELLED
    assert queue.claim(factory, "w2", [KIND], POLICY) is None


def test_a_lost_job_whose_cancel_was_asked_ends_cancelled(factory, tenants: Tenants):
    (job_id,) = _enqueue(factory, tenants.a.org_id)
    queue.claim(factory, "w1", [KIND], POLICY)
    with factory() as session, session.begin():
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    _expire(factory, job_id)
    queue.recover(factory, POLICY)
    assert _job(factory, job_id).status == CANCELLED
