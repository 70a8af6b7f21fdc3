"""Storing a dataset version: bytes first, row second; the local copy of a stored version.

Invariants:

- a version is immutable; its Parquet file and profile are stored (atomically, by the store)
  before its row is added, and if adding the row fails the stored files are deleted again
  (a crash in between leaves files without a row, which ``sweep.sweep_orphans`` removes);
- nothing is stored beyond the organization's storage quota (:func:`check_quota`);
- the keys of a version are ``datasets/<dataset id>/<version id>/{data.parquet,profile.json}``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.auth.principal import Principal
from aiaas.data import profile
from aiaas.data.context import DataContext
from aiaas.data.duck import connect, qstr
from aiaas.data.limits import profile_limits
from aiaas.data.models import Dataset, DatasetVersion
from aiaas.db.base import new_id, scoped, utcnow
from aiaas.errors import Conflict, InvalidInput, QuotaExceeded
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore

log = structlog.get_logger()

PROFILE_FILE = "profile.json"
DATA_FILE = "data.parquet"
_HASH_BLOCK = 4 * 1024 * 1024


@dataclass(frozen=True)
class VersionInfo:
    """Where a new version comes from (stored as its ``source``, ``parent_version``, ``recipe``)."""

    source: dict[str, Any]
    parent_version: int | None = None
    recipe: list[dict[str, Any]] | None = None


def version_prefix(dataset_id: str, version_id: str) -> str:
    return f"datasets/{dataset_id}/{version_id}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


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
            shutil.copyfileobj(src, dst, _HASH_BLOCK)
        tmp.replace(cache)
    return cache


def storage_used(session: Session, principal: Principal) -> int:
    """Bytes of the organization's stored versions (their Parquet files)."""
    stmt = scoped(select(func.coalesce(func.sum(DatasetVersion.bytes), 0)), principal)
    return int(session.scalar(stmt) or 0)


def check_quota(
    session: Session, principal: Principal, settings: Settings, adding: int = 0
) -> None:
    """429 ``quota_exceeded`` if ``adding`` more bytes would exceed the organization's quota.

    Called before any work (``adding=0``: refuse at once when the quota is used up) and
    again with the size of a new version before anything is stored. Concurrent requests of
    one organization can overshoot by at most ``max_concurrent_ingests_per_org`` versions.
    """
    quota = settings.data.max_storage_bytes_per_org
    if not quota:
        return
    used = storage_used(session, principal)
    if used + adding > quota or (adding == 0 and used >= quota):
        raise QuotaExceeded(
            f"the organization's datasets use {used} of {quota} bytes; "
            + (f"a new version of {adding} bytes does not fit" if adding else "it is full")
            + " (delete versions or datasets, or ask an operator to raise "
            "AIAAS_DATA__MAX_STORAGE_BYTES_PER_ORG)"
        )


def _check_cells(report: dict[str, Any], settings: Settings) -> None:
    limit = settings.data.max_cell_bytes
    for col in report["columns"]:
        if (col.get("max_bytes") or 0) > limit:
            raise InvalidInput(
                f"column {col['name']!r} has a value of {col['max_bytes']} bytes; "
                f"at most {limit} are allowed"
            )


def parquet_columns(parquet: Path) -> list[tuple[str, str]]:
    """``(name, DuckDB type)`` of each column of a Parquet file."""
    con = connect(allowed_paths=[parquet], memory_limit="64MB", threads=1)
    try:
        described = con.execute(
            f"DESCRIBE SELECT * FROM read_parquet({qstr(str(parquet))})"
        ).fetchall()
    finally:
        con.close()
    return [(str(r[0]), str(r[1])) for r in described]


def store_version(
    session: Session,
    principal: Principal,
    ctx: DataContext,
    dataset: Dataset,
    parquet: Path,
    info: VersionInfo,
) -> DatasetVersion:
    """Profile ``parquet``, store it and its profile, then add the version row."""
    check_quota(session, principal, ctx.settings, parquet.stat().st_size)  # before storing
    version_id = new_id("dsv")  # the keys need the id before the row exists
    prefix = version_prefix(dataset.id, version_id)
    started = time.perf_counter()
    report, digest = _profile_and_store(principal, ctx, parquet, prefix)
    profiled = time.perf_counter()
    try:
        version = _version_row(principal, dataset, parquet, info, version_id, report, digest)
        profile_key = f"{prefix}/{PROFILE_FILE}"
        ctx.store.put_bytes(principal.org_id, profile_key, json.dumps(report, default=str).encode())
        dataset.latest_version = version.number
        dataset.updated_at = utcnow()
        session.add(version)
        session.flush()
    except IntegrityError:
        ctx.store.delete_prefix(principal.org_id, prefix)
        raise Conflict("another version of this dataset was created at the same time") from None
    except BaseException:
        ctx.store.delete_prefix(principal.org_id, prefix)
        raise
    log.info(
        "dataset_version_created",
        dataset_id=dataset.id,
        number=version.number,
        rows=version.row_count,
        profile_s=round(profiled - started, 3),
        store_s=round(time.perf_counter() - profiled, 3),
    )
    return version


def _profile_and_store(
    principal: Principal, ctx: DataContext, parquet: Path, prefix: str
) -> tuple[dict[str, Any], str]:
    """The profile report and SHA-256 of ``parquet``, stored meanwhile under ``prefix``.

    The file is hashed and copied into the store on a helper thread while the profile runs
    (both only read it); on any failure the stored copy is removed again.
    """
    store, key = ctx.store, f"{prefix}/{DATA_FILE}"

    def hash_and_store() -> str:
        digest = sha256_file(parquet)
        store.put_file(principal.org_id, key, parquet)
        return digest

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store") as pool:
        stored = pool.submit(hash_and_store)
        try:
            report = profile.profile_parquet(parquet, profile_limits(ctx.settings))
            _check_cells(report, ctx.settings)
            return report, stored.result()
        except BaseException:
            stored.exception()  # wait for the copy to finish before removing it
            store.delete_prefix(principal.org_id, prefix)
            raise


def _version_row(
    principal: Principal,
    dataset: Dataset,
    parquet: Path,
    info: VersionInfo,
    version_id: str,
    report: dict[str, Any],
    digest: str,
) -> DatasetVersion:
    prefix = version_prefix(dataset.id, version_id)
    columns = parquet_columns(parquet)
    return DatasetVersion(
        id=version_id,
        dataset_id=dataset.id,
        org_id=principal.org_id,
        number=dataset.latest_version + 1,
        row_count=int(report["row_count"]),
        column_count=len(columns),
        bytes=parquet.stat().st_size,
        sha256=digest,
        columns_schema=profile.infer_schema(columns, report),
        source=info.source,
        parent_version=info.parent_version,
        recipe=info.recipe,
        quality_score=float(report["quality"]["score"]),
        storage_key=f"{prefix}/{DATA_FILE}",
        profile_key=f"{prefix}/{PROFILE_FILE}",
        created_by=principal.actor_id,
    )
