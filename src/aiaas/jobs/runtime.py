"""Starting job workers: embedded in ``aiaas serve`` or alone in ``aiaas worker``.

Both build the same thing from the settings: a session factory on the metadata database,
the artifact store, the handlers by job kind, and ``count`` worker threads. A worker
process that stops (SIGTERM, Ctrl-C) kills its training children; their jobs are recovered
at once by a worker on the same host (the dead pid is provable) and after the lease
elsewhere.
"""

from __future__ import annotations

import threading

import structlog

from aiaas.jobs.context import JobsContext
from aiaas.jobs.limits import worker_timing
from aiaas.jobs.training import handlers, worker_setup
from aiaas.jobs.worker import start_workers
from aiaas.settings import Settings

log = structlog.get_logger()


def start(settings: Settings, count: int, stop: threading.Event) -> list[threading.Thread]:
    """``count`` worker threads of this process, until ``stop`` is set (none for 0)."""
    if count <= 0:
        return []
    import aiaas.db.models  # noqa: F401  (every table, for the foreign keys of a job's rows)
    from aiaas.db import get_session_factory
    from aiaas.storage import get_store

    factory = get_session_factory(settings.resolved_database_url)
    ctx = JobsContext.build(settings, get_store(settings.resolved_artifacts_url))
    timing = worker_timing(settings)
    threads = start_workers(
        count, factory, handlers(ctx), ctx.policy, timing, stop, worker_setup(ctx)
    )
    log.info("job_workers_started", count=count, executor=settings.executor)
    return threads


def join(threads: list[threading.Thread], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for the worker threads (after ``stop`` was set)."""
    for thread in threads:
        thread.join(timeout_s)
