"""Fixtures of the jobs tests: a real worker (threads of this process, real sandboxed
training children) over the test's database and store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from aiaas.db import get_session_factory
from aiaas.jobs.context import JobsContext
from aiaas.jobs.models import TERMINAL, Job
from aiaas.jobs.training import handlers, worker_setup
from aiaas.jobs.worker import WorkerTiming, start_workers
from aiaas.settings import Settings
from aiaas.storage import get_store

#: lease and heartbeat short enough that a lost worker is noticed within a test
FAST_JOBS = {"lease_s": 3.0, "heartbeat_s": 0.3, "poll_s": 0.1, "retry_backoff_s": 0.0}


def fast_settings(settings: Settings, **jobs: Any) -> Settings:
    return settings.model_copy(update={"jobs": settings.jobs.model_copy(update=FAST_JOBS | jobs)})


def toy_rows(n: int = 400, seed: int = 0) -> list[dict[str, Any]]:
    """A learnable binary problem: y depends on x1 and x2 (with noise)."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = (x1 + 0.5 * x2 + rng.normal(scale=0.5, size=n) > 0).astype(int)
    return [
        {"x1": float(a), "x2": float(b), "c": "abc"[i % 3], "y": int(t)}
        for i, (a, b, t) in enumerate(zip(x1, x2, y, strict=True))
    ]


class Workers:
    """Embedded workers for one test: ``start(n)``; stopped (and joined) at teardown."""

    def __init__(self, settings: Settings):
        self.settings = fast_settings(settings)
        self.factory: sessionmaker[Session] = get_session_factory(settings.resolved_database_url)
        self.ctx = JobsContext.build(self.settings, get_store(settings.resolved_artifacts_url))
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, count: int = 1) -> None:
        timing = WorkerTiming(self.settings.jobs.heartbeat_s, self.settings.jobs.poll_s)
        setup = worker_setup(self.ctx)  # a warm training process, as `aiaas serve` has
        self.threads += start_workers(
            count, self.factory, handlers(self.ctx), self.ctx.policy, timing, self.stop, setup
        )

    def job(self, job_id: str) -> Job:
        with self.factory() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def wait(self, job_id: str, until: Callable[[Job], bool], timeout: float = 90.0) -> Job:
        end = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            assert time.monotonic() < end, f"timed out; job is {job.status}"
            time.sleep(0.1)

    def finished(self, job_id: str, timeout: float = 90.0) -> Job:
        return self.wait(job_id, lambda j: j.status in TERMINAL, timeout)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


@pytest.fixture
def workers(settings: Settings) -> Iterator[Workers]:
    w = Workers(settings)
    yield w
    w.close()
