"""Crash leftovers of the registry: stored model files that no version row names.

A system function: it runs for every organization (``aiaas serve`` at startup), so its
queries are deliberately not ``scoped()`` to a caller.
"""

from __future__ import annotations

import time

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from aiaas.data.sweep import sweep_store_temp_files, sweep_unreferenced_prefixes
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
        removed += sweep_unreferenced_prefixes(store, org_id, ROOT, known, cutoff)
        removed += sweep_store_temp_files(store, org_id, cutoff, root=ROOT)
    if removed:
        log.info("orphan_model_files_swept", removed=removed)
    return removed
