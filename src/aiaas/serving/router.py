"""Endpoint routes: deploy, list, change traffic, roll back, delete, predict.

The management routes are thin (one service call, the ORM object through
``response_model``). The prediction routes (``/predict``, ``/invocations``) read the raw
body and hand it to :class:`aiaas.serving.core.Serving`, which answers from its caches
without a database query; with ``AIAAS_SERVING__FAST_PATH`` on (the default) the serving
gateway answers these two paths before FastAPI routes them, and these routes document them
(OpenAPI) and serve when the gateway is off.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam

from aiaas.api.deps import PageDep, ServingDep, SessionDep, SettingsDep, require
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.db.pagination import Page
from aiaas.registry.schemas import MODEL_NAME_PATTERN
from aiaas.serving import service as serving_service
from aiaas.serving.core import Answer
from aiaas.serving.models import Endpoint, EndpointRevision
from aiaas.serving.schemas import (
    ENDPOINT_NAME_MAX,
    EndpointCreate,
    EndpointRead,
    EndpointRevisionRead,
    EndpointRollback,
    EndpointUpdate,
)

router = APIRouter(prefix="/endpoints", tags=["endpoints"])

EndpointName = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=ENDPOINT_NAME_MAX,
        pattern=MODEL_NAME_PATTERN,
        description="The endpoint's name (compared regardless of case).",
    ),
]
_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": 'One of {"instances": [...]}, {"dataframe_split": {...}}, '
                    '{"dataframe_records": [...]}, {"inputs": ...}.',
                },
                "example": {"instances": [{"column": 1.0}]},
            }
        },
    }
}


def respond(answer: Answer) -> Response:
    """An :class:`Answer` (body bytes and headers) as a response."""
    response = Response(answer.body, status_code=answer.status, media_type="application/json")
    for name, value in answer.headers:
        response.headers[name.decode("latin-1")] = value.decode("latin-1")
    return response


@router.post("", status_code=201, response_model=EndpointRead)
def create_endpoint(
    body: EndpointCreate,
    session: SessionDep,
    settings: SettingsDep,
    principal: Principal = require(Action.ENDPOINT_WRITE),
) -> Endpoint:
    """Deploy a model version (or an alias, or a traffic split) to a new endpoint."""
    return serving_service.create_endpoint(
        session, principal, body, max_per_org=settings.serving.max_endpoints_per_org
    )


@router.get("", response_model=Page[EndpointRead])
def list_endpoints(
    session: SessionDep,
    params: PageDep,
    model: Annotated[str | None, Query(max_length=200)] = None,
    principal: Principal = require(Action.ENDPOINT_READ),
) -> Page[Endpoint]:
    """List the organization's endpoints, newest first (``model``: only those serving it)."""
    return serving_service.list_endpoints(session, principal, params, model=model)


@router.get("/{name}", response_model=EndpointRead)
def get_endpoint(
    name: EndpointName, session: SessionDep, principal: Principal = require(Action.ENDPOINT_READ)
) -> Endpoint:
    """Return one endpoint: its traffic, shadow and revision."""
    return serving_service.get_endpoint(session, principal, name)


@router.patch("/{name}", response_model=EndpointRead)
def update_endpoint(
    name: EndpointName,
    body: EndpointUpdate,
    session: SessionDep,
    principal: Principal = require(Action.ENDPOINT_WRITE),
) -> Endpoint:
    """Change the traffic split (or version, or alias), the shadow or the description."""
    return serving_service.update_endpoint(session, principal, name, body)


@router.post("/{name}/rollback", response_model=EndpointRead)
def rollback_endpoint(
    name: EndpointName,
    body: EndpointRollback,
    session: SessionDep,
    principal: Principal = require(Action.ENDPOINT_WRITE),
) -> Endpoint:
    """Serve again what an earlier revision served (default: the previous one)."""
    return serving_service.rollback_endpoint(session, principal, name, revision=body.revision)


@router.get("/{name}/revisions", response_model=Page[EndpointRevisionRead])
def list_revisions(
    name: EndpointName,
    session: SessionDep,
    params: PageDep,
    principal: Principal = require(Action.ENDPOINT_READ),
) -> Page[EndpointRevision]:
    """The endpoint's revisions, newest first (what each served, who changed it, why)."""
    return serving_service.list_revisions(session, principal, name, params)


@router.delete("/{name}", status_code=204)
def delete_endpoint(
    name: EndpointName, session: SessionDep, principal: Principal = require(Action.ENDPOINT_DELETE)
) -> Response:
    """Remove an endpoint (its model versions stay in the registry)."""
    serving_service.delete_endpoint(session, principal, name)
    return Response(status_code=204)


@router.post("/{name}/predict", openapi_extra=_PREDICT_BODY)
async def predict(
    name: EndpointName,
    request: Request,
    serving: ServingDep,
    principal: Principal = require(Action.PREDICT),
) -> Response:
    """Predict: each row gets an ``id`` (for feedback) and a ``label`` with
    ``probabilities`` by class, or a ``value``."""
    body = await request.body()
    return respond(await serving.predict(principal, name, body, request_id=_request_id(request)))


@router.post("/{name}/invocations", openapi_extra=_PREDICT_BODY)
async def invocations(
    name: EndpointName,
    request: Request,
    serving: ServingDep,
    principal: Principal = require(Action.PREDICT),
) -> Response:
    """MLflow's scoring-server protocol: the same request and answer bytes as
    ``mlflow models serve``'s ``/invocations``."""
    body = await request.body()
    answer = await serving.predict(
        principal, name, body, request_id=_request_id(request), mlflow=True
    )
    return respond(answer)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")
