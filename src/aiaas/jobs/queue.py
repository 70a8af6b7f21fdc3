"""The job queue, on the metadata database: enqueue, claim, heartbeat, finish, recover.

The semantics are procrastinate's: the job table is the queue. System functions: workers
serve every organization, so these queries are deliberately not ``scoped()`` to a caller
(the API's reads of jobs are, in :mod:`aiaas.jobs.service`).

- **claim** is one ``UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING`` statement opening its
  own transaction: on PostgreSQL the inner select takes ``FOR UPDATE SKIP LOCKED``, so
  concurrent workers skip each other's rows instead of waiting; on SQLite the statement
  takes the database's write lock at its start (a writing statement as the first of a
  transaction is ``BEGIN IMMEDIATE`` in effect: no read snapshot to go stale), so claims
  are serialised and short. A job of an organization already running
  ``max_concurrent_per_org`` jobs is not claimed (it waits; on PostgreSQL two claims at the
  same instant may overshoot by one).
- every later change by a worker (:func:`heartbeat`, :func:`finish`, :func:`record`) is
  conditional on ``worker_id`` and ``status = running``: a worker that lost its lease changes
  nothing, so a job is never finished twice and never by two workers.
- :func:`recover` turns running jobs whose lease expired (or whose worker process on this
  host is provably gone) back into queued ones with a growing backoff, or fails them with
  ``worker_lost`` after ``max_attempts`` claims.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from aiaas.db.base import utcnow
from aiaas.jobs.models import CANCELLED, FAILED, QUEUED, RUNNING, TERMINAL, Job, JobEvent

log = structlog.get_logger()

WORKER_LOST = "worker_lost"
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class QueuePolicy:
    """The queue's limits (built from :class:`aiaas.settings.JobsSettings` by ``limits``)."""

    lease_s: float
    max_attempts: int
    retry_backoff_s: float
    max_concurrent_per_org: int


@dataclass(frozen=True)
class Claimed:
    """What a worker knows of the job it claimed (a snapshot; the row stays the truth)."""

    id: str
    org_id: str
    kind: str
    spec: dict[str, Any]
    attempt: int
    created_by: str | None
    created_at: datetime


