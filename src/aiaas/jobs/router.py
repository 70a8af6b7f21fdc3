"""Training-job routes (thin: one service call each) and the job's event stream (SSE)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from aiaas.api.deps import JobsDep, PageDep, SessionDep, SessionFactoryDep, require
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.db.pagination import Page
from aiaas.jobs import service
from aiaas.jobs.models import TERMINAL, Job, JobEvent
from aiaas.jobs.schemas import (
    IDEMPOTENCY_KEY_MAX,
    JobStatus,
    TrainingJobCreate,
    TrainingJobRead,
    TrialList,
    TrialRead,
    TrialSort,
)

router = APIRouter(prefix="/training-jobs", tags=["training"])

SSE_POLL_S = 0.5
SSE_KEEPALIVE_S = 15.0
SSE_RETRY_MS = 2000
JobId = Annotated[str, "job id"]


@router.post("", status_code=202, response_model=TrainingJobRead)
def submit_training_job(
    body: TrainingJobCreate,
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
    principal: Principal = require(Action.TRAINING_WRITE),
) -> Job:
    """Queue training on a dataset version; the job ends with a registered model version."""
    return service.submit_training(session, principal, ctx, body, idempotency_key=idempotency_key)


@router.get("", response_model=Page[TrainingJobRead])
def list_training_jobs(
    session: SessionDep,
    params: PageDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    dataset_id: Annotated[
        str | None, Query(max_length=40, description="Only this dataset.")
    ] = None,
    model_name: Annotated[
        str | None, Query(max_length=200, description="Only jobs for this model.")
    ] = None,
    principal: Principal = require(Action.TRAINING_READ),
) -> Page[Job]:
    """The organization's training jobs, newest first."""
    return service.list_jobs(
        session, principal, params, status=status, dataset_id=dataset_id, model_name=model_name
    )


@router.get("/{job_id}", response_model=TrainingJobRead)
def get_training_job(
    job_id: str, session: SessionDep, principal: Principal = require(Action.TRAINING_READ)
) -> Job:
    return service.get_job(session, principal, job_id)


@router.post("/{job_id}/cancel", status_code=202, response_model=TrainingJobRead)
def cancel_training_job(
    job_id: str, session: SessionDep, principal: Principal = require(Action.TRAINING_WRITE)
) -> Job:
    """Cancel: a queued job at once, a running one within seconds (its status says when)."""
    return service.cancel_job(session, principal, job_id)


@router.get("/{job_id}/trials", response_model=TrialList)
def list_training_trials(
    job_id: str,
    session: SessionDep,
    sort: Annotated[TrialSort, Query(description="Leaderboard order; default best first.")] = (
        "-score"
    ),
    principal: Principal = require(Action.TRAINING_READ),
) -> TrialList:
    """Every trial of the job's search: family, params, per-fold and mean CV score, time."""
    job, trials = service.list_trials(session, principal, job_id, sort=sort)
    items = [TrialRead.model_validate(t) for t in trials]
    return TrialList(job_id=job.id, metric=job.spec.get("metric"), count=len(items), items=items)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def training_job_events(
    job_id: str,
    request: Request,
    factory: SessionFactoryDep,
    last_event_id: Annotated[
        int | None, Header(ge=0, le=2**62, description="Resume after this event id.")
    ] = None,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="Same, as a query.")] = None,
    principal: Principal = require(Action.TRAINING_READ),
) -> StreamingResponse:
    """Server-Sent Events: history first, then live (queued, started, trial, best,
    retrying, succeeded / failed / cancelled); the stream ends after the job's last event.
    Reconnect with ``Last-Event-ID`` to resume."""
    start = last_event_id if last_event_id is not None else (after or 0)
    read = _reader(factory, principal, job_id)
    await anyio.to_thread.run_sync(read, start)  # a 404 before the stream starts
    return StreamingResponse(
        _stream(request, read, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


Reader = Callable[[int], tuple[str, list[JobEvent]]]


def _reader(factory: sessionmaker[Session], principal: Principal, job_id: str) -> Reader:
    def read(after: int) -> tuple[str, list[JobEvent]]:
        with factory() as session:
            job, events = service.events_after(session, principal, job_id, after)
            return job.status, events

    return read


def _format(event: JobEvent) -> bytes:
    data = json.dumps({"id": event.id, "type": event.type, "at": event.created_at.isoformat(),
                       **event.data}, default=str)  # fmt: skip
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def _stream(request: Request, read: Reader, after: int) -> AsyncIterator[bytes]:
    yield f"retry: {SSE_RETRY_MS}\n\n".encode()
    quiet_since = time.monotonic()
    while True:
        status, events = await anyio.to_thread.run_sync(read, after)
        for event in events:
            after = event.id
            yield _format(event)
        if events:
            quiet_since = time.monotonic()
        elif status in TERMINAL:
            return  # every event of a finished job has been sent
        elif time.monotonic() - quiet_since > SSE_KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield b": keep-alive\n\n"
        if await request.is_disconnected():
            return
        if not events:
            await anyio.sleep(SSE_POLL_S)
