"""Crash leftovers: scratch of dead processes and stored files that no version row names.

System functions: they run for every organization (``aiaas serve`` at startup and every
``sweep_interval_s``), so their queries are deliberately not ``scoped()`` to a caller.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from aiaas.data.models import DatasetVersion
from aiaas.data.scratch import older_than, sweep_scratch
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore

log = structlog.get_logger()


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
        removed += _sweep_unreferenced(session, store, org_id, cutoff)
        removed += sweep_store_temp_files(store, org_id, cutoff)
    return removed


def _sweep_unreferenced(session: Session, store: ArtifactStore, org_id: str, cutoff: float) -> int:
    known = {
        key.rsplit("/", 1)[0]
        for key in session.scalars(
            select(DatasetVersion.storage_key).where(DatasetVersion.org_id == org_id)
        )
    }
    return sweep_unreferenced_prefixes(store, org_id, "datasets", known, cutoff)


def sweep_unreferenced_prefixes(
    store: ArtifactStore, org_id: str, root: str, known: set[str], cutoff: float
) -> int:
    """Delete every ``<root>/<parent id>/<version id>`` prefix of ``org_id`` that is not in
    ``known`` and whose files are all older than ``cutoff``; returns how many (the datasets'
    and the registry's sweep)."""
    stale: dict[str, bool] = {}
    for key in store.list(org_id, root):
        parts = key.split("/")
        if len(parts) < 4:
            continue
        prefix = "/".join(parts[:3])
        if prefix in known:
            continue
        modified = store.modified(org_id, key)
        old = modified is not None and modified < cutoff
        stale[prefix] = stale.get(prefix, True) and old
    removed = 0
    for prefix, old in stale.items():
        if old:
            store.delete_prefix(org_id, prefix)
            removed += 1
            log.info("orphan_files_removed", org_id=org_id, prefix=prefix)
    return removed


def sweep_store_temp_files(
    store: ArtifactStore, org_id: str, cutoff: float, root: str = "datasets"
) -> int:
    """The local store's ``.tmp-*`` files under ``root`` (S3 writes are single PUTs and
    leave none)."""
    base = store.local_path(org_id, root)
    if base is None or not base.is_dir():
        return 0
    removed = 0
    for tmp in list(base.rglob(".tmp-*")):
        if tmp.is_file() and not tmp.is_symlink() and older_than(tmp, cutoff):
            tmp.unlink(missing_ok=True)
            removed += 1
            log.info("store_temp_file_removed", org_id=org_id, path=str(tmp.relative_to(base)))
            with contextlib.suppress(OSError):  # its version and parent folders, if empty
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


def sweep_periodically(
    settings: Settings,
    store: ArtifactStore,
    stop: threading.Event,
    also: Sequence[Callable[[], object]] = (),
) -> None:
    """Run :func:`sweep_once` (and the other domains' sweeps, ``also``) every
    ``sweep_interval_s`` until ``stop`` is set (a thread)."""
    interval = settings.data.sweep_interval_s
    while interval > 0 and not stop.wait(interval):
        for sweep in (lambda: sweep_once(settings, store), *also):
            try:
                sweep()
            except Exception as exc:  # a failing pass (database away) must not end the loop
                log.warning("sweep_failed", error=f"{type(exc).__name__}: {exc}")
