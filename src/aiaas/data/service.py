"""Datasets: create from files, SQL import or appended rows; versions, profiles, recipes, SQL.

Invariants:

- every query starts from ``scoped(select(...), principal)``: another organization's dataset
  is a 404, and its names are unknown to the SQL sandbox;
- a version is immutable; its Parquet file and profile are stored (atomically, by the store)
  before its row is added; if adding the row fails, the stored files are deleted again;
- all parsing and conversion happens in a private work directory under
  ``DATA_DIR/tmp/ingest`` that is removed on every path, success or failure — so a rejected
  upload leaves no version row and no file; its lock file, held while it is in use, lets
  :func:`sweep_scratch` remove a dead process's directory at once;
- dataset names are unique per organization regardless of case (the SQL views need it);
- conversions, appends, transforms and imports run in an ingest slot (:class:`FairGate`:
  a global cap, a per-organization cap, round-robin admission), and no version is stored
  beyond the organization's storage quota (:func:`check_quota`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import structlog
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth.principal import Principal
from aiaas.data import ingest, ingest_worker, profile, recipes
from aiaas.data.duck import clean_error, connect, qident, qstr
from aiaas.data.limits import ingest_isolation, ingest_limits, profile_limits, sql_limits
from aiaas.data.models import Dataset, DatasetVersion
from aiaas.data.pii import org_hash_key
from aiaas.data.schemas import VERSION_MAX, has_lone_surrogate
from aiaas.data.sql import SqlResult, csv_text, run_query
from aiaas.data.sql_import import ImportLimits, import_query
from aiaas.db.base import scoped, utcnow
from aiaas.errors import Conflict, InvalidInput, NotFound, QuotaExceeded, TooManyRequests
from aiaas.settings import DataSettings, Settings
from aiaas.storage import ArtifactStore

log = structlog.get_logger()

PROFILE_FILE = "profile.json"
DATA_FILE = "data.parquet"


# --------------------------------------------------------------------------- helpers


def convert_upload(
    settings: Settings,
    src: Path,
    *,
    filename: str | None = None,
    options: ingest.IngestOptions | None = None,
) -> ingest.IngestResult:
    """Convert an untrusted file (inside its work dir) to Parquet in a limited subprocess."""
    started = time.perf_counter()
    converted = ingest_worker.convert_isolated(
        src,
        src.parent,
        filename=filename,
        options=options or ingest.IngestOptions(),
        limits=ingest_limits(settings),
        isolation=ingest_isolation(settings),
    )
    log.info(
        "dataset_converted",
        rows=converted.result.row_count,
        convert_s=round(time.perf_counter() - started, 3),
        convert_peak_rss_mib=round(converted.peak_rss / 2**20),
        sandbox_abi=converted.sandbox_abi,
    )
    return converted.result


def _scratch_root(settings: Settings) -> Path:
    return settings.data_dir / "tmp" / "ingest"


_WORK_LOCKS: dict[str, int] = {}  # work dir → the open, flock()ed fd of its lock file
_WORK_LOCKS_GUARD = threading.Lock()


def new_work_dir(settings: Settings) -> Path:
    """A fresh private scratch directory; the caller removes it (:func:`remove_work_dir`).

    ``<root>/<id>/`` comes with ``<root>/<id>.lock``, which this process keeps ``flock()``ed
    until :func:`remove_work_dir`: the kernel drops the lock when the process dies (even by
    SIGKILL), so :func:`sweep_scratch` can tell a dead owner's directory from a live one
    without guessing by age. The lock sits beside the directory, out of reach of the ingest
    process (Landlock confines it to the directory itself).
    """
    root = _scratch_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        name = uuid.uuid4().hex
        fd = _new_locked_file(root, f"{name}.lock")
        if fd is None:  # a sweep removed the lock before it was ours: try another name
            continue
        path = root / name
        path.mkdir(mode=0o700)
        with _WORK_LOCKS_GUARD:
            _WORK_LOCKS[str(path)] = fd
        return path


def _new_locked_file(root: Path, name: str) -> int | None:
    """Create ``root/name`` already locked: it is made and locked under a temporary name
    first, then renamed, so a sweep never sees the final name unlocked."""
    tmp = root / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, root / name)
    except FileNotFoundError:  # swept between create and lock (taken for a dead one's)
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return fd


def remove_work_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with _WORK_LOCKS_GUARD:
        fd = _WORK_LOCKS.pop(str(path), None)
    if fd is not None:
        path.with_name(f"{path.name}.lock").unlink(missing_ok=True)  # still ours: then release
        os.close(fd)


@contextmanager
def work_dir(settings: Settings) -> Iterator[Path]:
    """A private scratch directory, removed whatever happens."""
    path = new_work_dir(settings)
    try:
        yield path
    finally:
        remove_work_dir(path)


class FairGate:
    """At most ``total`` holders at once, at most ``per_key`` of them with the same key.

    Waiting requests are admitted fairly across keys (organizations): each waiter gets a
    *round* when it arrives — the current round for a key with nothing running or waiting,
    else one after that key's previous request — and a free slot goes to the waiter with the
    lowest (round, arrival) whose key is below ``per_key``. So one key's second request never
    goes before another key's first, a key that is at its cap never blocks the others, and a
    new key is served as soon as a slot is free (round-robin; no key can starve another).
    Thread-safe; waiters block on one condition variable.
    """

    def __init__(self, total: int, per_key: int) -> None:
        if total < 1 or not 1 <= per_key <= total:
            raise ValueError(f"need 1 <= per_key <= total (got {per_key}, {total})")
        self.total, self.per_key = total, per_key
        self._cond = threading.Condition()
        self._running: dict[str, int] = {}
        self._waiting: list[_Waiter] = []
        self._next_round: dict[str, int] = {}
        self._round = 0  # the round of the waiter admitted last
        self._arrivals = itertools.count()

    def acquire(self, key: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a slot; False if none became free."""
        deadline = time.monotonic() + timeout
        with self._cond:
            round_ = max(self._round, self._next_round.get(key, 0))
            self._next_round[key] = round_ + 1
            waiter = _Waiter(key, round_, next(self._arrivals))
            self._waiting.append(waiter)
            self._dispatch()
            try:
                while not waiter.admitted:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._waiting.remove(waiter)
                        self._forget(key)
                        return False
                    self._cond.wait(remaining)
            except BaseException:  # interrupted while waiting: give back what we may hold
                if waiter.admitted:
                    self._release(key)
                else:
                    self._waiting.remove(waiter)
                    self._forget(key)
                raise
            return True

    def release(self, key: str) -> None:
        with self._cond:
            self._release(key)

    @contextmanager
    def slot(self, key: str, timeout: float) -> Iterator[bool]:
        """``with gate.slot(key, t) as ok:`` — ``ok`` says whether a slot was obtained."""
        ok = self.acquire(key, timeout)
        try:
            yield ok
        finally:
            if ok:
                self.release(key)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{"running": {key: n}, "waiting": {key: n}}`` (for tests, logs and metrics)."""
        with self._cond:
            waiting: dict[str, int] = {}
            for w in self._waiting:
                waiting[w.key] = waiting.get(w.key, 0) + 1
            return {"running": dict(self._running), "waiting": waiting}

    def _release(self, key: str) -> None:
        count = self._running.get(key, 0)
        if count <= 0:
            raise RuntimeError(f"release of {key!r} without a slot")
        if count == 1:
            del self._running[key]
        else:
            self._running[key] = count - 1
        self._forget(key)
        self._dispatch()

    def _forget(self, key: str) -> None:
        """A key with nothing running or waiting starts at the current round next time."""
        if key not in self._running and not any(w.key == key for w in self._waiting):
            self._next_round.pop(key, None)

    def _dispatch(self) -> None:
        admitted = False
        while sum(self._running.values()) < self.total:
            eligible = [w for w in self._waiting if self._running.get(w.key, 0) < self.per_key]
            if not eligible:
                break
            chosen = min(eligible, key=lambda w: (w.round, w.arrival))
            self._waiting.remove(chosen)
            self._running[chosen.key] = self._running.get(chosen.key, 0) + 1
            self._round = max(self._round, chosen.round)
            chosen.admitted = admitted = True
        if admitted:
            self._cond.notify_all()


@dataclass
class _Waiter:
    key: str
    round: int
    arrival: int
    admitted: bool = False


_GATES: dict[tuple[int, int], FairGate] = {}
_SLOTS_LOCK = threading.Lock()
_SQL_SLOTS: dict[tuple[str, int], threading.BoundedSemaphore] = {}
P = ParamSpec("P")
R = TypeVar("R")


def ingest_gate(total: int, per_org: int) -> FairGate:
    """The process-wide gate for these limits (one per distinct pair of settings)."""
    with _SLOTS_LOCK:
        gate = _GATES.get((total, per_org))
        if gate is None:
            gate = _GATES[(total, per_org)] = FairGate(total, per_org)
        return gate


@contextmanager
def ingest_slot(limits: DataSettings, org_id: str) -> Iterator[None]:
    """Hold one of the ingest slots for ``org_id`` (429 after ``ingest_queue_timeout_s``).

    Conversion (in its ingest process), profiling and recipes each hold a DuckDB connection
    with its own memory limit; without a cap, N parallel uploads would use N times that.
    The cap per organization keeps at least one slot for everyone else.
    """
    gate = ingest_gate(limits.max_concurrent_ingests, limits.ingest_slots_per_org)
    with gate.slot(org_id, limits.ingest_queue_timeout_s) as ok:
        if not ok:
            raise TooManyRequests("too many uploads and transforms in progress; retry later")
        yield


def heavy(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` in an ingest slot, for callers that have settings but no principal.

    The service functions call :func:`ingest_slot` themselves (with the caller's org);
    this decorator takes the first ``Settings`` argument and the org of the first
    ``Principal`` argument, if any.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        values = (*args, *kwargs.values())
        settings = next(a for a in values if isinstance(a, Settings))
        principal = next((a for a in values if isinstance(a, Principal)), None)
        with ingest_slot(settings.data, principal.org_id if principal else ""):
            return fn(*args, **kwargs)

    return wrapper


@contextmanager
def _dead_owner(lock: Path) -> Iterator[bool | None]:
    """Whether the process that locked ``lock`` is gone (True), alive (False), or there is
    no lock to tell by (None). Holds the lock meanwhile, so nobody can take it over."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        yield None
        return
    except OSError:  # not ours to judge (a symlink, no permission)
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError:  # a filesystem without flock(): fall back to the age rule
            yield None
            return
        yield True
    finally:
        os.close(fd)


