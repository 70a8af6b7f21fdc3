"""Datasets and their versions: the use cases of the data domain.

Every function takes ``(session, principal, ctx, …)``: ``ctx`` is the app's
:class:`~aiaas.data.context.DataContext` (settings, store, gates, the resolved secret).

Invariants:

- every query starts from ``scoped(select(...), principal)``: another organization's dataset
  is a 404, and its names are unknown to the SQL sandbox;
- versions are stored bytes first, row second (:func:`aiaas.data.versions.store_version`);
- all parsing and conversion happens in a private work directory
  (:mod:`aiaas.data.scratch`) that is removed on every path, success or failure — so a
  rejected upload leaves no version row and no file;
- dataset names are unique per organization regardless of case (the SQL views need it);
- conversions, appends, transforms and imports run in an ingest slot
  (:class:`~aiaas.data.gates.DataGates`: a global cap, a per-organization cap, round-robin
  admission), and no version is stored beyond the organization's storage quota.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth.principal import Principal
from aiaas.data import ingest, recipes
from aiaas.data.append import append_records, check_records, unknown_columns
from aiaas.data.context import DataContext
from aiaas.data.conversion import UploadedFile, convert_upload, source_from_upload, upload_options
from aiaas.data.limits import (
    import_limits,
    ingest_limits,
    recipe_context,
    sql_limits,
)
from aiaas.data.models import Dataset, DatasetVersion
from aiaas.data.schemas import VERSION_MAX
from aiaas.data.scratch import work_dir
from aiaas.data.sql import SqlResult, run_query
from aiaas.data.sql_import import import_query
from aiaas.data.versions import VersionInfo, check_quota, local_parquet, store_version
from aiaas.db.base import scoped, utcnow
from aiaas.db.pagination import Page, PageParams, paginate
from aiaas.errors import Conflict, InvalidInput, NotFound

log = structlog.get_logger()


# --------------------------------------------------------------------------- reads


def get_dataset(session: Session, principal: Principal, dataset_id: str) -> Dataset:
    """Return one dataset of the caller's organization."""
    stmt = scoped(select(Dataset), principal).where(Dataset.id == dataset_id)
    if (dataset := session.scalar(stmt)) is None:
        raise NotFound("dataset", dataset_id)
    return dataset


def list_datasets(session: Session, principal: Principal, params: PageParams) -> Page[Dataset]:
    """The organization's datasets, newest first."""
    return paginate(session, scoped(select(Dataset), principal), params, Dataset)


def get_version(
    session: Session, principal: Principal, dataset_id: str, number: int
) -> DatasetVersion:
    if not 1 <= number <= VERSION_MAX:  # the column is a 32-bit integer on every backend
        raise InvalidInput(f"version numbers are 1 to {VERSION_MAX}")
    dataset = get_dataset(session, principal, dataset_id)
    stmt = scoped(select(DatasetVersion), principal).where(
        DatasetVersion.dataset_id == dataset.id, DatasetVersion.number == number
    )
    if (version := session.scalar(stmt)) is None:
        raise NotFound("dataset version", f"{dataset_id}@{number}")
    return version


def list_versions(session: Session, principal: Principal, dataset_id: str) -> list[DatasetVersion]:
    dataset = get_dataset(session, principal, dataset_id)
    stmt = (
        scoped(select(DatasetVersion), principal)
        .where(DatasetVersion.dataset_id == dataset.id)
        .order_by(DatasetVersion.number.desc())
    )
    return list(session.scalars(stmt))


def get_profile(
    session: Session, principal: Principal, ctx: DataContext, dataset_id: str, number: int
) -> dict[str, Any]:
    version = get_version(session, principal, dataset_id, number)
    raw = ctx.store.get_bytes(principal.org_id, version.profile_key)
    report: dict[str, Any] = json.loads(raw)
    return report


