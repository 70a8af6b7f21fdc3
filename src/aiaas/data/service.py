"""Datasets: create from files, SQL import or appended rows; versions, profiles, recipes, SQL.

Invariants:

- every query starts from ``scoped(select(...), principal)``: another organization's dataset
  is a 404, and its names are unknown to the SQL sandbox;
- a version is immutable; its Parquet file and profile are stored (atomically, by the store)
  before its row is added; if adding the row fails, the stored files are deleted again;
- all parsing and conversion happens in a private work directory under
  ``DATA_DIR/tmp/ingest`` that is removed on every path, success or failure — so a rejected
  upload leaves no version row and no file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import structlog
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth.principal import Principal
from aiaas.data import ingest, ingest_worker, profile, recipes
from aiaas.data.duck import clean_error, connect, qident, qstr
from aiaas.data.models import Dataset, DatasetVersion
from aiaas.data.pii import org_hash_key
from aiaas.data.sql import SqlLimits, SqlResult, run_query
from aiaas.data.sql_import import ImportLimits, import_query
from aiaas.db.base import scoped, utcnow
from aiaas.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore

log = structlog.get_logger()

PROFILE_FILE = "profile.json"
DATA_FILE = "data.parquet"


# --------------------------------------------------------------------------- helpers


def ingest_limits(settings: Settings) -> ingest.IngestLimits:
    d = settings.data
    return ingest.IngestLimits(
        max_columns=d.max_columns,
        max_line_bytes=d.max_line_bytes,
        max_cell_bytes=d.max_cell_bytes,
        max_rows=d.max_rows,
        max_decompressed_bytes=d.max_decompressed_bytes,
        max_compression_ratio=d.max_compression_ratio,
        memory_limit=d.duckdb_memory_limit,
        threads=d.duckdb_threads,
        preserve_order=d.ingest_preserve_order,
    )


def convert_upload(
    settings: Settings,
    src: Path,
    *,
    filename: str | None = None,
    options: ingest.IngestOptions | None = None,
) -> ingest.IngestResult:
    """Convert an untrusted file (inside its work dir) to Parquet in a limited subprocess."""
    d = settings.data
    started = time.perf_counter()
    converted = ingest_worker.convert_isolated(
        src,
        src.parent,
        filename=filename,
        options=options or ingest.IngestOptions(),
        limits=ingest_limits(settings),
        isolation=ingest_worker.Isolation(
            timeout_s=d.ingest_timeout_s,
            address_bytes=d.ingest_address_space_bytes,
            sandbox=d.ingest_sandbox,
        ),
    )
    log.info(
        "dataset_converted",
        rows=converted.result.row_count,
        convert_s=round(time.perf_counter() - started, 3),
        convert_peak_rss_mib=round(converted.peak_rss / 2**20),
        sandbox_abi=converted.sandbox_abi,
    )
    return converted.result


def profile_limits(settings: Settings) -> profile.ProfileLimits:
    d = settings.data
    return profile.ProfileLimits(
        memory_limit=d.duckdb_memory_limit,
        threads=d.duckdb_threads,
        exact_rows=d.profile_exact_rows,
    )


def _scratch_root(settings: Settings) -> Path:
    return settings.data_dir / "tmp" / "ingest"


def new_work_dir(settings: Settings) -> Path:
    """A fresh private scratch directory; the caller removes it (:func:`remove_work_dir`)."""
    path = _scratch_root(settings) / uuid.uuid4().hex
    path.mkdir(parents=True, mode=0o700)
    return path


def remove_work_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def work_dir(settings: Settings) -> Iterator[Path]:
    """A private scratch directory, removed whatever happens."""
    path = new_work_dir(settings)
    try:
        yield path
    finally:
        remove_work_dir(path)


_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()
_SQL_SLOTS: dict[tuple[str, int], threading.BoundedSemaphore] = {}
P = ParamSpec("P")
R = TypeVar("R")


def heavy(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` in one of ``max_concurrent_ingests`` slots (bounds DuckDB memory in total).

    Conversion (in its ingest process), profiling and recipes each hold a DuckDB connection
    with its own memory limit; without a cap, N parallel uploads would use N times that.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        settings = next(a for a in (*args, *kwargs.values()) if isinstance(a, Settings))
        limit = settings.data.max_concurrent_ingests
        with _SLOTS_LOCK:
            slot = _SLOTS.setdefault(limit, threading.BoundedSemaphore(limit))
        if not slot.acquire(timeout=settings.data.ingest_queue_timeout_s):
            raise TooManyRequests("too many uploads and transforms in progress; retry later")
        try:
            return fn(*args, **kwargs)
        finally:
            slot.release()

    return wrapper


def sweep_scratch(settings: Settings, *, older_than_s: float = 3600.0) -> int:
    """Remove scratch directories left by a crashed process; returns how many.

    Call once at startup (and periodically): a request that is still running keeps its
    directory fresh, so only directories untouched for ``older_than_s`` are removed.
    """
    root = _scratch_root(settings)
    if not root.exists():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for child in root.iterdir():
        try:
            if child.is_dir() and child.stat().st_mtime < cutoff:
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def sweep_orphans(session: Session, store: ArtifactStore, *, older_than_s: float = 3600.0) -> int:
    """Remove stored version files no version row refers to; returns how many versions.

    A version's files are stored before its row is committed (and a dataset's files are
    deleted after its rows), so a crash in between leaves files without a row. Call at
    startup: only files untouched for ``older_than_s`` are removed, so a version another
    replica is storing right now is left alone.
    """
    from aiaas.auth.models import Organization

    cutoff = time.time() - older_than_s
    removed = 0
    for org_id in session.scalars(select(Organization.id)):
        known = {
            key.rsplit("/", 1)[0]
            for key in session.scalars(
                select(DatasetVersion.storage_key).where(DatasetVersion.org_id == org_id)
            )
        }
        stale: dict[str, bool] = {}
        for key in store.list(org_id, "datasets"):
            parts = key.split("/")
            if len(parts) < 4:
                continue
            prefix = "/".join(parts[:3])  # datasets/<dataset id>/<version id>
            if prefix in known:
                continue
            modified = store.modified(org_id, key)
            old = modified is not None and modified < cutoff
            stale[prefix] = stale.get(prefix, True) and old
        for prefix, old in stale.items():
            if old:
                store.delete_prefix(org_id, prefix)
                removed += 1
                log.info("orphan_version_files_removed", org_id=org_id, prefix=prefix)
    return removed


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            h.update(block)
    return h.hexdigest()


def _version_prefix(dataset_id: str, version_id: str) -> str:
    return f"datasets/{dataset_id}/{version_id}"


def local_parquet(store: ArtifactStore, settings: Settings, version: DatasetVersion) -> Path:
    """A local file path of a version's Parquet (downloaded to a cache for remote stores)."""
    path = store.local_path(version.org_id, version.storage_key)
    if path is not None:
        return path
    cache = settings.data_dir / "cache" / "orgs" / version.org_id / version.storage_key
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp-{uuid.uuid4().hex}")
        with store.open(version.org_id, version.storage_key) as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
        tmp.replace(cache)
    return cache


