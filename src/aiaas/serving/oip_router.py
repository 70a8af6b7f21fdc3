"""The Open Inference Protocol (KServe V2) routes, mounted at the app root (``/v2``).

Thin: each route hands its request to :mod:`aiaas.serving.oip` and sends the
:class:`~aiaas.serving.core.Answer` back. ``/v2``, ``/v2/health/live`` and
``/v2/health/ready`` are public (nothing tenant-specific); every ``/v2/models`` route
requires ``endpoint:predict``, and another organization's endpoint is a 404. Errors are the
protocol's ``{"error": "<message>"}`` (authentication failures too: see
:mod:`aiaas.api.errors`).

The infer routes declare no request body in OpenAPI on purpose: Triton's client sends its
body without a ``Content-Type``, which the platform middleware refuses (415) on a route
that declares one. They read the body only after the credential is checked (the
``require`` dependency runs first), and the body limit still applies. With the serving
gateway on, the gateway answers the infer paths before these routes.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from aiaas.api.deps import ServingDep, StateDep, require
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.errors import NotFound
from aiaas.serving import oip
from aiaas.serving.core import Answer

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

_MAX_VERSION_DIGITS = 9
_OIP_ERROR = {"description": 'The protocol\'s error body: {"error": "<message>"}.'}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _OIP_ERROR,
    401: _OIP_ERROR,
    403: _OIP_ERROR,
    404: _OIP_ERROR,
    503: _OIP_ERROR,
}


def respond(answer: Answer) -> Response:
    """An :class:`Answer` as a response (its own content type: JSON or binary)."""
    response = Response(answer.body, status_code=answer.status)
    for name, value in answer.headers:
        response.headers[name.decode("latin-1")] = value.decode("latin-1")
    return response


def _version(raw: str, name: str) -> int | Answer:
    """The version number of the path, or the 404 of a version that cannot exist."""
    if raw.isdigit() and len(raw) <= _MAX_VERSION_DIGITS:
        return int(raw)
    return oip.error_answer(NotFound("endpoint version", f"{name[:100]}/{raw[:20]}"))


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    """Server live: the process answers."""
    return {"live": True}


@router.get("/health/ready", responses={503: _OIP_ERROR})
async def server_ready(state: StateDep) -> Response:
    """Server ready: the metadata database (where endpoints are read from) answers."""

    def ping() -> None:
        with state.session_factory() as session:
            session.execute(text("SELECT 1"))

    try:
        await anyio.to_thread.run_sync(ping)
    except Exception:
        return respond(oip.json_answer(503, {"ready": False, "error": "database unreachable"}))
    return respond(oip.json_answer(200, {"ready": True}))


@router.get("")
async def server_metadata() -> dict[str, Any]:
    """Server metadata: name, version and the protocol extensions supported."""
    return oip.server_metadata()


@router.get("/models/{name}", responses=_RESPONSES)
async def model_metadata(
    name: str, serving: ServingDep, principal: Principal = require(Action.PREDICT)
) -> Response:
    """An endpoint's metadata: the versions it routes to, its inputs and outputs."""
    return respond(await oip.metadata_answer(serving, principal, name, None))


@router.get("/models/{name}/versions/{version}", responses=_RESPONSES)
async def version_metadata(
    name: str, version: str, serving: ServingDep, principal: Principal = require(Action.PREDICT)
) -> Response:
    """One routed version's metadata (404 for a version the endpoint does not route to)."""
    number = _version(version, name)
    if isinstance(number, Answer):
        return respond(number)
    return respond(await oip.metadata_answer(serving, principal, name, number))


@router.get("/models/{name}/ready", responses=_RESPONSES)
async def model_ready(
    name: str, serving: ServingDep, principal: Principal = require(Action.PREDICT)
) -> Response:
    """200 when every version the endpoint routes to is loaded (or loads), else 503."""
    return respond(await oip.model_ready(serving, principal, name, None))


@router.get("/models/{name}/versions/{version}/ready", responses=_RESPONSES)
async def version_ready(
    name: str, version: str, serving: ServingDep, principal: Principal = require(Action.PREDICT)
) -> Response:
    """200 when the version is loaded (or loads), else 503."""
    number = _version(version, name)
    if isinstance(number, Answer):
        return respond(number)
    return respond(await oip.model_ready(serving, principal, name, number))


@router.post("/models/{name}/infer", responses=_RESPONSES)
async def infer(
    name: str, request: Request, serving: ServingDep, principal: Principal = require(Action.PREDICT)
) -> Response:
    """Inference: JSON tensors, or the binary tensor data extension
    (``Inference-Header-Content-Length``)."""
    body = await request.body()
    answer = await oip.infer(
        serving,
        principal,
        name,
        body,
        headers=dict(request.headers),
        version=None,
        request_id=_request_id(request),
    )
    return respond(answer)


@router.post("/models/{name}/versions/{version}/infer", responses=_RESPONSES)
async def infer_version(
    name: str,
    version: str,
    request: Request,
    serving: ServingDep,
    principal: Principal = require(Action.PREDICT),
) -> Response:
    """Inference by one routed version (404 for a version the endpoint does not route to)."""
    number = _version(version, name)
    if isinstance(number, Answer):
        return respond(number)
    body = await request.body()
    answer = await oip.infer(
        serving,
        principal,
        name,
        body,
        headers=dict(request.headers),
        version=number,
        request_id=_request_id(request),
    )
    return respond(answer)