def download_name(dataset: Dataset, number: int, fmt: str) -> str:
    """A file name for a download that is safe in a Content-Disposition header."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset.name)[:100]
    return f"{safe or 'data'}-v{number}.{fmt}"


# --------------------------------------------------------------------------- writes


def _ensure_name_free(
    session: Session, principal: Principal, name: str, *, exclude: str | None = None
) -> None:
    """409 if another dataset of the organization has ``name``, compared case-insensitively.

    SQL (DuckDB) folds identifiers to lower case, so ``Sales`` and ``sales`` would be one view;
    the database enforces the same with a unique index on ``(org_id, lower(name))``.
    """
    stmt = scoped(select(Dataset.name), principal).where(
        func.lower(Dataset.name) == func.lower(name)
    )
    if exclude is not None:
        stmt = stmt.where(Dataset.id != exclude)
    existing = session.scalar(stmt.limit(1))
    if existing is not None:
        raise Conflict(_name_taken(existing))


def _name_taken(existing: str) -> str:
    return f"a dataset named {existing!r} already exists (names are unique regardless of case)"


def new_dataset(
    session: Session,
    principal: Principal,
    name: str,
    description: str | None,
    **audit_details: Any,
) -> Dataset:
    """Add an empty dataset row (version 0); a taken name is a 409."""
    dataset = Dataset(
        org_id=principal.org_id,
        name=name,
        description=description,
        latest_version=0,
        created_by=principal.actor_id,
    )
    session.add(dataset)
    try:
        session.flush()
    except IntegrityError:  # another request took the name meanwhile (the unique index)
        raise Conflict(_name_taken(name)) from None
    audit.set_resource("dataset", dataset.id, name=name, **audit_details)
    return dataset


def create_dataset(
    session: Session,
    principal: Principal,
    ctx: DataContext,
    *,
    name: str,
    description: str | None,
    upload: UploadedFile,
) -> Dataset:
    """Create a dataset whose version 1 is the uploaded file (inside a work dir)."""
    options = upload_options(upload.fields)
    _ensure_name_free(session, principal, name)
    with ctx.gates.ingest_slot(principal.org_id):
        _ensure_name_free(session, principal, name)  # again: the wait for a slot can be long
        check_quota(session, principal, ctx.settings)
        result = convert_upload(
            ctx.settings, upload.path, filename=upload.filename, options=options
        )
        dataset = new_dataset(session, principal, name, description)
        source = source_from_upload(result, upload.filename, upload.size, upload.sha256)
        store_version(session, principal, ctx, dataset, result.parquet_path, VersionInfo(source))
    session.refresh(dataset)
    return dataset


def add_version_from_file(
    session: Session,
    principal: Principal,
    ctx: DataContext,
    dataset_id: str,
    *,
    upload: UploadedFile,
) -> DatasetVersion:
    """The uploaded file (inside a work dir) as the dataset's next version."""
    dataset = get_dataset(session, principal, dataset_id)
    audit.set_resource("dataset", dataset.id)
    options = upload_options(upload.fields)
    with ctx.gates.ingest_slot(principal.org_id):
        check_quota(session, principal, ctx.settings)
        result = convert_upload(
            ctx.settings, upload.path, filename=upload.filename, options=options
        )
        source = source_from_upload(result, upload.filename, upload.size, upload.sha256)
        info = VersionInfo(source, parent_version=dataset.latest_version or None)
        return store_version(session, principal, ctx, dataset, result.parquet_path, info)


def update_dataset(
    session: Session,
    principal: Principal,
    dataset_id: str,
    *,
    name: str | None,
    description: str | None,
) -> Dataset:
    dataset = get_dataset(session, principal, dataset_id)
    audit.set_resource("dataset", dataset.id)
    if name is not None and name != dataset.name:
        _ensure_name_free(session, principal, name, exclude=dataset.id)
        dataset.name = name
    if description is not None:
        dataset.description = description
    dataset.updated_at = utcnow()
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(_name_taken(str(name))) from None
    return dataset


def delete_dataset(
    session: Session, principal: Principal, ctx: DataContext, dataset_id: str
) -> None:
    """Delete a dataset, its versions and their files (the files once the rows are gone)."""
    dataset = get_dataset(session, principal, dataset_id)
    audit.set_resource("dataset", dataset.id)
    session.delete(dataset)
    session.flush()
    store, org_id, prefix = ctx.store, principal.org_id, f"datasets/{dataset.id}"

    def delete_files(_session: Session) -> None:
        # only once the rows are gone for good: a failed commit keeps files and rows together
        try:
            store.delete_prefix(org_id, prefix)
        except Exception as exc:  # the rows are gone; sweep_orphans removes the files later
            log.warning("dataset_files_not_deleted", dataset_id=dataset_id, error=str(exc))

    event.listen(session, "after_commit", delete_files, once=True)


