"""Dataset and SQL routes (thin: parse, call the service, shape the response)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import structlog
from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from aiaas.api.deps import SessionDep, SettingsDep, StoreDep, require
from aiaas.api.pagination import Page, PageDep, paginate
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.data import service as data_service
from aiaas.data.models import Dataset, DatasetVersion
from aiaas.data.schemas import (
    DESCRIPTION_MAX,
    VERSION_MAX,
    AppendRows,
    DatasetRead,
    DatasetUpdate,
    DatasetVersionRead,
    ImportRequest,
    SqlRequest,
    SqlResponse,
    TransformRequest,
    clean_description,
    clean_name,
)
from aiaas.data.upload import Upload, receive_upload
from aiaas.errors import InvalidInput

log = structlog.get_logger()
T = TypeVar("T")

datasets_router = APIRouter(prefix="/datasets", tags=["datasets"])
#: A version number in a path: bounded, so no value beyond the 32-bit column reaches a query.
VersionNumber = Annotated[
    int, PathParam(ge=1, le=VERSION_MAX, description="Version number (1, 2, ...).")
]
sql_router = APIRouter(prefix="/sql", tags=["sql"])

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string", "maxLength": 200},
                        "description": {"type": "string", "maxLength": DESCRIPTION_MAX},
                        "format": {"type": "string", "enum": ["csv", "parquet", "jsonl"]},
                        "delimiter": {"type": "string", "maxLength": 2},
                        "quote": {"type": "string", "maxLength": 1},
                        "escape": {"type": "string", "maxLength": 1},
                        "header": {"type": "boolean"},
                        "encoding": {"type": "string", "enum": ["utf-8", "utf-16", "latin-1"]},
                    },
                }
            }
        },
    }
}


async def _with_upload(request: Request, settings: Any, use: Callable[[Upload], T]) -> T:
    """Receive the multipart upload, hand it to ``use`` in a worker thread, always clean up."""
    wd = data_service.new_work_dir(settings)
    try:
        started = time.perf_counter()
        upload = await receive_upload(request, wd / "upload", settings.limits.max_upload_bytes)
        log.info(
            "upload_received", bytes=upload.size, receive_s=round(time.perf_counter() - started, 3)
        )
        return await anyio.to_thread.run_sync(lambda: use(upload))
    finally:
        await anyio.to_thread.run_sync(data_service.remove_work_dir, wd)


@datasets_router.post("", status_code=201, response_model=DatasetRead, openapi_extra=_UPLOAD_DOC)
async def create_dataset(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: Principal = require(Action.DATASET_WRITE),
) -> Dataset:
    """Upload a file (CSV/TSV, gzip, Parquet, JSON Lines) as version 1 of a new dataset."""

    def create(upload: Upload) -> Dataset:
        try:
            name = clean_name(upload.fields.get("name") or Path(upload.filename or "").stem)
        except ValueError as exc:
            raise InvalidInput(f"invalid dataset name: {exc}") from None
        description = upload.fields.get("description") or None
        try:
            description = None if description is None else clean_description(description)
        except ValueError as exc:
            raise InvalidInput(f"invalid description: {exc}") from None
        return data_service.create_dataset(
            session,
            principal,
            store,
            settings,
            name=name,
            description=description,
            upload=upload.file,
            filename=upload.filename,
            size=upload.size,
            sha256=upload.sha256,
            fields=upload.fields,
        )

    return await _with_upload(request, settings, create)


@datasets_router.get("", response_model=Page[DatasetRead])
def list_datasets(
    session: SessionDep, params: PageDep, principal: Principal = require(Action.DATASET_READ)
) -> Page[Any]:
    """List the organization's datasets, newest first."""
    return paginate(session, data_service.list_datasets_stmt(principal), params, Dataset)


@datasets_router.post("/import", status_code=201, response_model=DatasetRead)
def import_dataset(
    body: ImportRequest,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: Principal = require(Action.DATASET_IMPORT),
) -> Dataset:
    """Create a dataset from a query on an allow-listed PostgreSQL database (admins)."""
    return data_service.import_dataset(
        session,
        principal,
        store,
        settings,
        name=body.name,
        description=body.description,
        url=body.url,
        query=body.query,
    )


@datasets_router.get("/{dataset_id}", response_model=DatasetRead)
def get_dataset(
    dataset_id: str, session: SessionDep, principal: Principal = require(Action.DATASET_READ)
) -> Dataset:
    """Return one dataset with its latest version."""
    return data_service.get_dataset(session, principal, dataset_id)


@datasets_router.patch("/{dataset_id}", response_model=DatasetRead)
def update_dataset(
    dataset_id: str,
    body: DatasetUpdate,
    session: SessionDep,
    principal: Principal = require(Action.DATASET_WRITE),
) -> Dataset:
    """Rename a dataset or change its description."""
    return data_service.update_dataset(
        session, principal, dataset_id, name=body.name, description=body.description
    )


