"""Training jobs: the use cases of the jobs domain seen from the API.

Every function takes ``(session, principal, ctx, …)`` and starts its queries from
``scoped(select(...), principal)``: another organization's job, trials and events are a 404.

Invariants:

- a submitted job names a dataset version that exists and has the target column (checked
  here, so a mistake is a 422 at once, not a failed job later); the job still fails clearly
  if the version is deleted before it runs;
- one ``Idempotency-Key`` is one job per organization (the same request again returns it;
  another request with the same key is a 422);
- quotas: a time budget above ``max_time_budget_s`` is a 403, more than
  ``max_queued_per_org`` waiting jobs a 429; running jobs beyond ``max_concurrent_per_org``
  wait in the queue (:func:`aiaas.jobs.queue.claim`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth.principal import Principal
from aiaas.data import service as data_service
from aiaas.data.models import DatasetVersion
from aiaas.db.base import scoped, utcnow
from aiaas.db.pagination import Page, PageParams, paginate
from aiaas.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded
from aiaas.jobs import queue
from aiaas.jobs.context import JobsContext
from aiaas.jobs.models import QUEUED, RUNNING, TERMINAL, Job, JobEvent, JobTrial
from aiaas.jobs.schemas import TrainingJobCreate, TrialSort
from aiaas.jobs.training import KIND

MAX_EVENTS_PER_READ = 500
_SORTS: dict[str, Any] = {
    "score": JobTrial.score.asc(),
    "-score": JobTrial.score.desc(),
    "number": JobTrial.number.asc(),
    "-number": JobTrial.number.desc(),
    "fit_time_s": JobTrial.fit_time_s.asc(),
    "-fit_time_s": JobTrial.fit_time_s.desc(),
    "family": JobTrial.family.asc(),
}


def get_job(session: Session, principal: Principal, job_id: str) -> Job:
    stmt = scoped(select(Job), principal).where(Job.id == job_id, Job.kind == KIND)
    if (job := session.scalar(stmt)) is None:
        raise NotFound("training job", job_id)
    return job


def list_jobs(
    session: Session,
    principal: Principal,
    params: PageParams,
    *,
    status: str | None = None,
    dataset_id: str | None = None,
    model_name: str | None = None,
) -> Page[Job]:
    """The organization's training jobs, newest first, optionally filtered."""
    stmt = scoped(select(Job), principal).where(Job.kind == KIND)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if dataset_id is not None:
        stmt = stmt.where(Job.spec["dataset_id"].as_string() == dataset_id)
    if model_name is not None:
        stmt = stmt.where(Job.spec["model_name"].as_string() == model_name)
    return paginate(session, stmt, params, Job)


def submit_training(
    session: Session,
    principal: Principal,
    ctx: JobsContext,
    body: TrainingJobCreate,
    *,
    idempotency_key: str | None = None,
) -> Job:
    """Queue a training job (or return the one this ``idempotency_key`` already made)."""
    spec = _spec(session, principal, body)
    if idempotency_key is not None:
        existing = _by_key(session, principal, idempotency_key)
        if existing is not None:
            return _same_request(existing, spec)
    _check_quotas(session, principal, ctx, body)
    try:
        job = queue.enqueue(
            session,
            org_id=principal.org_id,
            kind=KIND,
            spec=spec,
            max_attempts=ctx.settings.jobs.max_attempts,
            created_by=principal.actor_id,
            idempotency_key=idempotency_key,
        )
    except IntegrityError:  # the same key, submitted at the same moment: this request
        session.rollback()  # has written nothing else, so it reads the winner's job instead
        existing = _by_key(session, principal, idempotency_key or "")
        if existing is None:
            raise
        return _same_request(existing, spec)
    audit.set_resource("training_job", job.id, dataset_id=body.dataset_id, model=body.model_name)
    return job


def _by_key(session: Session, principal: Principal, key: str) -> Job | None:
    return session.scalar(scoped(select(Job), principal).where(Job.idempotency_key == key))


def _same_request(job: Job, spec: dict[str, Any]) -> Job:
    if job.kind != KIND or job.spec.get("request") != spec["request"]:
        raise InvalidInput("this Idempotency-Key was already used for a different request")
    return job


