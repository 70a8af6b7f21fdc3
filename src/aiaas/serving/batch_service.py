"""Batch predictions: the use cases seen from the API (submit, read, list, cancel, events).

A batch prediction is a job of kind ``batch.predict`` on the jobs table (the queue, its
workers, its events and its cancel are the training jobs'); :mod:`aiaas.serving.batch` is
its handler. Every function takes ``(session, principal, …)`` and starts its queries from
``scoped(select(...), principal)``: another organization's dataset, endpoint, model or job
is a 404.

Invariants:

- a submitted job names a dataset version and a model version that exist now: an
  endpoint's primary version (its alias's target, or the highest-weight version of its
  traffic — the first listed on a tie) is resolved here and pinned in the job, so a later
  traffic change does not change what the job scores with;
- the dataset version has rows, every column the model needs, numbers where the model
  takes numbers, and no column named like a prediction column (a 422 at once, not a
  failed job later); the output dataset's name is free (409) — checked again when the
  job stores it;
- one ``Idempotency-Key`` is one job per organization (shared with the training jobs: the
  same request again returns its job, another request with the key is a 422);
- quotas: the organization's waiting jobs (any kind, 429) and a full storage quota (429).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth.principal import Principal
from aiaas.data import service as data_service
from aiaas.data.models import DatasetVersion
from aiaas.data.types import NUMERIC_TYPES
from aiaas.data.versions import check_quota
from aiaas.db.base import scoped
from aiaas.db.pagination import Page, PageParams, paginate
from aiaas.errors import Conflict, InvalidInput, NotFound
from aiaas.jobs import queue
from aiaas.jobs import service as jobs_service
from aiaas.jobs.context import JobsContext
from aiaas.jobs.models import Job, JobEvent
from aiaas.registry import service as registry
from aiaas.registry.models import ModelVersion
from aiaas.schemas import NAME_MAX
from aiaas.serving import service as serving
from aiaas.serving.batch import KIND, name_taken, prediction_columns
from aiaas.serving.batch_schemas import BatchPredictionCreate
from aiaas.serving.models import Endpoint

RESOURCE = "batch_prediction"
_NUMBER_COLUMNS = NUMERIC_TYPES | {"boolean"}
_MAX_NAMED = 10  # columns named in one error message


# --------------------------------------------------------------------------- reads


def get_batch(session: Session, principal: Principal, job_id: str) -> Job:
    stmt = scoped(select(Job), principal).where(Job.id == job_id, Job.kind == KIND)
    if (job := session.scalar(stmt)) is None:
        raise NotFound("batch prediction", job_id)
    return job


def list_batches(
    session: Session,
    principal: Principal,
    params: PageParams,
    *,
    status: str | None = None,
    dataset_id: str | None = None,
) -> Page[Job]:
    """The organization's batch predictions, newest first, optionally filtered."""
    stmt = scoped(select(Job), principal).where(Job.kind == KIND)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if dataset_id is not None:
        stmt = stmt.where(Job.spec["dataset_id"].as_string() == dataset_id)
    return paginate(session, stmt, params, Job)


def events_after(
    session: Session, principal: Principal, job_id: str, after: int
) -> tuple[Job, list[JobEvent]]:
    """The job (now) and its events numbered above ``after``, oldest first."""
    return jobs_service.job_events(session, principal, get_batch(session, principal, job_id), after)


# --------------------------------------------------------------------------- changes


def submit_batch(
    session: Session,
    principal: Principal,
    ctx: JobsContext,
    body: BatchPredictionCreate,
    *,
    idempotency_key: str | None = None,
) -> Job:
    """Queue a batch prediction (or return the one this ``idempotency_key`` already made,
    whatever happened since: its output dataset may exist by now)."""
    request = body.model_dump(mode="json")  # what an Idempotency-Key stands for
    if idempotency_key is not None:
        existing = _by_key(session, principal, idempotency_key)
        if existing is not None:
            return _same_request(existing, request)
    spec = _spec(session, principal, body) | {"request": request}
    jobs_service.check_waiting(session, principal, ctx)
    check_quota(session, principal, ctx.settings)  # a full organization stores nothing
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
    except IntegrityError:  # the same key at the same moment: read the winner's job
        session.rollback()
        existing = _by_key(session, principal, idempotency_key or "")
        if existing is None:
            raise
        return _same_request(existing, request)
    if spec["output_name"] is None:
        job.spec = {**spec, "output_name": _derived_name(spec["dataset_name"], job.id)}
        session.flush()
    audit.set_resource(RESOURCE, job.id, dataset_id=body.dataset_id, model=spec["model_name"])
    return job