@datasets_router.delete("/{dataset_id}", status_code=204)
def delete_dataset(
    dataset_id: str,
    session: SessionDep,
    store: StoreDep,
    principal: Principal = require(Action.DATASET_DELETE),
) -> Response:
    """Delete a dataset, all its versions and their files."""
    data_service.delete_dataset(session, principal, store, dataset_id)
    return Response(status_code=204)


@datasets_router.get("/{dataset_id}/versions", response_model=list[DatasetVersionRead])
def list_versions(
    dataset_id: str, session: SessionDep, principal: Principal = require(Action.DATASET_READ)
) -> list[DatasetVersion]:
    """All versions of a dataset, newest first."""
    return data_service.list_versions(session, principal, dataset_id)


@datasets_router.post(
    "/{dataset_id}/versions",
    status_code=201,
    response_model=DatasetVersionRead,
    openapi_extra=_UPLOAD_DOC,
)
async def add_version(
    dataset_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: Principal = require(Action.DATASET_WRITE),
) -> DatasetVersion:
    """Upload a file as the next version of a dataset."""
    data_service.get_dataset(session, principal, dataset_id)  # 404 before reading the body

    def add(upload: Upload) -> DatasetVersion:
        return data_service.add_version_from_file(
            session,
            principal,
            store,
            settings,
            dataset_id,
            upload=upload.file,
            filename=upload.filename,
            size=upload.size,
            sha256=upload.sha256,
            fields=upload.fields,
        )

    return await _with_upload(request, settings, add)


@datasets_router.post("/{dataset_id}/rows", status_code=201, response_model=DatasetVersionRead)
def append_rows(
    dataset_id: str,
    body: AppendRows,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: Principal = require(Action.DATASET_WRITE),
) -> DatasetVersion:
    """Append JSON records to the latest version, giving a new version."""
    return data_service.append_rows(session, principal, store, settings, dataset_id, body.records)


@datasets_router.get("/{dataset_id}/versions/{number}", response_model=DatasetVersionRead)
def get_version(
    dataset_id: str,
    number: VersionNumber,
    session: SessionDep,
    principal: Principal = require(Action.DATASET_READ),
) -> DatasetVersion:
    """One version: schema, row count, bytes, SHA-256, source, parent and recipe."""
    return data_service.get_version(session, principal, dataset_id, number)


@datasets_router.get("/{dataset_id}/versions/{number}/profile")
def get_profile(
    dataset_id: str,
    number: VersionNumber,
    session: SessionDep,
    store: StoreDep,
    principal: Principal = require(Action.DATASET_READ),
) -> dict[str, Any]:
    """The profile and quality report computed when the version was created."""
    return data_service.get_profile(session, principal, store, dataset_id, number)


@datasets_router.get("/{dataset_id}/versions/{number}/download")
def download_version(
    dataset_id: str,
    number: int,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    format: Annotated[Literal["csv", "parquet"], Query()] = "csv",
    principal: Principal = require(Action.DATASET_READ),
) -> StreamingResponse:
    """Download a version as CSV (converted on the fly) or as its Parquet file."""
    version = data_service.get_version(session, principal, dataset_id, number)
    dataset = data_service.get_dataset(session, principal, dataset_id)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset.name)[:100] or "data"
    filename = f"{safe}-v{number}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "parquet":
        headers["Content-Length"] = str(version.bytes)
        return StreamingResponse(
            data_service.parquet_chunks(store, version),
            media_type="application/vnd.apache.parquet",
            headers=headers,
        )
    return StreamingResponse(
        data_service.csv_chunks(store, settings, version),
        media_type="text/csv; charset=utf-8",
        headers=headers,
    )


@datasets_router.post(
    "/{dataset_id}/versions/{number}/transform",
    status_code=201,
    response_model=DatasetVersionRead,
)
def transform_version(
    dataset_id: str,
    number: VersionNumber,
    body: TransformRequest,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: Principal = require(Action.DATASET_WRITE),
) -> DatasetVersion:
    """Apply a cleaning recipe to a version; the result is the dataset's next version."""
    return data_service.transform_version(
        session, principal, store, settings, dataset_id, number, list(body.steps)
    )


@sql_router.post(
    "",
    response_model=SqlResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def run_sql(
    body: SqlRequest,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    principal: Principal = require(Action.SQL_QUERY),
) -> StreamingResponse:
    """Run one read-only SQL query over your datasets (views by name; ``"name@N"``)."""
    # The result is complete and checked (spooled to a file) before anything is sent, so
    # every failure is still a problem response; the body is then streamed row by row.
    result = data_service.run_sql(session, principal, store, settings, body.query)
    if body.format == "csv":
        return StreamingResponse(result.csv_chunks(), media_type="text/csv; charset=utf-8")
    return StreamingResponse(
        result.json_chunks(),
        media_type="application/json",
        headers={"Content-Length": str(result.json_length())},
    )


#: Mounted under /api/v1 by aiaas.api.routers.
router = APIRouter()
router.include_router(datasets_router)
router.include_router(sql_router)