def _hash_key(settings: Settings, org_id: str) -> bytes:
    return org_hash_key(settings.secret_key(), org_id)


def _check_cells(report: dict[str, Any], settings: Settings) -> None:
    limit = settings.data.max_cell_bytes
    for col in report["columns"]:
        if (col.get("max_bytes") or 0) > limit:
            raise InvalidInput(
                f"column {col['name']!r} has a value of {col['max_bytes']} bytes; "
                f"at most {limit} are allowed"
            )


def _store_version(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    settings: Settings,
    dataset: Dataset,
    parquet: Path,
    *,
    source: dict[str, Any],
    parent_version: int | None = None,
    recipe: list[dict[str, Any]] | None = None,
) -> DatasetVersion:
    """Profile ``parquet``, store it and its profile, then add the version row.

    The Parquet file is hashed and copied into the store on a helper thread while the
    profile runs (both only read it); the row is added after both have finished.
    """
    from concurrent.futures import ThreadPoolExecutor

    from aiaas.db.base import new_id

    version_id = new_id("dsv")  # the keys need the id before the row exists
    prefix = _version_prefix(dataset.id, version_id)
    storage_key, profile_key = f"{prefix}/{DATA_FILE}", f"{prefix}/{PROFILE_FILE}"

    def hash_and_store() -> str:
        digest = _sha256(parquet)
        store.put_file(principal.org_id, storage_key, parquet)
        return digest

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store") as pool:
        stored = pool.submit(hash_and_store)
        try:
            report = profile.profile_parquet(parquet, profile_limits(settings))
            profiled = time.perf_counter()
            _check_cells(report, settings)
            digest = stored.result()
        except BaseException:
            stored.exception()  # wait for the copy to finish before removing it
            store.delete_prefix(principal.org_id, prefix)
            raise
    try:
        columns = _parquet_columns(parquet)
        version = DatasetVersion(
            id=version_id,
            dataset_id=dataset.id,
            org_id=principal.org_id,
            number=dataset.latest_version + 1,
            row_count=int(report["row_count"]),
            column_count=len(columns),
            bytes=parquet.stat().st_size,
            sha256=digest,
            columns_schema=profile.infer_schema(columns, report),
            source=source,
            parent_version=parent_version,
            recipe=recipe,
            quality_score=float(report["quality"]["score"]),
            storage_key=storage_key,
            profile_key=profile_key,
            created_by=principal.actor_id,
        )
        store.put_bytes(principal.org_id, profile_key, json.dumps(report, default=str).encode())
        dataset.latest_version = version.number
        dataset.updated_at = utcnow()
        session.add(version)
        session.flush()
        log.info(
            "dataset_version_created",
            dataset_id=dataset.id,
            number=version.number,
            rows=version.row_count,
            profile_s=round(profiled - started, 3),
            store_s=round(time.perf_counter() - profiled, 3),
        )
    except IntegrityError:
        store.delete_prefix(principal.org_id, prefix)
        raise Conflict("another version of this dataset was created at the same time") from None
    except BaseException:
        store.delete_prefix(principal.org_id, prefix)
        raise
    return version