def cancel_batch(session: Session, principal: Principal, job_id: str) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its worker kills it)."""
    return jobs_service.cancel(session, get_batch(session, principal, job_id), RESOURCE)


def _by_key(session: Session, principal: Principal, key: str) -> Job | None:
    return session.scalar(scoped(select(Job), principal).where(Job.idempotency_key == key))


def _same_request(job: Job, request: dict[str, Any]) -> Job:
    if job.kind != KIND or job.spec.get("request") != request:
        raise InvalidInput("this Idempotency-Key was already used for a different request")
    return job


def _derived_name(dataset_name: str, job_id: str) -> str:
    """``<dataset>-scored-<8 hex of the job id>``, within the name length."""
    suffix = f"-scored-{job_id.removeprefix('job_')[:8]}"
    return f"{dataset_name[: NAME_MAX - len(suffix)]}{suffix}"


# --------------------------------------------------------------------------- the spec


def _spec(session: Session, principal: Principal, body: BatchPredictionCreate) -> dict[str, Any]:
    """The job's spec: the request, with the dataset version and model version resolved
    and checked against each other."""
    dataset = data_service.get_dataset(session, principal, body.dataset_id)
    number = body.dataset_version or dataset.latest_version
    version = session.scalar(
        scoped(select(DatasetVersion), principal).where(
            DatasetVersion.dataset_id == dataset.id, DatasetVersion.number == number
        )
    )
    if version is None:
        raise NotFound("dataset version", f"{dataset.id}@{number}")
    endpoint, mv = _model_version(session, principal, body)
    check_columns(version, mv)
    if body.output_name is not None and name_taken(session, principal, body.output_name):
        raise Conflict(f"a dataset named {body.output_name!r} already exists")
    return {
        "dataset_id": dataset.id,
        "dataset_name": dataset.name,
        "dataset_version": version.number,
        "dataset_version_id": version.id,
        "endpoint": endpoint.name if endpoint else None,
        "endpoint_id": endpoint.id if endpoint else None,
        "strict_categories": bool(endpoint and endpoint.unknown_categories == "error"),
        "model_name": mv.model.name,
        "model_id": mv.model_id,
        "model_version": mv.number,
        "model_version_id": mv.id,
        "rows_total": version.row_count,
        "output_name": body.output_name,
    }


def _model_version(
    session: Session, principal: Principal, body: BatchPredictionCreate
) -> tuple[Endpoint | None, ModelVersion]:
    if body.endpoint is not None:
        endpoint = serving.get_endpoint(session, principal, body.endpoint)
        return endpoint, primary_version(session, principal, endpoint)
    assert body.model is not None
    model = registry.get_model(session, principal, body.model)
    number = body.version or model.latest_version
    if not number:
        raise NotFound(f"model {model.name!r} has no version")
    return None, registry.get_version(session, principal, model.name, number)


def primary_version(session: Session, principal: Principal, endpoint: Endpoint) -> ModelVersion:
    """What an endpoint serves most: its alias's target, or its highest-weight version."""
    name = endpoint.model.name
    if endpoint.alias is not None:
        return registry.resolve_alias(session, principal, name, endpoint.alias)
    if not endpoint.traffic:
        raise Conflict(f"endpoint {endpoint.name!r} serves no version")
    top = max(endpoint.traffic, key=lambda t: int(t["weight"]))  # the first on a tie
    return registry.get_version(session, principal, name, int(top["version"]))


def check_columns(version: DatasetVersion, mv: ModelVersion) -> None:
    """422 unless the dataset version can be scored by the model version: rows, every
    required input column (numbers where the model takes numbers), and no column that a
    prediction column would repeat."""
    if version.row_count == 0:
        raise InvalidInput("the dataset version has no rows to score")
    have = {str(c.get("name")): str(c.get("type")) for c in version.columns_schema}
    signature = mv.signature or {}
    if mv.task != "regression" and not signature.get("classes"):
        raise InvalidInput(f"model version {mv.number} names no classes")
    missing, wrong = [], []
    for col in signature.get("inputs") or []:
        if not isinstance(col, dict) or not col.get("required", col.get("used", True)):
            continue
        name = str(col.get("name"))
        if name not in have:
            missing.append(name)
        elif col.get("kind") == "numeric" and have[name] not in _NUMBER_COLUMNS:
            wrong.append(f"{name!r} ({have[name]})")
    if missing:
        raise InvalidInput(
            "the dataset version lacks column(s) the model needs: "
            + ", ".join(repr(m) for m in missing[:_MAX_NAMED]),
            errors=[
                {"loc": ["dataset", m], "msg": "missing column", "type": "missing"}
                for m in missing[:_MAX_NAMED]
            ],  # fmt: skip
        )
    if wrong:
        raise InvalidInput(
            "the model takes numbers in column(s) the dataset version holds as other types: "
            + ", ".join(wrong[:_MAX_NAMED])
        )
    clash = [n for n in prediction_columns(mv.task, signature.get("classes")) if n in have]
    if clash:
        raise InvalidInput(
            "the dataset version already has column(s) named like the prediction columns: "
            + ", ".join(repr(c) for c in clash[:_MAX_NAMED])
        )
