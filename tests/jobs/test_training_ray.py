"""``AIAAS_EXECUTOR=ray``: a training job's trials run as tasks of a real local Ray (started
by the worker process, outside the training sandbox), and the job ends as usual."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from aiaas.jobs.context import JobsContext
from aiaas.jobs.training import ray_cluster
from aiaas.settings import Settings
from tests.conftest import Tenants, make_dataset
from tests.helpers import warm_ray_workers
from tests.jobs.conftest import Workers, toy_rows

ray = pytest.importorskip("ray", reason="the Ray executor's tests need the 'ray' package")


@pytest.fixture
def ray_workers(settings: Settings) -> Iterator[Workers]:
    was_connected = ray.is_initialized()
    workers = Workers(settings)
    workers.settings = workers.settings.model_copy(update={"executor": "ray", "ray_address": None})
    workers.ctx = JobsContext.build(workers.settings, workers.ctx.store)
    ray_cluster(workers.settings)  # what the worker's setup does, before the job's clock
    warm_ray_workers(2)
    yield workers
    workers.close()
    if not was_connected:
        ray.shutdown()


def test_a_job_on_ray_runs_its_trials_in_ray_workers_and_registers(
    client: Any, settings: Settings, tenants: Tenants, ray_workers: Workers
):
    dataset = make_dataset(settings, tenants.a, toy_rows(), name="toy")
    body = {"dataset_id": dataset.id, "target": "y", "time_budget_s": 30, "model_name": "toy",
            "families": ["linear", "lightgbm"]}  # fmt: skip
    job = client.post("/api/v1/training-jobs", headers=tenants.a.headers(), json=body).json()
    seen: set[int] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_ray_workers, args=(seen, stop), daemon=True)
    watcher.start()
    ray_workers.start()
    try:
        done = ray_workers.finished(job["id"], timeout=120)
    finally:
        stop.set()
        watcher.join(5)
    assert done.status == "succeeded", (done.error_code, done.error_message)
    trials = client.get(f"/api/v1/training-jobs/{job['id']}/trials", headers=tenants.a.headers())
    items = trials.json()["items"]
    assert len(items) >= 2
    pids = {int(t["worker"].rsplit(":", 1)[1]) for t in items}
    assert os.getpid() not in pids  # not this (the worker's) process
    assert pids <= seen, (pids, seen)  # every trial ran in a Ray worker process
    assert (done.result or {})["model_version"] == 1


def _watch_ray_workers(seen: set[int], stop: threading.Event) -> None:
    """Collect the pids of Ray worker processes on this machine while the job runs."""
    while not stop.wait(0.1):
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in seen:
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmdline = f.read()  # a Ray worker renames itself "ray::<task>"
                    if cmdline.startswith(b"ray::") or b"default_worker.py" in cmdline:
                        seen.add(int(entry))
                except OSError:
                    pass
