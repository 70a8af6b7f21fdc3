"""The training process's sandbox, with the paths a real job gives it: it reads its own
dataset version and nothing of another organization's, writes only its work directory,
and opens no TCP connection (the hostile child is the sandbox's own probe)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from aiaas.data.models import DatasetVersion
from aiaas.data.versions import local_parquet
from aiaas.db import get_session_factory
from aiaas.jobs.limits import training_limits
from aiaas.jobs.training import child_paths
from aiaas.sandbox import landlock, last_json_line, run_child
from aiaas.settings import Settings
from aiaas.storage import get_store
from tests.conftest import Tenants, make_dataset

pytestmark = pytest.mark.skipif(landlock.abi_version() < 4, reason="needs Landlock ABI >= 4")


def _parquet(settings: Settings, dataset_id: str) -> Path:
    with get_session_factory(settings.resolved_database_url)() as session:
        version = session.scalar(
            select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id)
        )
        assert version is not None
        return local_parquet(get_store(settings.resolved_artifacts_url), settings, version)


def test_a_training_process_touches_only_its_own_version_and_work_dir(
    settings: Settings, tenants: Tenants, tmp_path: Path
):
    mine = _parquet(settings, make_dataset(settings, tenants.a, [{"y": 1}], name="mine").id)
    theirs = _parquet(settings, make_dataset(settings, tenants.b, [{"y": 2}], name="theirs").id)
    work = tmp_path / "work"
    work.mkdir()
    paths = child_paths(settings, mine, work)
    limits = training_limits(settings, 10)
    server = socket.create_server(("127.0.0.1", 0))

    def probe(request: dict[str, Any]) -> dict[str, Any] | None:
        return last_json_line(run_child("aiaas.sandbox.probe", request, limits, paths).output)

    try:
        assert probe({"act": "read", "path": str(mine)}) == {
            "ok": True,
            "bytes": mine.stat().st_size,
        }
        assert probe({"act": "read", "path": str(theirs)}) == {"ok": False, "errno": 13}
        db = settings.data_dir / "aiaas.db"
        if db.exists():  # SQLite: the metadata database with every organization's keys
            assert probe({"act": "read", "path": str(db)}) == {"ok": False, "errno": 13}
        assert probe({"act": "write", "path": str(work / "model.bin")}) == {"ok": True}
        outside = settings.data_dir / "planted"
        assert probe({"act": "write", "path": str(outside)}) == {"ok": False, "errno": 13}
        assert not outside.exists()
        port = server.getsockname()[1]
        connect = {"act": "connect", "host": "127.0.0.1", "port": port}
        assert probe(connect) == {"ok": False, "errno": 13}
    finally:
        server.close()