def _parquet_columns(parquet: Path) -> list[tuple[str, str]]:
    con = connect(allowed_paths=[parquet], memory_limit="64MB", threads=1)
    try:
        described = con.execute(
            f"DESCRIBE SELECT * FROM read_parquet({qstr(str(parquet))})"
        ).fetchall()
    finally:
        con.close()
    return [(str(r[0]), str(r[1])) for r in described]


# --------------------------------------------------------------------------- reads


def get_dataset(session: Session, principal: Principal, dataset_id: str) -> Dataset:
    """Return one dataset of the caller's organization."""
    stmt = scoped(select(Dataset), principal).where(Dataset.id == dataset_id)
    if (dataset := session.scalar(stmt)) is None:
        raise NotFound("dataset", dataset_id)
    return dataset


def list_datasets_stmt(principal: Principal) -> Any:
    return scoped(select(Dataset), principal)


def get_version(
    session: Session, principal: Principal, dataset_id: str, number: int
) -> DatasetVersion:
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
    session: Session, principal: Principal, store: ArtifactStore, dataset_id: str, number: int
) -> dict[str, Any]:
    version = get_version(session, principal, dataset_id, number)
    report: dict[str, Any] = json.loads(store.get_bytes(principal.org_id, version.profile_key))
    return report


# --------------------------------------------------------------------------- writes


def _ensure_name_free(session: Session, principal: Principal, name: str) -> None:
    stmt = scoped(select(Dataset.id), principal).where(Dataset.name == name).limit(1)
    if session.scalar(stmt) is not None:
        raise Conflict(f"a dataset named {name!r} already exists")


