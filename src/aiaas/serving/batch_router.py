"""Batch-prediction routes (thin: one service call each) and the job's event stream (SSE)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from aiaas.api.deps import JobsDep, PageDep, SessionDep, SessionFactoryDep, require
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.db.pagination import Page
from aiaas.jobs.models import Job, JobEvent
from aiaas.jobs.router import Reader, _stream  # the training jobs' SSE loop, as it is
from aiaas.jobs.schemas import IDEMPOTENCY_KEY_MAX, JobStatus
from aiaas.serving import batch_service as service
from aiaas.serving.batch_schemas import BatchPredictionCreate, BatchPredictionRead

router = APIRouter(prefix="/batch-predictions", tags=["batch predictions"])


@router.post("", status_code=202, response_model=BatchPredictionRead)
def submit_batch_prediction(
    body: BatchPredictionCreate,
    session: SessionDep,
    ctx: JobsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=IDEMPOTENCY_KEY_MAX,
            description="The same key again returns the same job instead of a second one.",
        ),
    ] = None,
    principal: Principal = require(Action.BATCH_WRITE),
) -> Job:
    """Queue the scoring of a dataset version; the job ends with a new dataset holding the
    input columns and the predictions."""
    return service.submit_batch(session, principal, ctx, body, idempotency_key=idempotency_key)


@router.get("", response_model=Page[BatchPredictionRead])
def list_batch_predictions(
    session: SessionDep,
    params: PageDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    dataset_id: Annotated[
        str | None, Query(max_length=40, description="Only jobs scoring this dataset.")
    ] = None,
    principal: Principal = require(Action.BATCH_READ),
) -> Page[Job]:
    """The organization's batch predictions, newest first."""
    return service.list_batches(session, principal, params, status=status, dataset_id=dataset_id)


@router.get("/{job_id}", response_model=BatchPredictionRead)
def get_batch_prediction(
    job_id: str, session: SessionDep, principal: Principal = require(Action.BATCH_READ)
) -> Job:
    """Status, progress (rows done of rows total), the new dataset's id, or the error."""
    return service.get_batch(session, principal, job_id)


@router.post("/{job_id}/cancel", status_code=202, response_model=BatchPredictionRead)
def cancel_batch_prediction(
    job_id: str, session: SessionDep, principal: Principal = require(Action.BATCH_WRITE)
) -> Job:
    """Cancel: a queued job at once, a running one within seconds (its status says when)."""
    return service.cancel_batch(session, principal, job_id)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def batch_prediction_events(
    job_id: str,
    request: Request,
    factory: SessionFactoryDep,
    last_event_id: Annotated[
        int | None, Header(ge=0, le=2**62, description="Resume after this event id.")
    ] = None,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="Same, as a query.")] = None,
    principal: Principal = require(Action.BATCH_READ),
) -> StreamingResponse:
    """Server-Sent Events: history first, then live (queued, started, progress, retrying,
    succeeded / failed / cancelled); the stream ends after the job's last event. Reconnect
    with ``Last-Event-ID`` to resume."""
    start = last_event_id if last_event_id is not None else (after or 0)
    read = _reader(factory, principal, job_id)
    await anyio.to_thread.run_sync(read, start)  # a 404 before the stream starts
    return StreamingResponse(
        _stream(request, read, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _reader(factory: sessionmaker[Session], principal: Principal, job_id: str) -> Reader:
    def read(after: int) -> tuple[str, list[JobEvent]]:
        with factory() as session:
            job, events = service.events_after(session, principal, job_id, after)
            return job.status, events

    return read