def _spec(session: Session, principal: Principal, body: TrainingJobCreate) -> dict[str, Any]:
    """The job's spec: the request, with the dataset version resolved and checked."""
    dataset = data_service.get_dataset(session, principal, body.dataset_id)
    number = body.dataset_version or dataset.latest_version
    version = session.scalar(
        scoped(select(DatasetVersion), principal).where(
            DatasetVersion.dataset_id == dataset.id, DatasetVersion.number == number
        )
    )
    if version is None:
        raise NotFound("dataset version", f"{dataset.id}@{number}")
    columns = [c.get("name") for c in version.columns_schema]
    if body.target not in columns:
        raise InvalidInput(
            f"dataset {dataset.id!r} version {number} has no column {body.target!r}",
            errors=[{"loc": ["body", "target"], "msg": "no such column", "type": "value_error"}],
        )
    return {
        **body.model_dump(mode="json", exclude={"dataset_version", "families"}),
        "dataset_version": number,
        "dataset_version_id": version.id,
        "families": body.searched_families(),
        "request": body.model_dump(mode="json"),  # what an Idempotency-Key stands for
    }


def _check_quotas(
    session: Session, principal: Principal, ctx: JobsContext, body: TrainingJobCreate
) -> None:
    jobs = ctx.settings.jobs
    if body.time_budget_s > jobs.max_time_budget_s:
        raise Forbidden(
            f"time_budget_s {body.time_budget_s:g} is above this platform's maximum of "
            f"{jobs.max_time_budget_s:g} s per job"
        )
    if body.time_budget_s < jobs.min_time_budget_s:
        raise InvalidInput(f"time_budget_s must be at least {jobs.min_time_budget_s:g} s")
    check_waiting(session, principal, ctx)


def check_waiting(session: Session, principal: Principal, ctx: JobsContext) -> None:
    """429 when the organization already has ``max_queued_per_org`` jobs (of any kind)
    waiting."""
    jobs = ctx.settings.jobs
    waiting = session.scalar(
        select(func.count()).select_from(
            scoped(select(Job.id), principal).where(Job.status == QUEUED).subquery()
        )
    )
    if (waiting or 0) >= jobs.max_queued_per_org:
        raise QuotaExceeded(
            f"the organization has {waiting} jobs waiting, the most allowed; "
            "wait for some to start or cancel them",
            retry_after=max(1, int(jobs.poll_s * 10)),
        )


def cancel_job(session: Session, principal: Principal, job_id: str) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its worker kills it)."""
    return cancel(session, get_job(session, principal, job_id), "training_job")


def cancel(session: Session, job: Job, resource_type: str) -> Job:
    """Cancel ``job`` (of any kind, already read through ``scoped()``): a queued one at
    once, a running one by asking its worker; a finished one is a 409."""
    if job.status in TERMINAL:
        raise Conflict(f"the job has already {job.status}")
    if job.status == QUEUED and queue.cancel_queued(session, job):
        audit.set_resource(resource_type, job.id, status="cancelled")
        return job
    session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == RUNNING)
        .values(cancel_requested=True, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.flush()
    session.refresh(job)
    if job.status in TERMINAL and not job.cancel_requested:
        raise Conflict(f"the job has already {job.status}")
    audit.set_resource(resource_type, job.id, cancel_requested=True)
    return job


def list_trials(
    session: Session, principal: Principal, job_id: str, *, sort: TrialSort = "-score"
) -> tuple[Job, list[JobTrial]]:
    """The job's trials, as a leaderboard (failed trials, without a score, last)."""
    job = get_job(session, principal, job_id)
    stmt = (
        scoped(select(JobTrial), principal)
        .where(JobTrial.job_id == job.id)
        .order_by(JobTrial.score.is_(None), _SORTS[sort], JobTrial.number)
    )
    return job, list(session.scalars(stmt))


def events_after(
    session: Session, principal: Principal, job_id: str, after: int
) -> tuple[Job, list[JobEvent]]:
    """The job (now) and its events numbered above ``after``, oldest first."""
    return job_events(session, principal, get_job(session, principal, job_id), after)


def job_events(
    session: Session, principal: Principal, job: Job, after: int
) -> tuple[Job, list[JobEvent]]:
    """``job`` (of any kind, already read through ``scoped()``) and its events numbered
    above ``after``, oldest first."""
    stmt = (
        scoped(select(JobEvent), principal)
        .where(JobEvent.job_id == job.id, JobEvent.id > after)
        .order_by(JobEvent.id)
        .limit(MAX_EVENTS_PER_READ)
    )
    return job, list(session.scalars(stmt))
