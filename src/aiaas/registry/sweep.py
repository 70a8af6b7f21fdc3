"""Crash leftovers of the registry: stored model files that no version row names.

A system function: it runs for every organization (``aiaas serve`` at startup), so its
queries are deliberately not ``scoped()`` to a caller.
"""

from __future__ import annotations

import contextlib
import time

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from aiaas.data.scratch import older_than
from aiaas.registry.models import ModelVersion
from aiaas.storage import ArtifactStore

log = structlog.get_logger()

ROOT = "models"


def sweep_orphans(
    session_factory: sessionmaker[Session], store: ArtifactStore, *, older_than_s: float = 3600.0
) -> int:
    """Remove stored model files no version row refers to; returns how many versions and
    store temporary files were removed.

    A version's files are stored before its row is committed and deleted after the commit
    that removes the row, so a crash in between leaves files without a row. They are
    removed once untouched for ``older_than_s``: another process may be registering that
    version right now. Each organization is read in its own short session.
    """
    from aiaas.auth.models import Organization

    cutoff = time.time() - older_than_s
    with session_factory() as session:
        org_ids = list(session.scalars(select(Organization.id)))
    removed = 0
    for org_id in org_ids:
        with session_factory() as session:
            stmt = select(ModelVersion.storage_prefix).where(ModelVersion.org_id == org_id)
            known = set(session.scalars(stmt))
        removed += _sweep_unreferenced(store, org_id, known, cutoff)
        removed += _sweep_store_temp_files(store, org_id, cutoff)
    if removed:
        log.info("orphan_model_files_swept", removed=removed)
    return removed


def _sweep_unreferenced(store: ArtifactStore, org_id: str, known: set[str], cutoff: float) -> int:
    old: dict[str, bool] = {}  # models/<model id>/<version id> -> every file is old
    for key in store.list(org_id, ROOT):
        parts = key.split("/")
        if len(parts) < 4:
            continue
        prefix = "/".join(parts[:3])
        if prefix in known:
            continue
        modified = store.modified(org_id, key)
        old[prefix] = old.get(prefix, True) and modified is not None and modified < cutoff
    removed = 0
    for prefix, is_old in old.items():
        if is_old:
            store.delete_prefix(org_id, prefix)
            removed += 1
            log.info("orphan_model_files_removed", org_id=org_id, prefix=prefix)
    return removed


def _sweep_store_temp_files(store: ArtifactStore, org_id: str, cutoff: float) -> int:
    """The local store's ``.tmp-*`` files of an interrupted put (listings hide them)."""
    root = store.local_path(org_id, ROOT)
    if root is None or not root.is_dir():
        return 0
    removed = 0
    for tmp in list(root.rglob(".tmp-*")):
        if tmp.is_file() and not tmp.is_symlink() and older_than(tmp, cutoff):
            tmp.unlink(missing_ok=True)
            removed += 1
            with contextlib.suppress(OSError):  # its version and model folders, if empty
                tmp.parent.rmdir()
                tmp.parent.parent.rmdir()
    return removed