def _options(fields: dict[str, str]) -> ingest.IngestOptions:
    def pick(key: str, allowed: tuple[str, ...] | None = None, one_char: bool = False) -> Any:
        value = fields.get(key)
        if value is None or value == "":
            return None
        if key in ("delimiter", "quote", "escape"):
            value = value.replace("\\t", "\t")
        if one_char and len(value) != 1:
            raise InvalidInput(f"option {key!r} must be one character")
        if allowed is not None and value not in allowed:
            raise InvalidInput(f"option {key!r} must be one of {', '.join(allowed)}")
        return value

    header = fields.get("header")
    if header not in (None, "", "true", "false", "1", "0"):
        raise InvalidInput("option 'header' must be true or false")
    return ingest.IngestOptions(
        format=pick("format", ("csv", "parquet", "jsonl")),
        delimiter=pick("delimiter", one_char=True),
        quote=pick("quote", one_char=True),
        escape=pick("escape", one_char=True),
        header=None if header in (None, "") else header in ("true", "1"),
        encoding=pick("encoding", ("utf-8", "utf-16", "latin-1")),
    )


def _source_from_upload(
    result: ingest.IngestResult, filename: str | None, size: int, sha256: str
) -> dict[str, Any]:
    return {
        "kind": "upload",
        "filename": filename,
        "format": result.source_format,
        "compression": result.compression,
        "bytes": size,
        "sha256": sha256,
        "options": result.detected,
    }


