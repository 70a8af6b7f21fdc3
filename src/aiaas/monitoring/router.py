"""Monitoring routes of an endpoint: ground-truth feedback and live quality."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aiaas.api.deps import SessionDep, StoreDep, require
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.monitoring import service as monitoring_service
from aiaas.monitoring.schemas import (
    DURATION_PATTERN,
    DriftRead,
    FeedbackCreate,
    FeedbackRead,
    MonitoringRead,
)
from aiaas.serving.router import EndpointName

router = APIRouter(prefix="/endpoints", tags=["monitoring"])

Window = Annotated[
    str, Query(pattern=DURATION_PATTERN, description="How far back: 30m, 24h, 7d (≤ 90d).")
]


@router.post("/{name}/feedback", response_model=FeedbackRead)
def send_feedback(
    name: EndpointName,
    body: FeedbackCreate,
    session: SessionDep,
    principal: Principal = require(Action.PREDICT),
) -> FeedbackRead:
    """The true outcome of served predictions, by the ids ``/predict`` returned (up to
    10,000 a request; a repeat replaces the earlier outcome; late feedback is welcome)."""
    return monitoring_service.record_feedback(session, principal, name, body)


@router.get("/{name}/monitoring", response_model=MonitoringRead)
def get_monitoring(
    name: EndpointName,
    session: SessionDep,
    store: StoreDep,
    window: Window = "24h",
    bucket: Annotated[
        str | None,
        Query(pattern=DURATION_PATTERN, description="Series step (default 1h, or 1d past 2d)."),
    ] = None,
    principal: Principal = require(Action.ENDPOINT_READ),
) -> MonitoringRead:
    """Live quality per version (primary and shadow) over the window, from the prediction
    log joined with feedback, beside each version's training scores."""
    return monitoring_service.endpoint_monitoring(
        session, principal, store, name, window=window, bucket=bucket
    )


@router.get("/{name}/drift", response_model=DriftRead)
def get_drift(
    name: EndpointName,
    session: SessionDep,
    store: StoreDep,
    window: Window = "24h",
    principal: Principal = require(Action.ENDPOINT_READ),
) -> DriftRead:
    """Drift of the inputs answered in the window, per column and overall, against the
    training data of the version the endpoint serves (frozen on first use)."""
    return monitoring_service.endpoint_drift(session, principal, store, name, window=window)
