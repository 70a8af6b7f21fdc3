"""Dataset and SQL routes (thin: one service call each, ORM objects through response_model)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio
import structlog
from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from aiaas.api.deps import DataDep, PageDep, SessionDep, require
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.data import export
from aiaas.data import service as data_service
from aiaas.data.context import DataContext
from aiaas.data.conversion import UploadedFile
from aiaas.data.models import Dataset, DatasetVersion
from aiaas.data.schemas import (
    DESCRIPTION_MAX,
    VERSION_MAX,
    DatasetImport,
    DatasetRead,
    DatasetUpdate,
    DatasetVersionRead,
    RowsAppend,
    SqlQuery,
    SqlResultRead,
    VersionTransform,
    dataset_create_form,
)
from aiaas.data.scratch import new_work_dir, remove_work_dir
from aiaas.data.upload import receive_upload
from aiaas.db.pagination import Page

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


async def _with_upload(request: Request, ctx: DataContext, use: Callable[[UploadedFile], T]) -> T:
    """Receive the multipart upload, hand it to ``use`` in a worker thread, always clean up.

    The route is ``async`` only to stream the body to disk; every database call of ``use``
    runs in the worker thread, never on the event loop.
    """
    wd = await anyio.to_thread.run_sync(new_work_dir, ctx.settings)
    try:
        started = time.perf_counter()
        max_bytes = ctx.settings.limits.max_upload_bytes
        upload = await receive_upload(request, wd / "upload", max_bytes)
        log.info(
            "upload_received", bytes=upload.size, receive_s=round(time.perf_counter() - started, 3)
        )
        received = UploadedFile(
            upload.file, upload.filename, upload.size, upload.sha256, upload.fields
        )
        return await anyio.to_thread.run_sync(lambda: use(received))
    finally:
        await anyio.to_thread.run_sync(remove_work_dir, wd)


@datasets_router.post("", status_code=201, response_model=DatasetRead, openapi_extra=_UPLOAD_DOC)
async def create_dataset(
    request: Request,
    session: SessionDep,
    ctx: DataDep,
    principal: Principal = require(Action.DATASET_WRITE),
) -> Dataset:
    """Upload a file (CSV/TSV, gzip, Parquet, JSON Lines) as version 1 of a new dataset."""

    def create(upload: UploadedFile) -> Dataset:
        form = dataset_create_form(upload.fields, upload.filename)
        return data_service.create_dataset(
            session, principal, ctx, name=form.name, description=form.description, upload=upload
        )

    return await _with_upload(request, ctx, create)


@datasets_router.get("", response_model=Page[DatasetRead])
def list_datasets(
    session: SessionDep, params: PageDep, principal: Principal = require(Action.DATASET_READ)
) -> Page[Dataset]:
    """List the organization's datasets, newest first."""
    return data_service.list_datasets(session, principal, params)


@datasets_router.post("/import", status_code=201, response_model=DatasetRead)
def import_dataset(
    body: DatasetImport,
    session: SessionDep,
    ctx: DataDep,
    principal: Principal = require(Action.DATASET_IMPORT),
) -> Dataset:
    """Create a dataset from a query on an allow-listed PostgreSQL database (admins)."""
    return data_service.import_dataset(
        session,
        principal,
        ctx,
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
    ctx: DataDep,
    principal: Principal = require(Action.DATASET_DELETE),
) -> Response:
    """Delete a dataset, all its versions and their files."""
    data_service.delete_dataset(session, principal, ctx, dataset_id)
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
    ctx: DataDep,
    principal: Principal = require(Action.DATASET_WRITE),
) -> DatasetVersion:
    """Upload a file as the next version of a dataset."""
    # 404 before reading the body; in a worker thread, as every database call of this route
    await anyio.to_thread.run_sync(data_service.get_dataset, session, principal, dataset_id)

    def add(upload: UploadedFile) -> DatasetVersion:
        return data_service.add_version_from_file(
            session, principal, ctx, dataset_id, upload=upload
        )

    return await _with_upload(request, ctx, add)


@datasets_router.post("/{dataset_id}/rows", status_code=201, response_model=DatasetVersionRead)
def append_rows(
    dataset_id: str,
    body: RowsAppend,
    session: SessionDep,
    ctx: DataDep,
    principal: Principal = require(Action.DATASET_WRITE),
) -> DatasetVersion:
    """Append JSON records to the latest version, giving a new version."""
    return data_service.append_rows(session, principal, ctx, dataset_id, body.records)


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
    ctx: DataDep,
    principal: Principal = require(Action.DATASET_READ),
) -> dict[str, Any]:
    """The profile and quality report computed when the version was created."""
    return data_service.get_profile(session, principal, ctx, dataset_id, number)


@datasets_router.get("/{dataset_id}/versions/{number}/download")
def download_version(
    dataset_id: str,
    number: int,
    session: SessionDep,
    ctx: DataDep,
    format: Annotated[Literal["csv", "parquet"], Query()] = "csv",
    principal: Principal = require(Action.DATASET_READ),
) -> StreamingResponse:
    """Download a version as CSV (converted on the fly) or as its Parquet file."""
    version = data_service.get_version(session, principal, dataset_id, number)
    dataset = data_service.get_dataset(session, principal, dataset_id)
    filename = data_service.download_name(dataset, number, format)
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "parquet":
        headers["Content-Length"] = str(version.bytes)
        return StreamingResponse(
            export.parquet_chunks(ctx.store, version),
            media_type="application/vnd.apache.parquet",
            headers=headers,
        )
    return StreamingResponse(
        export.csv_chunks(ctx.store, ctx.settings, version),
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
    body: VersionTransform,
    session: SessionDep,
    ctx: DataDep,
    principal: Principal = require(Action.DATASET_WRITE),
) -> DatasetVersion:
    """Apply a cleaning recipe to a version; the result is the dataset's next version."""
    return data_service.transform_version(
        session, principal, ctx, dataset_id, number, list(body.steps)
    )


@sql_router.post(
    "",
    response_model=SqlResultRead,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def run_sql(
    body: SqlQuery,
    session: SessionDep,
    ctx: DataDep,
    principal: Principal = require(Action.SQL_QUERY),
) -> StreamingResponse:
    """Run one read-only SQL query over your datasets (views by name; ``"name@N"``)."""
    # The result is complete and checked (spooled to a file) before anything is sent, so
    # every failure is still a problem response; the body is then streamed row by row.
    result = data_service.run_sql(session, principal, ctx, body.query)
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
