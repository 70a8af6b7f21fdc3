"""The ``training.run`` handler: a job's dataset version → a sandboxed fit → a model version.

Invariants:

- the job's time budget runs from its claim: the child gets a wall-clock deadline, keeps
  ``registration_reserve_s`` back for storing and registering, and is killed
  ``training_grace_s`` after the budget at the latest;
- the child reads only the version's Parquet file and writes only its output directory
  (Landlock where the kernel has it), with memory and CPU limits: a crash or out-of-memory
  fails the job, never the worker;
- every finished trial becomes a ``job_trials`` row and a ``trial`` event (``best`` when it
  improves on the best so far) while the child runs;
- the model version is registered in the same transaction as the job's success, and only
  while this worker holds the job: a retried job never registers two versions (and the
  registry's unique ``job_id`` would refuse a second one anyway);
- cancel (or a lost lease) kills the child within a fraction of a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from aiaas.data.models import DatasetVersion
from aiaas.data.scratch import scratch_root, work_dir
from aiaas.data.versions import local_parquet
from aiaas.errors import AiaasError
from aiaas.jobs.context import JobsContext
from aiaas.jobs.limits import training_limits, training_threads
from aiaas.jobs.models import Job, JobTrial
from aiaas.jobs.queue import add_event
from aiaas.jobs.worker import (
    THREAD_EXIT_HOOKS,
    Handler,
    JobCancelled,
    JobFailed,
    JobRun,
    LeaseLost,
)
from aiaas.sandbox import ChildPaths, ChildRun, run_child
from aiaas.sandbox.runner import discard, spawn
from aiaas.settings import Settings

log = structlog.get_logger()

KIND = "training.run"
CHILD = "aiaas.jobs.training_worker"
MAX_LINE_BYTES = 1 << 20


def handlers(ctx: JobsContext) -> dict[str, Handler]:
    """The handlers a worker of this app runs, by job kind."""
    from aiaas.serving import batch  # batch.predict (serving imports the jobs domain)

    return {KIND: lambda run: run_training(ctx, run), **batch.handlers(ctx)}


def worker_setup(ctx: JobsContext) -> Callable[[], None] | None:
    """What a worker thread does first: connect to (or start) Ray with the Ray executor,
    and start its warm training process (if configured) — not on a job's clock."""
    settings = ctx.settings
    if settings.executor != "ray" and not settings.jobs.warm_training_process:
        return None

    def setup() -> None:
        if settings.executor == "ray":
            ray_cluster(settings)
        if settings.jobs.warm_training_process:
            _prespawn(settings)

    return setup


@dataclass
class _Stream:
    """Turns the child's stdout into trial rows and events as lines arrive."""

    run: JobRun
    budget_s: float
    buffer: bytearray = field(default_factory=bytearray)
    best: float | None = None
    trials: int = 0
    result: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            self._line(line)
        if len(self.buffer) > MAX_LINE_BYTES:
            raise JobFailed("training_error", "the training process wrote an oversized line")

    def _line(self, line: bytes) -> None:
        try:
            obj = json.loads(line)
        except ValueError:
            return  # not ours (a library printing): ignored
        if not isinstance(obj, dict):
            return
        if obj.get("type") == "trial":
            self._trial(obj)
        elif obj.get("type") == "result":
            self.result = obj

    def _trial(self, row: dict[str, Any]) -> None:
        trial = _trial_row(self.run, row)
        if trial is None:
            return
        self.trials += 1
        improved = trial.score is not None and (self.best is None or trial.score > self.best)
        if improved:
            self.best = trial.score
        elapsed = time.monotonic() - self.run.started
        data = {
            "trial": trial.number,
            "family": trial.family,
            "state": trial.state,
            "score": trial.score,
            "fit_time_s": trial.fit_time_s,
        }

        def write(session: Session, job: Job) -> None:
            session.add(trial)
            add_event(session, job, "trial", data)
            if improved:
                add_event(session, job, "best", data)
            job.progress = min(0.99, elapsed / self.budget_s)

        self.run.write(write)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _trial_row(run: JobRun, row: dict[str, Any]) -> JobTrial | None:
    """A trial row from the child's (untrusted) line; None when it is malformed."""
    number, family, state = row.get("trial"), row.get("family"), row.get("state")
    if not isinstance(number, int) or not isinstance(family, str) or not isinstance(state, str):
        return None
    raw_params, raw_folds = row.get("params"), row.get("fold_scores")
    params = raw_params if isinstance(raw_params, dict) else {}
    folds = raw_folds if isinstance(raw_folds, list) else []
    error, worker = row.get("error"), row.get("worker")
    return JobTrial(
        job_id=run.claimed.id,
        org_id=run.claimed.org_id,
        number=number,
        attempt=run.claimed.attempt,
        family=family[:100],
        params=params,
        state=state[:20],
        score=_num(row.get("score")),
        score_std=_num(row.get("score_std")),
        fold_scores=[_num(v) for v in folds[:100]],
        fit_time_s=_num(row.get("fit_time_s")),
        error=error[:2000] if isinstance(error, str) else None,
        worker=worker[:200] if isinstance(worker, str) else None,
    )