def append_rows(
    session: Session,
    principal: Principal,
    ctx: DataContext,
    dataset_id: str,
    records: list[dict[str, Any]],
) -> DatasetVersion:
    """A new version: the latest one plus ``records`` (columns must exist; types are cast)."""
    dataset = get_dataset(session, principal, dataset_id)
    audit.set_resource("dataset", dataset.id, appended=len(records))
    most = ctx.settings.data.max_append_records
    if len(records) > most:
        raise InvalidInput(f"at most {most} records per request")
    check_records(records)
    parent = dataset.version
    if parent is None:
        raise Conflict("the dataset has no version to append to")
    if unknown := unknown_columns(records, parent.columns_schema):
        raise InvalidInput(f"unknown column(s): {', '.join(repr(u) for u in unknown[:10])}")
    limits = ingest_limits(ctx.settings)
    with ctx.gates.ingest_slot(principal.org_id), work_dir(ctx.settings) as wd:
        check_quota(session, principal, ctx.settings)
        parent_path = local_parquet(ctx.store, ctx.settings, parent)
        out = append_records(
            parent_path,
            parent.columns_schema,
            records,
            wd,
            memory_limit=limits.memory_limit,
            threads=limits.threads,
        )
        info = VersionInfo({"kind": "append", "records": len(records)}, parent.number)
        return store_version(session, principal, ctx, dataset, out, info)


def transform_version(
    session: Session,
    principal: Principal,
    ctx: DataContext,
    dataset_id: str,
    number: int,
    steps: list[recipes.Step],
) -> DatasetVersion:
    """Apply a recipe to version ``number``; the result is the dataset's next version."""
    version = get_version(session, principal, dataset_id, number)
    dataset = get_dataset(session, principal, dataset_id)
    audit.set_resource("dataset", dataset.id, recipe_steps=len(steps))
    recipe = recipes.Recipe(steps=steps)
    recipe_ctx = recipe_context(ctx.settings, ctx.secret_key, principal.org_id)
    with ctx.gates.ingest_slot(principal.org_id), work_dir(ctx.settings) as wd:
        check_quota(session, principal, ctx.settings)
        src = local_parquet(ctx.store, ctx.settings, version)
        out = wd / "transformed.parquet"
        recipes.apply_recipe(src, out, recipe, recipe_ctx)
        info = VersionInfo(
            {"kind": "transform", "from_version": number},
            parent_version=number,
            recipe=[s.model_dump(mode="json") for s in recipe.steps],
        )
        return store_version(session, principal, ctx, dataset, out, info)


def import_dataset(
    session: Session,
    principal: Principal,
    ctx: DataContext,
    *,
    name: str,
    description: str | None,
    url: str,
    query: str,
) -> Dataset:
    """Create a dataset from a query on an external PostgreSQL database (admins only)."""
    _ensure_name_free(session, principal, name)
    with ctx.gates.ingest_slot(principal.org_id), work_dir(ctx.settings) as wd:
        _ensure_name_free(session, principal, name)  # again: the wait for a slot can be long
        check_quota(session, principal, ctx.settings)
        dest = wd / "import.jsonl"
        rows = import_query(url, query, dest, import_limits(ctx.settings))
        options = ingest.IngestOptions(format="jsonl")
        result = convert_upload(ctx.settings, dest, options=options)
        dataset = new_dataset(session, principal, name, description, imported_rows=rows)
        safe_url = make_url(url).render_as_string(hide_password=True)
        source = {"kind": "sql_import", "url": safe_url, "query": query[:10_000]}
        store_version(session, principal, ctx, dataset, result.parquet_path, VersionInfo(source))
    session.refresh(dataset)
    return dataset


# --------------------------------------------------------------------------- SQL


def run_sql(session: Session, principal: Principal, ctx: DataContext, query: str) -> SqlResult:
    """Run a read-only query over the caller's datasets (by name, ``name@N`` for versions)."""
    audit.set_resource("sql_query", None, query_chars=len(query))
    with ctx.gates.sql.slot(principal.org_id):
        return _run_sql(session, principal, ctx, query)


def _run_sql(session: Session, principal: Principal, ctx: DataContext, query: str) -> SqlResult:
    settings, views = ctx.settings, {}
    for dataset in session.scalars(scoped(select(Dataset), principal)):
        for version in dataset.versions:
            path = local_parquet(ctx.store, settings, version)
            views[f"{dataset.name}@{version.number}"] = path
            if version.number == dataset.latest_version:
                views[dataset.name] = path
    root = ctx.store.local_path(principal.org_id, "datasets")
    if root is None:
        root = settings.data_dir / "cache" / "orgs" / principal.org_id / "datasets"
    spool_dir = settings.data_dir / "tmp" / "sql"  # unlinked files: nothing left to sweep
    spool_dir.mkdir(parents=True, exist_ok=True)
    limits = sql_limits(settings)
    return run_query(views, query, limits, root=root if views else None, spool_dir=spool_dir)