def _older_than(path: Path, cutoff: float) -> bool:
    try:
        return path.lstat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_scratch(settings: Settings, *, older_than_s: float = 3600.0) -> int:
    """Remove scratch left by dead processes; returns how many directories and files.

    A work directory whose lock file (see :func:`new_work_dir`) can be locked belongs to a
    process that is gone: it is removed whatever its age — a partial upload, a conversion's
    spill files, a half-written Parquet file. Entries without a lock file (left by an
    older aiaas, or on a filesystem without ``flock``), leftover lock files and the download
    cache's partial files are removed once untouched for ``older_than_s``. Safe to run at
    any time, from any process sharing the data directory.
    """
    cutoff = time.time() - older_than_s
    removed = 0
    root = _scratch_root(settings)
    entries = sorted(root.iterdir()) if root.exists() else []
    for entry in entries:
        if entry.name.endswith(".lock") or entry.name.startswith("."):
            continue  # lock files: judged with their directory, then on their own below
        lock = entry.with_name(f"{entry.name}.lock")
        with _dead_owner(lock) as dead:
            if dead is False or (dead is None and not _older_than(entry, cutoff)):
                continue
            _remove(entry)
            if dead:
                lock.unlink(missing_ok=True)
            removed += 1
            log.info("scratch_removed", path=entry.name, owner="dead" if dead else "unknown")
    for entry in entries:  # lock files whose directory is gone (a crash in between)
        if not (entry.name.endswith(".lock") or entry.name.startswith(".")):
            continue
        if entry.name.endswith(".lock") and entry.with_name(entry.name[:-5]).exists():
            continue
        with _dead_owner(entry) as dead:
            if dead or (dead is None and _older_than(entry, cutoff)):
                entry.unlink(missing_ok=True)
    cache = settings.data_dir / "cache"
    if cache.exists():  # partial downloads of remote versions (local_parquet)
        for tmp in cache.rglob("*.tmp-*"):
            if tmp.is_file() and _older_than(tmp, cutoff):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def sweep_orphans(session: Session, store: ArtifactStore, *, older_than_s: float = 3600.0) -> int:
    """Remove stored files no version row refers to; returns how many versions and files.

    A version's files are stored before its row is committed (and a dataset's files are
    deleted after its rows), so a crash in between leaves files without a row; a crash
    inside the store's own atomic write leaves its temporary file (``.tmp-…``, which
    listings hide). Both are removed once untouched for ``older_than_s`` (another replica
    may be storing a version right now); :func:`sweep_periodically` runs this regularly.
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
        removed += _sweep_store_temp_files(store, org_id, cutoff)
    return removed


def _sweep_store_temp_files(store: ArtifactStore, org_id: str, cutoff: float) -> int:
    """The local store's ``.tmp-*`` files (S3 writes are single PUTs and leave none)."""
    root = store.local_path(org_id, "datasets")
    if root is None or not root.is_dir():
        return 0
    removed = 0
    for tmp in list(root.rglob(".tmp-*")):
        if tmp.is_file() and not tmp.is_symlink() and _older_than(tmp, cutoff):
            tmp.unlink(missing_ok=True)
            removed += 1
            log.info("store_temp_file_removed", org_id=org_id, path=str(tmp.relative_to(root)))
            with contextlib.suppress(OSError):  # its version and dataset folders, if empty
                tmp.parent.rmdir()
                tmp.parent.parent.rmdir()
    return removed


