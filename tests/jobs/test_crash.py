"""Workers that die or freeze mid-job, as real processes (``aiaas worker``): the job runs
again elsewhere, exactly once, registers one version, and leaves no scratch behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from aiaas.data.scratch import scratch_root, sweep_scratch
from aiaas.jobs.models import JobEvent
from aiaas.registry.models import ModelVersion
from aiaas.settings import Settings
from tests.conftest import Tenants, make_dataset
from tests.jobs.conftest import FAST_JOBS, Workers, toy_rows

URL = "/api/v1/training-jobs"


def _spawn_worker(settings: Settings, log: Path, how: str = "worker") -> subprocess.Popen[bytes]:
    """``aiaas worker`` (or ``aiaas serve`` with its embedded worker) against the test's
    database, logging to ``log``."""
    if how == "serve":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args = ["serve", "--port", str(port), "--job-workers", "1"]
    else:
        args = ["worker", "--count", "1"]
    env = dict(os.environ)
    env |= {f"AIAAS_JOBS__{k.upper()}": str(v) for k, v in FAST_JOBS.items()}
    env |= {"AIAAS_DATA_DIR": str(settings.data_dir), "AIAAS_ENV": "test"}
    if settings.database_url:
        env["AIAAS_DATABASE_URL"] = settings.database_url
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "aiaas.cli.main", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: kill -9 takes its training child too
        )


def _submit(client: Any, tenants: Tenants, dataset: Any) -> str:
    body = {
        "dataset_id": dataset.id,
        "target": "y",
        "time_budget_s": 12,
        "model_name": "crashy",
        "families": ["linear", "lightgbm"],
    }
    response = client.post(URL, headers=tenants.a.headers(), json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _training_under(
    workers: Workers, job_id: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Wait until ``proc`` holds the job and its training child has reported a trial."""

    def started(job: Any) -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        if job.worker_id is None or f":{proc.pid}:" not in job.worker_id:
            return False
        with workers.factory() as session:
            return bool(session.scalar(
                select(func.count()).select_from(JobEvent).where(
                    JobEvent.job_id == job_id, JobEvent.type == "trial")
            ))  # fmt: skip

    workers.wait(job_id, started, timeout=60)


def _versions(workers: Workers) -> int:
    with workers.factory() as session:
        return int(session.scalar(select(func.count()).select_from(ModelVersion)) or 0)


@pytest.fixture
def dataset(settings: Settings, tenants: Tenants) -> Any:
    return make_dataset(settings, tenants.a, toy_rows(600), name="toy")


@pytest.mark.parametrize("how", ["serve", "worker"])
def test_kill_9_mid_job_runs_it_again_once_and_leaves_no_scratch(
    client, settings, tenants: Tenants, dataset, workers: Workers, tmp_path: Path, how: str
):
    job_id = _submit(client, tenants, dataset)
    log = tmp_path / "worker.log"
    proc = _spawn_worker(settings, log, how)
    try:
        _training_under(workers, job_id, proc, log)
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    workers.start()  # this host's worker sees the dead pid: no need to wait for the lease
    workers.wait(job_id, lambda j: j.status == "running" and j.attempts == 2, timeout=30)
    assert time.monotonic() - killed < 30
    done = workers.finished(job_id)
    assert done.status == "succeeded", (done.error_code, done.error_message)
    assert done.attempts == 2
    assert _versions(workers) == 1
    with workers.factory() as session:
        stmt = select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        types = list(session.scalars(stmt))
    assert types.count("started") == 2
    assert "retrying" in types
    assert types[-1] == "succeeded"
    sweep_scratch(settings, older_than_s=0)  # the killed worker's work dir is a leftover
    assert [p for p in scratch_root(settings).iterdir() if not p.name.startswith(".")] == []


def test_a_frozen_worker_loses_its_lease_and_the_job_runs_elsewhere_once(
    client, settings, tenants: Tenants, dataset, workers: Workers, tmp_path: Path
):
    job_id = _submit(client, tenants, dataset)
    log = tmp_path / "worker.log"
    proc = _spawn_worker(settings, log)
    try:
        _training_under(workers, job_id, proc, log)
        os.killpg(proc.pid, signal.SIGSTOP)  # alive but silent: only the lease can tell
        workers.start()
        workers.wait(job_id, lambda j: j.attempts == 2 and j.status == "running", timeout=30)
        os.killpg(proc.pid, signal.SIGCONT)  # it wakes up holding nothing
        done = workers.finished(job_id)
        time.sleep(1.0)  # give the woken worker time to try (and fail) to change the job
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert done.status == "succeeded", (done.error_code, done.error_message)
    assert workers.job(job_id).status == "succeeded"
    assert workers.job(job_id).attempts == 2
    assert _versions(workers) == 1
    assert f":{proc.pid}:" not in (done.worker_id or "")
    assert "job_lease_lost" in log.read_text()


def test_kill_9_in_the_middle_of_a_registration_leaves_no_row_without_files(
    client, settings, tenants: Tenants, dataset, workers: Workers, tmp_path: Path
):
    from aiaas.registry.sweep import sweep_orphans
    from aiaas.storage import get_store

    job_id = _submit(client, tenants, dataset)
    env = dict(os.environ)
    env |= {f"AIAAS_JOBS__{k.upper()}": str(v) for k, v in FAST_JOBS.items()}
    env |= {"AIAAS_DATA_DIR": str(settings.data_dir), "AIAAS_ENV": "test"}
    if settings.database_url:
        env["AIAAS_DATABASE_URL"] = settings.database_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.jobs.stalling_worker"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    watchdog = threading.Timer(90, lambda: os.killpg(proc.pid, signal.SIGKILL))  # EOF, not a hang
    watchdog.start()
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("STORED models/"):  # until a model file is stored
            line = proc.stdout.readline().decode()
            assert line, "the stalling worker ended before storing a model file"
    finally:
        watchdog.cancel()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    store = get_store(settings.resolved_artifacts_url)
    stored = list(store.list(tenants.a.org_id, "models"))
    assert stored
    assert _versions(workers) == 0
    workers.start()
    done = workers.finished(job_id)
    assert done.status == "succeeded", (done.error_code, done.error_message)
    assert done.attempts == 2
    assert _versions(workers) == 1
    assert sweep_orphans(workers.factory, store, older_than_s=0) == 1  # the killed attempt's
    with workers.factory() as session:
        version = session.scalars(select(ModelVersion)).one()
        names = {a["path"] for a in version.artifacts}
        prefix = version.storage_prefix
    left = set(store.list(tenants.a.org_id, "models"))
    assert left == {f"{prefix}/{name}" for name in names}  # exactly the version's files