def run_training(ctx: JobsContext, run: JobRun) -> None:
    """The handler: fit in the sandbox, then register and succeed in one transaction."""
    spec = run.claimed.spec
    budget = float(spec["time_budget_s"])
    version = _dataset_version(ctx, run)
    parquet = _parquet(ctx, version)
    run.write(_start_attempt)
    with work_dir(ctx.settings) as wd:
        out = wd / "model"
        stream = _Stream(run, budget)
        child = _run_child(ctx, run, parquet, wd, out, stream)
        reply = _check_child(run, child, stream)
        _register(ctx, run, version, out, reply)


def _start_attempt(session: Session, job: Job) -> None:
    """A retried job trains again: the trials of earlier attempts go."""
    session.execute(delete(JobTrial).where(JobTrial.job_id == job.id))
    job.progress = 0.0


def _dataset_version(ctx: JobsContext, run: JobRun) -> DatasetVersion:
    spec = run.claimed.spec
    with run.factory() as session:
        version = session.scalar(
            select(DatasetVersion).where(
                DatasetVersion.id == spec["dataset_version_id"],
                DatasetVersion.org_id == run.claimed.org_id,
            )
        )
    if version is None:
        raise JobFailed(
            "dataset_version_deleted",
            f"version {spec['dataset_version']} of dataset {spec['dataset_id']!r} no longer exists",
        )
    return version


def _parquet(ctx: JobsContext, version: DatasetVersion) -> Path:
    try:
        return local_parquet(ctx.store, ctx.settings, version)
    except (FileNotFoundError, OSError, AiaasError):
        raise JobFailed(
            "dataset_version_unreadable", "the dataset version's data file cannot be read"
        ) from None


def _run_child(
    ctx: JobsContext, run: JobRun, parquet: Path, wd: Path, out: Path, stream: _Stream
) -> ChildRun:
    spec, settings = run.claimed.spec, ctx.settings
    budget = float(spec["time_budget_s"])
    left = budget - (time.monotonic() - run.started)
    request = {
        "data": str(parquet),
        "target": spec["target"],
        "task": spec.get("task") or "auto",
        "metric": spec.get("metric"),
        "seed": spec.get("seed", 0),
        "cv": spec.get("cv_folds"),
        "families": spec.get("families"),
        "ensemble": spec.get("ensemble", True),
        "threads": training_threads(settings),
        "deadline": time.time() + left,
        "reserve_s": settings.jobs.registration_reserve_s,
        "out": str(out),
        "executor": settings.executor,
        "ray_address": ray_cluster(settings) if settings.executor == "ray" else None,
        "ray_env": ray_auth_env() if settings.executor == "ray" else {},
    }
    try:
        return run_child(
            CHILD,
            request,
            training_limits(settings, max(left, 1.0)),
            child_paths(settings, parquet, wd),
            on_output=stream.feed,
            cancel=run.stop,
            warm=_take_warm(),
        )
    finally:
        if settings.jobs.warm_training_process:
            _prespawn(settings)


#: POSIX semaphores live here: joblib's thread pools (forests, HistGB's binning) need one
_SHM = Path("/dev/shm")
_RAY_WRITES = (Path(tempfile.gettempdir()) / "ray", _SHM)
_ray_lock = threading.Lock()
#: per worker thread: a training process spawned ahead of its next job (imports done)
_warm = threading.local()


def ray_cluster(settings: Settings) -> str:
    """The Ray cluster a training process drives: ``ray_address`` (``RAY_ADDRESS``), else a
    local Ray this worker process starts once (the sandboxed process could not start one:
    Ray's daemons need more than its sandbox allows) and whose address it hands on."""
    if settings.ray_address:
        return settings.ray_address
    import ray

    with _ray_lock:
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(
                address="local",  # a new one, not a cluster some `ray start` left behind
                num_cpus=len(os.sched_getaffinity(0)),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                _temp_dir=str(_RAY_WRITES[0]),
            )
            log.info("ray_started", address=ray.get_runtime_context().gcs_address)
        return str(ray.get_runtime_context().gcs_address)


def ray_auth_env() -> dict[str, str]:
    """Ray's token authentication (on by default for local clusters since Ray 2.59) for
    the training process, whose environment is scrubbed: the mode and the token itself."""
    mode = os.environ.get("RAY_AUTH_MODE", "")
    if mode != "token":
        return {"RAY_AUTH_MODE": mode} if mode else {}
    token = os.environ.get("RAY_AUTH_TOKEN", "")
    if not token:
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
        try:
            token = Path(path).read_text().strip()
        except OSError:
            log.warning("ray_auth_token_unreadable", path=path)
    return {"RAY_AUTH_MODE": mode, "RAY_AUTH_TOKEN": token}


