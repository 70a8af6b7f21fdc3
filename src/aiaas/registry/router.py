"""Model registry routes (thin: one service call each, ORM objects through response_model)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from aiaas.api.deps import PageDep, SessionDep, SettingsDep, StoreDep, require
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.data.schemas import DESCRIPTION_MAX, VERSION_MAX
from aiaas.db.pagination import Page
from aiaas.registry import service as registry_service
from aiaas.registry.models import ModelAlias, ModelVersion, RegisteredModel
from aiaas.registry.schemas import (
    ALIAS_MAX,
    MODEL_NAME_PATTERN,
    ONNX_FILE,
    UPLOAD_TASKS,
    AliasSet,
    ModelAliasRead,
    ModelUpdate,
    ModelVersionRead,
    ModelVersionUpdate,
    RegisteredModelRead,
    VersionQuantize,
)
from aiaas.registry.upload import CheckedOnnx, with_onnx_upload
from aiaas.schemas import NAME_MAX

router = APIRouter(prefix="/models", tags=["models"])

ModelName = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=NAME_MAX,
        pattern=MODEL_NAME_PATTERN,
        description="The model's name (compared regardless of case).",
    ),
]
VersionNumber = Annotated[
    int, PathParam(ge=1, le=VERSION_MAX, description="Version number (1, 2, ...).")
]
AliasName = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=ALIAS_MAX,
        description="An alias: lower case, [a-z][a-z0-9_-]{0,63}; `latest` is reserved.",
    ),
]
ArtifactName = Annotated[
    str, PathParam(min_length=1, max_length=128, description="A file of the version.")
]
#: The multipart body of ``POST /models/{name}/versions``; declaring it also gives the route
#: the platform middleware's upload size limit (``api/route_table.py``).
_ONNX_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The ONNX model: self-contained (no external "
                            "data), standard operator domains only, no ZipMap output.",
                        },
                        "signature": {
                            "type": "string",
                            "description": 'JSON text: {"columns": ["a", "b"]} or {"inputs": '
                            '[{"name": "a", "type": "float"}]}, and "classes" (optional).',
                        },
                        "task": {"type": "string", "enum": list(UPLOAD_TASKS)},
                        "description": {"type": "string", "maxLength": DESCRIPTION_MAX},
                    },
                }
            }
        },
    }
}
_BINARY: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
}


def _download(download: registry_service.ArtifactDownload) -> StreamingResponse:
    headers = {
        "Content-Disposition": f'attachment; filename="{download.filename}"',
        "Content-Length": str(download.size),
        "ETag": f'"{download.sha256}"',
    }
    return StreamingResponse(download.chunks, media_type=download.media_type, headers=headers)


@router.get("", response_model=Page[RegisteredModelRead])
def list_models(
    session: SessionDep,
    params: PageDep,
    name_prefix: Annotated[str | None, Query(max_length=NAME_MAX)] = None,
    principal: Principal = require(Action.MODEL_READ),
) -> Page[RegisteredModel]:
    """List the organization's registered models, newest first."""
    return registry_service.list_models(session, principal, params, name_prefix=name_prefix)


@router.get("/{name}", response_model=RegisteredModelRead)
def get_model(
    name: ModelName, session: SessionDep, principal: Principal = require(Action.MODEL_READ)
) -> RegisteredModel:
    """One registered model with its aliases and latest version number."""
    return registry_service.get_model(session, principal, name)


@router.patch("/{name}", response_model=RegisteredModelRead)
def update_model(
    name: ModelName,
    body: ModelUpdate,
    session: SessionDep,
    principal: Principal = require(Action.MODEL_WRITE),
) -> RegisteredModel:
    """Change a model's description or replace its tags."""
    return registry_service.update_model(
        session, principal, name, description=body.description, tags=body.tags
    )


@router.delete("/{name}", status_code=204)
def delete_model(
    name: ModelName,
    session: SessionDep,
    store: StoreDep,
    principal: Principal = require(Action.MODEL_DELETE),
) -> Response:
    """Delete a model, all its versions and their files (409 while a version is in use)."""
    registry_service.delete_model(session, principal, store, name)
    return Response(status_code=204)


@router.get("/{name}/versions", response_model=Page[ModelVersionRead])
def list_versions(
    name: ModelName,
    session: SessionDep,
    params: PageDep,
    principal: Principal = require(Action.MODEL_READ),
) -> Page[ModelVersion]:
    """The versions of a model, newest first."""
    return registry_service.list_versions(session, principal, name, params)


@router.post(
    "/{name}/versions",
    status_code=201,
    response_model=ModelVersionRead,
    openapi_extra=_ONNX_UPLOAD_DOC,
)
async def upload_version(
    name: ModelName,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: Principal = require(Action.MODEL_WRITE),
) -> ModelVersion:
    """Upload an ONNX model as the next version of model ``name`` (created if it does not
    exist); it is loaded, checked and run in a sandbox first. ``async`` only to stream the
    body: the check and every database call run in a worker thread."""

    def register(checked: CheckedOnnx) -> ModelVersion:
        return registry_service.register_uploaded(session, principal, store, name, checked)

    return await with_onnx_upload(request, settings, register)