def _new_dataset(
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
    except IntegrityError:
        raise Conflict(f"a dataset named {name!r} already exists") from None
    audit.set_resource("dataset", dataset.id, name=name, **audit_details)
    return dataset


@heavy
def create_dataset(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    settings: Settings,
    *,
    name: str,
    description: str | None,
    upload: Path,
    filename: str | None,
    size: int,
    sha256: str,
    fields: dict[str, str],
) -> Dataset:
    """Create a dataset whose version 1 is the uploaded file (upload is inside a work dir)."""
    _ensure_name_free(session, principal, name)
    result = convert_upload(settings, upload, filename=filename, options=_options(fields))
    dataset = _new_dataset(session, principal, name, description)
    _store_version(
        session,
        principal,
        store,
        settings,
        dataset,
        result.parquet_path,
        source=_source_from_upload(result, filename, size, sha256),
    )
    session.refresh(dataset)
    return dataset


@heavy
def add_version_from_file(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    settings: Settings,
    dataset_id: str,
    *,
    upload: Path,
    filename: str | None,
    size: int,
    sha256: str,
    fields: dict[str, str],
) -> DatasetVersion:
    dataset = get_dataset(session, principal, dataset_id)
    audit.set_resource("dataset", dataset.id)
    result = convert_upload(settings, upload, filename=filename, options=_options(fields))
    return _store_version(
        session,
        principal,
        store,
        settings,
        dataset,
        result.parquet_path,
        source=_source_from_upload(result, filename, size, sha256),
        parent_version=dataset.latest_version or None,
    )


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
        _ensure_name_free(session, principal, name)
        dataset.name = name
    if description is not None:
        dataset.description = description
    dataset.updated_at = utcnow()
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a dataset named {name!r} already exists") from None
    return dataset


def delete_dataset(
    session: Session, principal: Principal, store: ArtifactStore, dataset_id: str
) -> None:
    """Delete a dataset, its versions and their files."""
    dataset = get_dataset(session, principal, dataset_id)
    audit.set_resource("dataset", dataset.id)
    session.delete(dataset)
    session.flush()
    org_id, prefix = principal.org_id, f"datasets/{dataset.id}"

    def delete_files(_session: Session) -> None:
        # only once the rows are gone for good: a failed commit keeps files and rows together
        try:
            store.delete_prefix(org_id, prefix)
        except Exception as exc:  # the rows are gone; sweep_orphans removes the files later
            log.warning("dataset_files_not_deleted", dataset_id=dataset_id, error=str(exc))

    event.listen(session, "after_commit", delete_files, once=True)


@heavy
def append_rows(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    settings: Settings,
    dataset_id: str,
    records: list[dict[str, Any]],
) -> DatasetVersion:
    """A new version: the latest one plus ``records`` (columns must exist; types are cast)."""
    dataset = get_dataset(session, principal, dataset_id)
    audit.set_resource("dataset", dataset.id, appended=len(records))
    if len(records) > settings.data.max_append_records:
        raise InvalidInput(f"at most {settings.data.max_append_records} records per request")
    parent = dataset.version
    if parent is None:
        raise Conflict("the dataset has no version to append to")
    known = {c["name"]: c for c in parent.columns_schema}
    unknown = sorted({k for r in records for k in r} - set(known))
    if unknown:
        raise InvalidInput(f"unknown column(s): {', '.join(repr(u) for u in unknown[:10])}")
    limits = ingest_limits(settings)
    with work_dir(settings) as wd:
        jsonl = ingest.write_records_jsonl(records, wd)
        parent_path = local_parquet(store, settings, parent)
        out = wd / "appended.parquet"
        con = connect(
            allowed_directories=[wd],
            allowed_paths=[parent_path],
            memory_limit=limits.memory_limit,
            threads=limits.threads,
        )
        cols = [c["name"] for c in parent.columns_schema]
        new_cols = {k for r in records for k in r}
        fields = ", ".join(f"{qident(c)}: 'JSON'" for c in cols if c in new_cols)
        select_new = ", ".join(
            (
                f"CAST(json_extract_string({qident(c)}, '$') AS {known[c]['physical']})"
                if c in new_cols
                else f"CAST(NULL AS {known[c]['physical']})"
            )
            + f" AS {qident(c)}"
            for c in cols
        )
        try:
            con.execute(
                f"COPY (SELECT * FROM read_parquet({qstr(str(parent_path))}) UNION ALL "
                f"SELECT {select_new} FROM read_json({qstr(str(jsonl))}, "
                f"format='newline_delimited', columns={{{fields}}})) "
                f"TO {qstr(str(out))} (FORMAT parquet, COMPRESSION zstd)"
            ).fetchall()
        except Exception as exc:
            raise InvalidInput(
                "records do not match the dataset's schema: "
                + clean_error(exc, replacements={str(wd): "<work>"})
            ) from None
        finally:
            con.close()
        return _store_version(
            session,
            principal,
            store,
            settings,
            dataset,
            out,
            source={"kind": "append", "records": len(records)},
            parent_version=parent.number,
        )


@heavy
def transform_version(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    settings: Settings,
    dataset_id: str,
    number: int,
    steps: list[Any],
) -> DatasetVersion:
    """Apply a recipe to version ``number``; the result is the dataset's next version."""
    version = get_version(session, principal, dataset_id, number)
    dataset = get_dataset(session, principal, dataset_id)
    audit.set_resource("dataset", dataset.id, recipe_steps=len(steps))
    recipe = recipes.Recipe(steps=steps)
    ctx = recipes.RecipeContext(
        hash_key=_hash_key(settings, principal.org_id),
        memory_limit=settings.data.duckdb_memory_limit,
        threads=settings.data.duckdb_threads,
    )
    with work_dir(settings) as wd:
        src = local_parquet(store, settings, version)
        out = wd / "transformed.parquet"
        recipes.apply_recipe(src, out, recipe, ctx)
        return _store_version(
            session,
            principal,
            store,
            settings,
            dataset,
            out,
            source={"kind": "transform", "from_version": number},
            parent_version=number,
            recipe=[s.model_dump(mode="json") for s in recipe.steps],
        )


@heavy
def import_dataset(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    settings: Settings,
    *,
    name: str,
    description: str | None,
    url: str,
    query: str,
) -> Dataset:
    """Create a dataset from a query on an external PostgreSQL database (admins only)."""
    _ensure_name_free(session, principal, name)
    limits = ImportLimits(
        allowed_hosts=tuple(settings.data.import_allowed_hosts),
        max_rows=settings.data.import_max_rows,
        statement_timeout_s=settings.data.import_statement_timeout_s,
    )
    with work_dir(settings) as wd:
        dest = wd / "import.jsonl"
        rows = import_query(url, query, dest, limits)
        result = convert_upload(settings, dest, options=ingest.IngestOptions(format="jsonl"))
        dataset = _new_dataset(session, principal, name, description, imported_rows=rows)
        from sqlalchemy.engine import make_url

        safe_url = make_url(url).render_as_string(hide_password=True)
        _store_version(
            session,
            principal,
            store,
            settings,
            dataset,
            result.parquet_path,
            source={"kind": "sql_import", "url": safe_url, "query": query[:10_000]},
        )
    session.refresh(dataset)
    return dataset


# --------------------------------------------------------------------------- SQL


def run_sql(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    settings: Settings,
    query: str,
) -> SqlResult:
    """Run a read-only query over the caller's datasets (by name, ``name@N`` for versions)."""
    audit.set_resource("sql_query", None, query_chars=len(query))
    limit = settings.data.sql_max_concurrent_per_org
    with _SLOTS_LOCK:
        slot = _SQL_SLOTS.setdefault((principal.org_id, limit), threading.BoundedSemaphore(limit))
    if not slot.acquire(blocking=False):
        raise TooManyRequests(f"at most {limit} queries per organization run at once")
    try:
        return _run_sql(session, principal, store, settings, query)
    finally:
        slot.release()


def _run_sql(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    settings: Settings,
    query: str,
) -> SqlResult:
    views: dict[str, Path] = {}
    for dataset in session.scalars(scoped(select(Dataset), principal)):
        for version in dataset.versions:
            path = local_parquet(store, settings, version)
            views[f"{dataset.name}@{version.number}"] = path
            if version.number == dataset.latest_version:
                views[dataset.name] = path
    root = store.local_path(principal.org_id, "datasets")
    if root is None:
        root = settings.data_dir / "cache" / "orgs" / principal.org_id / "datasets"
    d = settings.data
    limits = SqlLimits(
        timeout_s=d.sql_timeout_s,
        max_rows=d.sql_max_rows,
        max_bytes=d.sql_max_bytes,
        memory_limit=d.sql_memory_limit,
        threads=d.sql_threads,
        address_bytes=d.sql_address_space_bytes,
    )
    return run_query(views, query, limits, root=root if views else None)


# --------------------------------------------------------------------------- downloads


def parquet_chunks(store: ArtifactStore, version: DatasetVersion) -> Iterator[bytes]:
    """The version's Parquet file, in 1 MiB blocks."""
    with store.open(version.org_id, version.storage_key) as handle:
        while block := handle.read(1024 * 1024):
            yield block


def csv_chunks(
    store: ArtifactStore, settings: Settings, version: DatasetVersion
) -> Iterator[bytes]:
    """The version as CSV, converted in record batches (bounded memory)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = local_parquet(store, settings, version)
    con = connect(
        allowed_paths=[path],
        memory_limit=settings.data.duckdb_memory_limit,
        threads=settings.data.duckdb_threads,
    )
    try:
        reader = con.sql(f"SELECT * FROM read_parquet({qstr(str(path))})").to_arrow_reader(65536)
        assert reader is not None
        first = True
        for batch in reader:
            sink = pa.BufferOutputStream()
            casted = _csv_safe(batch)
            pacsv.write_csv(casted, sink, write_options=pacsv.WriteOptions(include_header=first))
            first = False
            yield sink.getvalue().to_pybytes()
        if first:  # no batches: header only
            sink = pa.BufferOutputStream()
            pacsv.write_csv(reader.schema.empty_table(), sink)
            yield sink.getvalue().to_pybytes()
    except Exception as exc:  # the response has started; end it with a readable marker
        yield f"\n# error: {clean_error(exc)}\n".encode()
    finally:
        con.close()


def _csv_safe(batch: Any) -> Any:
    """CSV cannot carry time zones: write zoned timestamps as UTC wall time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = []
    for column in batch.columns:
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = pc.cast(column, pa.timestamp(column.type.unit))
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