def sweep_once(settings: Settings, store: ArtifactStore) -> dict[str, int]:
    """One pass of both sweeps (``aiaas serve``: at startup and every ``sweep_interval_s``)."""
    from aiaas.db import get_session_factory

    older = settings.data.orphan_min_age_s
    scratch = sweep_scratch(settings, older_than_s=older)
    with get_session_factory(settings.resolved_database_url)() as session:
        orphans = sweep_orphans(session, store, older_than_s=older)
    if scratch or orphans:
        log.info("crash_leftovers_swept", scratch=scratch, orphans=orphans)
    return {"scratch": scratch, "orphans": orphans}


def sweep_periodically(settings: Settings, store: ArtifactStore, stop: threading.Event) -> None:
    """Run :func:`sweep_once` every ``sweep_interval_s`` until ``stop`` is set (a thread)."""
    interval = settings.data.sweep_interval_s
    while interval > 0 and not stop.wait(interval):
        try:
            sweep_once(settings, store)
        except Exception as exc:  # a failing pass (database away) must not end the loop
            log.warning("sweep_failed", error=f"{type(exc).__name__}: {exc}")


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

    check_quota(session, principal, settings, parquet.stat().st_size)  # before storing anything
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
    session: Session, principal: Principal, store: ArtifactStore, dataset_id: str, number: int
) -> dict[str, Any]:
    version = get_version(session, principal, dataset_id, number)
    report: dict[str, Any] = json.loads(store.get_bytes(principal.org_id, version.profile_key))
    return report


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
    except IntegrityError:  # another request took the name meanwhile (the unique index)
        raise Conflict(_name_taken(name)) from None
    audit.set_resource("dataset", dataset.id, name=name, **audit_details)
    return dataset


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
    options = _options(fields)
    _ensure_name_free(session, principal, name)
    with ingest_slot(settings.data, principal.org_id):
        _ensure_name_free(session, principal, name)  # again: the wait for a slot can be long
        check_quota(session, principal, settings)
        result = convert_upload(settings, upload, filename=filename, options=options)
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
    options = _options(fields)
    with ingest_slot(settings.data, principal.org_id):
        check_quota(session, principal, settings)
        result = convert_upload(settings, upload, filename=filename, options=options)
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


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what a JSON record can carry into Parquet