@router.get("/{name}/versions/{number}", response_model=ModelVersionRead)
def get_version(
    name: ModelName,
    number: VersionNumber,
    session: SessionDep,
    principal: Principal = require(Action.MODEL_READ),
) -> ModelVersion:
    """One version: metrics, signature, lineage, feature importance, artifacts, card."""
    return registry_service.get_version(session, principal, name, number)


@router.patch("/{name}/versions/{number}", response_model=ModelVersionRead)
def update_version(
    name: ModelName,
    number: VersionNumber,
    body: ModelVersionUpdate,
    session: SessionDep,
    principal: Principal = require(Action.MODEL_WRITE),
) -> ModelVersion:
    """Replace a version's tags (everything else of a version is immutable)."""
    return registry_service.update_version(session, principal, name, number, tags=body.tags)


@router.delete("/{name}/versions/{number}", status_code=204)
def delete_version(
    name: ModelName,
    number: VersionNumber,
    session: SessionDep,
    store: StoreDep,
    principal: Principal = require(Action.MODEL_DELETE),
) -> Response:
    """Delete a version and all its files (409 while an alias or an endpoint uses it)."""
    registry_service.delete_version(session, principal, store, name, number)
    return Response(status_code=204)


@router.post("/{name}/versions/{number}/quantize", status_code=201, response_model=ModelVersionRead)
def quantize_version(
    name: ModelName,
    number: VersionNumber,
    body: VersionQuantize,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: Principal = require(Action.MODEL_WRITE),
) -> ModelVersion:
    """Quantize the version's ONNX graph (8-bit integer weights) into the model's next
    version, with the accuracy, latency and size of both measured on a reference dataset
    (its ``metrics``); the work runs in a sandbox."""
    return registry_service.quantize_version(
        session,
        principal,
        store,
        settings,
        name,
        number,
        dataset_id=body.dataset_id,
        dataset_version=body.dataset_version,
        target=body.target,
    )


@router.get(
    "/{name}/versions/{number}/card",
    response_class=Response,
    responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}}}},
)
def get_card(
    name: ModelName,
    number: VersionNumber,
    session: SessionDep,
    principal: Principal = require(Action.MODEL_READ),
) -> Response:
    """The version's model card (Markdown)."""
    version = registry_service.get_version(session, principal, name, number)
    return Response(version.card, media_type="text/markdown; charset=utf-8")


@router.get("/{name}/versions/{number}/onnx", response_class=StreamingResponse, responses=_BINARY)
def download_onnx(
    name: ModelName,
    number: VersionNumber,
    session: SessionDep,
    store: StoreDep,
    principal: Principal = require(Action.MODEL_READ),
) -> StreamingResponse:
    """Download the version's ONNX graph (404 if the model has none)."""
    return _download(
        registry_service.open_artifact(session, principal, store, name, number, ONNX_FILE)
    )


@router.get(
    "/{name}/versions/{number}/artifacts/{path}",
    response_class=StreamingResponse,
    responses=_BINARY,
)
def download_artifact(
    name: ModelName,
    number: VersionNumber,
    path: ArtifactName,
    session: SessionDep,
    store: StoreDep,
    principal: Principal = require(Action.MODEL_READ),
) -> StreamingResponse:
    """Download one file the version's ``artifacts`` list names."""
    return _download(registry_service.open_artifact(session, principal, store, name, number, path))


@router.get("/{name}/aliases/{alias}", response_model=ModelVersionRead)
def resolve_alias(
    name: ModelName,
    alias: AliasName,
    session: SessionDep,
    principal: Principal = require(Action.MODEL_READ),
) -> ModelVersion:
    """The version an alias names (``latest``: the newest version)."""
    return registry_service.resolve_alias(session, principal, name, alias)


@router.put("/{name}/aliases/{alias}", response_model=ModelAliasRead)
def set_alias(
    name: ModelName,
    alias: AliasName,
    body: AliasSet,
    session: SessionDep,
    principal: Principal = require(Action.MODEL_WRITE),
) -> ModelAlias:
    """Create an alias or move it to another version (atomically)."""
    return registry_service.set_alias(session, principal, name, alias, version=body.version)


@router.delete("/{name}/aliases/{alias}", status_code=204)
def delete_alias(
    name: ModelName,
    alias: AliasName,
    session: SessionDep,
    principal: Principal = require(Action.MODEL_WRITE),
) -> Response:
    """Remove an alias (the version stays)."""
    registry_service.delete_alias(session, principal, name, alias)
    return Response(status_code=204)