def worker_name() -> str:
    """``host:pid:random`` — unique per worker, and the pid lets this host tell it died."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def add_event(session: Session, job: Job, type_: str, data: dict[str, Any]) -> None:
    session.add(JobEvent(job_id=job.id, org_id=job.org_id, type=type_, data=data))


def enqueue(
    session: Session,
    *,
    org_id: str,
    kind: str,
    spec: dict[str, Any],
    max_attempts: int,
    created_by: str | None,
    idempotency_key: str | None = None,
) -> Job:
    """Add a queued job and its ``queued`` event (flush only; the caller commits)."""
    job = Job(
        org_id=org_id,
        kind=kind,
        spec=spec,
        status=QUEUED,
        progress=0.0,
        attempts=0,
        max_attempts=max_attempts,
        cancel_requested=False,
        run_after=utcnow(),
        idempotency_key=idempotency_key,
        created_by=created_by,
    )
    session.add(job)
    session.flush()
    add_event(session, job, "queued", {"status": QUEUED})
    session.flush()
    return job


def claim(
    factory: sessionmaker[Session], worker_id: str, kinds: list[str], policy: QueuePolicy
) -> Claimed | None:
    """Take the oldest claimable job for ``worker_id``, or None (one short transaction)."""
    now = utcnow()
    busy = (
        select(Job.org_id)
        .where(Job.status == RUNNING)
        .group_by(Job.org_id)
        .having(func.count() >= policy.max_concurrent_per_org)
    )
    pick = (
        select(Job.id)
        .where(
            Job.status == QUEUED,
            Job.run_after <= now,
            Job.kind.in_(kinds),
            Job.org_id.not_in(busy),
        )
        .order_by(Job.created_at, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(Job)
        .where(Job.id == pick, Job.status == QUEUED)
        .values(
            status=RUNNING,
            worker_id=worker_id,
            attempts=Job.attempts + 1,
            lease_expires_at=now + timedelta(seconds=policy.lease_s),
            heartbeat_at=now,
            started_at=now,
            updated_at=now,
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    with factory() as session, session.begin():
        job_id = session.scalar(stmt)
        if job_id is None:
            return None
        job = session.get(Job, job_id)
        assert job is not None
        add_event(session, job, "started", {"attempt": job.attempts, "worker": worker_id})
        return Claimed(
            job.id, job.org_id, job.kind, dict(job.spec), job.attempts, job.created_by,
            job.created_at,
        )  # fmt: skip


def _held(job_id: str, worker_id: str) -> Any:
    return and_(Job.id == job_id, Job.worker_id == worker_id, Job.status == RUNNING)


def heartbeat(
    factory: sessionmaker[Session], job_id: str, worker_id: str, lease_s: float
) -> bool | None:
    """Renew the lease. None: the lease is lost (stop at once); else: cancel requested?"""
    now = utcnow()
    with factory() as session, session.begin():
        renewed = session.scalar(
            update(Job)
            .where(_held(job_id, worker_id))
            .values(lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now)
            .returning(Job.cancel_requested)
            .execution_options(synchronize_session=False)
        )
    return None if renewed is None else bool(renewed)


def hold(session: Session, job_id: str, worker_id: str) -> Job | None:
    """The job, locked for this transaction, if ``worker_id`` still holds it."""
    stmt = select(Job).where(_held(job_id, worker_id)).with_for_update()
    return session.scalar(stmt)


def finish(
    session: Session,
    job: Job,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: tuple[str, str] | None = None,
) -> None:
    """Record a terminal status on a job this transaction :func:`hold`s (flush only)."""
    assert status in TERMINAL
    now = utcnow()
    job.status = status
    job.finished_at = now
    job.updated_at = now
    job.lease_expires_at = None
    job.result = result
    if status != FAILED:
        job.progress = 1.0 if status != CANCELLED else job.progress
    if error is not None:
        job.error_code, job.error_message = error[0], error[1][:MAX_ERROR_CHARS]
    data: dict[str, Any] = {"status": status}
    if error is not None:
        data |= {"error_code": job.error_code, "error_message": job.error_message}
    if result is not None:
        data["result"] = result
    add_event(session, job, status, data)
    session.flush()


def cancel_queued(session: Session, job: Job) -> bool:
    """Cancel ``job`` if it is still queued (conditional: a worker may claim it right now)."""
    now = utcnow()
    done = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == QUEUED)
        .values(status=CANCELLED, finished_at=now, updated_at=now, cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    if getattr(done, "rowcount", 0) != 1:
        return False
    session.refresh(job)
    add_event(session, job, CANCELLED, {"status": CANCELLED, "while": QUEUED})
    session.flush()
    return True


def _pid_gone(worker_id: str | None, host: str) -> bool:
    """True when ``worker_id`` names a process on this host that no longer exists."""
    if not worker_id:
        return False
    parts = worker_id.split(":")
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def recover(factory: sessionmaker[Session], policy: QueuePolicy) -> int:
    """Requeue (or fail) running jobs whose worker is lost; returns how many."""
    now = utcnow()
    host = socket.gethostname()
    recovered = 0
    with factory() as session, session.begin():
        running = session.scalars(
            select(Job).where(Job.status == RUNNING).with_for_update(skip_locked=True)
        ).all()
        for job in running:
            expired = job.lease_expires_at is not None and job.lease_expires_at < now
            if expired or _pid_gone(job.worker_id, host):
                _requeue_or_fail(session, job, policy, now)
                recovered += 1
    return recovered


def _requeue_or_fail(session: Session, job: Job, policy: QueuePolicy, now: datetime) -> None:
    lost = job.worker_id
    if job.cancel_requested:
        job.worker_id = None
        finish(session, job, CANCELLED, error=(WORKER_LOST, "cancelled; its worker was lost"))
        return
    if job.attempts >= job.max_attempts:
        message = f"worker lost {job.attempts} times (last: {lost}); giving up"
        job.worker_id = None
        finish(session, job, FAILED, error=(WORKER_LOST, message))
        log.warning("job_failed_worker_lost", job_id=job.id, attempts=job.attempts)
        return
    delay = policy.retry_backoff_s * (2 ** max(0, job.attempts - 1))
    job.status = QUEUED
    job.worker_id = None
    job.lease_expires_at = None
    job.run_after = now + timedelta(seconds=delay)
    job.updated_at = now
    job.progress = 0.0
    add_event(
        session,
        job,
        "retrying",
        {"reason": WORKER_LOST, "attempt": job.attempts, "worker": lost, "delay_s": delay},
    )
    log.warning("job_requeued_worker_lost", job_id=job.id, attempt=job.attempts, worker=lost)
