"""``python -m tests.jobs.stalling_worker``: one real job worker (the settings come from
``AIAAS_*``) whose artifact store stalls right after it stored the first file of a model
version, so a test can kill -9 it in the middle of a registration. Only the store is
wrapped; the worker, the handler, the database and the files are the real ones."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiaas.db.models  # noqa: F401  (every table)
from aiaas.db import get_session_factory
from aiaas.jobs.context import JobsContext
from aiaas.jobs.limits import worker_timing
from aiaas.jobs.training import handlers
from aiaas.jobs.worker import Worker
from aiaas.settings import Settings
from aiaas.storage import get_store


class StallingStore:
    """The real store; after the first model file it says so on stdout and stalls."""

    def __init__(self, store: Any):
        self._store = store

    def put_file(self, org_id: str, key: str, local_path: Path) -> None:
        self._store.put_file(org_id, key, local_path)
        if key.startswith("models/"):
            print("STORED", key, flush=True)  # noqa: T201  (the protocol with the test)
            time.sleep(3600)  # killed here

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def main() -> int:
    settings = Settings()
    store = StallingStore(get_store(settings.resolved_artifacts_url))
    ctx = JobsContext(settings, store, JobsContext.build(settings, store._store).policy)  # type: ignore[arg-type]
    factory = get_session_factory(settings.resolved_database_url)
    worker = Worker(factory, handlers(ctx), ctx.policy, worker_timing(settings))
    worker.run(threading.Event())
    return 0


if __name__ == "__main__":
    sys.exit(main())
