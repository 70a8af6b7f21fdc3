"""Probes and metrics: public by design (see PUBLIC_ROUTES)."""

from __future__ import annotations

import hmac

import anyio
from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.responses import JSONResponse, Response

from aiaas.api.deps import StateDep
from aiaas.errors import ServiceUnavailable, Unauthorized
from aiaas.monitoring.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """Readiness: the metadata database answers."""

    def ping() -> None:
        with state.session_factory() as session:
            session.execute(text("SELECT 1"))

    try:
        await anyio.to_thread.run_sync(ping)
    except Exception as exc:
        raise ServiceUnavailable("database unreachable") from exc
    return JSONResponse({"status": "ready", "database": "ok"})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus metrics (text format). Guarded by AIAAS_METRICS_TOKEN when set."""
    token = state.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise Unauthorized("metrics token required")
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