def _value_problem(value: Any) -> str | None:
    """Why a JSON value cannot be stored as it is, or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if _INT_MIN <= value <= _INT_MAX else "an integer outside the 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "not a finite number"
    if isinstance(value, str):
        return "a lone surrogate" if has_lone_surrogate(value) else None
    if isinstance(value, list):
        return next((p for p in map(_value_problem, value) if p), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or has_lone_surrogate(key):
                return "a lone surrogate in a key"
            if problem := _value_problem(item):
                return problem
        return None
    return f"a value of type {type(value).__name__}"


def check_records(records: list[dict[str, Any]]) -> None:
    """422 naming the first record and column whose value JSON → Parquet cannot carry.

    Integers beyond 64 bits, NaN and ±Infinity (also ``1e400``, which JSON parsers read as
    infinity) and strings with lone surrogates would otherwise crash the writer or silently
    become NULL.
    """
    for i, record in enumerate(records):
        for column, value in record.items():
            if has_lone_surrogate(column):
                why: str | None = "a lone surrogate in the name"
            else:
                why = _value_problem(value)
            if why is None:
                continue
            shown = column[:100].encode("utf-8", "backslashreplace").decode("utf-8")
            raise InvalidInput(
                f"record {i}, column {column[:100]!r}: {why}",
                errors=[{"record": i, "column": shown, "detail": why}],
            )


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
    check_records(records)
    parent = dataset.version
    if parent is None:
        raise Conflict("the dataset has no version to append to")
    known = {c["name"]: c for c in parent.columns_schema}
    unknown = sorted({k for r in records for k in r} - set(known))
    if unknown:
        raise InvalidInput(f"unknown column(s): {', '.join(repr(u) for u in unknown[:10])}")
    limits = ingest_limits(settings)
    with ingest_slot(settings.data, principal.org_id), work_dir(settings) as wd:
        check_quota(session, principal, settings)
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
    with ingest_slot(settings.data, principal.org_id), work_dir(settings) as wd:
        check_quota(session, principal, settings)
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
    with ingest_slot(settings.data, principal.org_id), work_dir(settings) as wd:
        _ensure_name_free(session, principal, name)  # again: the wait for a slot can be long
        check_quota(session, principal, settings)
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
    limits = sql_limits(settings)
    spool_dir = settings.data_dir / "tmp" / "sql"  # unlinked files: nothing left to sweep
    spool_dir.mkdir(parents=True, exist_ok=True)
    return run_query(views, query, limits, root=root if views else None, spool_dir=spool_dir)


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
            pacsv.write_csv(_csv_safe(reader.schema.empty_table()), sink)
            yield sink.getvalue().to_pybytes()
    except Exception as exc:  # the response has started; end it with a readable marker
        yield f"\n# error: {clean_error(exc)}\n".encode()
    finally:
        con.close()


_FORMULA_RE = r"^([=+\-@\t\r])"  # a text cell starting with one of sql.FORMULA_PREFIXES


def _csv_safe(batch: Any) -> Any:
    """A record batch (or table) as CSV can carry it, and safe to open in a spreadsheet.

    CSV cannot carry time zones: zoned timestamps are written as UTC wall time. Text that a
    spreadsheet would run as a formula (a cell or column name starting with ``=``, ``+``,
    ``-``, ``@``, tab or CR — OWASP CSV injection) gets a leading ``'``; numbers are untouched.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = []
    for column in batch.columns:
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = pc.cast(column, pa.timestamp(column.type.unit))
        if pa.types.is_dictionary(column.type):
            column = pc.cast(column, column.type.value_type)
        if pa.types.is_string_view(column.type):
            column = pc.cast(column, pa.string())
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.replace_substring_regex(
                column, pattern=_FORMULA_RE, replacement="'\\1", max_replacements=1
            )
        arrays.append(column)
    names = [csv_text(name) for name in batch.schema.names]
    return type(batch).from_arrays(arrays, names=names)