def child_paths(settings: Settings, parquet: Path, wd: Path) -> ChildPaths:
    """What a training process may touch: read its version's file, write its work dir;
    TCP only as a Ray driver (its cluster runs the trials)."""
    if settings.executor == "ray":  # a Ray driver: /proc (psutil), its session files, shm
        return ChildPaths(
            cwd=wd,
            read=(parquet, Path("/proc")),
            write=(wd, *_RAY_WRITES),
            landlock=settings.jobs.training_sandbox,
            tcp=True,
        )
    return ChildPaths(
        cwd=wd, read=(parquet,), write=(wd, _SHM), landlock=settings.jobs.training_sandbox
    )


def _prespawn(settings: Settings) -> None:
    """Start this worker thread's next training process now (it imports while idle)."""
    try:
        root = scratch_root(settings)
        root.mkdir(parents=True, exist_ok=True)
        _warm.proc = spawn(CHILD, root)
    except OSError as exc:  # no process to spare now: the next job starts one itself
        log.warning("warm_training_process_failed", error=str(exc))


def _take_warm() -> subprocess.Popen[bytes] | None:
    """This worker thread's warm training process, if it has one (it is used once)."""
    proc: subprocess.Popen[bytes] | None = getattr(_warm, "proc", None)
    _warm.proc = None
    return proc


def _drop_warm() -> None:
    """The worker thread stops: its warm training process goes with it."""
    proc = _take_warm()
    if proc is not None:
        discard(proc)


THREAD_EXIT_HOOKS.append(_drop_warm)


def _check_child(run: JobRun, child: ChildRun, stream: _Stream) -> dict[str, Any]:
    """The child's successful answer, or the job's failure (cancel, lease, limits, error)."""
    if run.lost.is_set():
        raise LeaseLost(run.claimed.id)
    if run.cancel_requested.is_set() or child.cancelled:
        raise JobCancelled()
    reply = stream.result
    if reply is not None and reply.get("ok") is True:
        return reply
    if reply is not None and isinstance(reply.get("code"), str):
        raise JobFailed(str(reply["code"])[:100], str(reply.get("message", ""))[:2000])
    if child.timed_out:
        raise JobFailed("time_limit", "training ran past its time budget and was stopped")
    if child.overflow:
        raise JobFailed("training_error", "the training process wrote too much output")
    if child.killed_at_limit:
        raise JobFailed(
            "resource_limit", "training was killed at its memory or CPU limit (out of memory?)"
        )
    log.warning("training_child_died", job_id=run.claimed.id, rc=child.returncode,
                stderr=child.stderr[-2000:])  # fmt: skip
    raise JobFailed(
        "training_crashed", f"the training process died ({child.signal or child.returncode})"
    )


def _register(
    ctx: JobsContext, run: JobRun, version: DatasetVersion, out: Path, reply: dict[str, Any]
) -> None:
    """Register the model and succeed, together; the files go if the commit does not."""
    from aiaas.registry import service as registry

    spec = run.claimed.spec
    raw_report = reply.get("report")
    report: dict[str, Any] = raw_report if isinstance(raw_report, dict) else {}
    lineage = {
        "dataset_id": spec["dataset_id"],
        "dataset_version": spec["dataset_version"],
        "dataset_version_id": version.id,
        "job_id": run.claimed.id,
    }
    uploaded: list[Any] = []

    def finalize(session: Session, job: Job) -> dict[str, Any]:
        try:
            mv = registry.register_trained(
                session,
                ctx.store,
                org_id=run.claimed.org_id,
                model_name=spec["model_name"],
                model_dir=out,
                lineage=lineage,
                job_id=run.claimed.id,
                created_by=run.claimed.created_by,
            )
        except AiaasError as exc:
            raise JobFailed("registration_failed", exc.detail) from None
        uploaded.append(mv)
        return _result(spec, mv, report, run)

    try:
        run.complete(finalize)
    except BaseException:
        for mv in uploaded:  # stored but (provably) not committed: its files must not stay
            if _row_absent(run, mv.id):
                registry.purge_files(ctx.store, mv)
        raise


def _row_absent(run: JobRun, version_id: str) -> bool:
    """True only when the version's row is known not to exist (a commit that raised may
    still have committed); unknown (the database is away): False, and the sweep decides."""
    from aiaas.registry.models import ModelVersion

    try:
        with run.factory() as session:
            return session.get(ModelVersion, version_id) is None
    except Exception:
        return False


def _result(spec: dict[str, Any], mv: Any, report: dict[str, Any], run: JobRun) -> dict[str, Any]:
    return {
        "model_name": spec["model_name"],
        "model_id": mv.model_id,
        "model_version": mv.number,
        "model_version_id": mv.id,
        "task": report.get("task"),
        "metric": report.get("metric"),
        "cv_score": report.get("cv_score"),
        "holdout_score": report.get("holdout_score"),
        "task_inference": report.get("task_inference"),
        "warnings": report.get("warnings"),
        "trials": report.get("trials"),
        "elapsed_s": round(time.monotonic() - run.started, 3),
    }
