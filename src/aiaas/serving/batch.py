"""The ``batch.predict`` handler: a dataset version × a model version → a new scored dataset.

Where it runs: the scoring happens in a sandboxed child (:mod:`aiaas.serving.batch_worker`,
started by :func:`aiaas.sandbox.run_child`), not in the worker. The model may be a
user-uploaded ONNX graph, and parsing one can crash a process (uploads are checked in a
sandbox for that reason, but a check proves little about every input); the child also
reads the whole dataset. So the child gets the version's Parquet file (read), a work
directory holding a copy of the model's files and its output (write), no TCP, and memory,
CPU, file-size and wall-clock limits (``AIAAS_JOBS__BATCH_*``): a crash or an out-of-memory
fails the job, never the worker. It costs one process start (about a second of imports)
per job, which a batch job affords.

Invariants:

- the model version is the one fixed when the job was submitted (an endpoint's primary
  version at that moment), so a retried job scores with the same version;
- the child reads the Parquet in chunks (``batch_chunk_rows``), predicts each with the
  serving predictor (:func:`aiaas.serving.predictor.load`: the same encoding and the same
  ONNX session as online predictions) and writes each to its output Parquet; after each
  chunk it reports its rows, which become the job's progress (and ``progress`` events,
  at most every ``PROGRESS_EVERY_S``);
- the worker's heartbeat renews the lease meanwhile; cancel (or a lost lease) kills the
  child within a fraction of a second, and nothing is stored;
- the output is accepted only as a fresh regular file (:func:`claim_output`) with exactly
  the input's rows and columns plus the prediction columns;
- the new dataset and its version 1 are stored through the data service (bytes first, row
  second: :func:`aiaas.data.versions.store_version`) in the same transaction as the job's
  success, and only while this worker holds the job; its ``source`` is the lineage (the
  source dataset and version, the model and version, the endpoint, the job). If that
  transaction does not commit, the stored files are removed again (or swept later).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aiaas.auth.permissions import Role
from aiaas.auth.principal import Principal
from aiaas.data.context import DataContext
from aiaas.data.models import Dataset, DatasetVersion
from aiaas.data.scratch import work_dir
from aiaas.data.versions import VersionInfo, local_parquet, store_version
from aiaas.db.base import Tenant, new_id, scoped
from aiaas.errors import AiaasError, Conflict
from aiaas.jobs.context import JobsContext
from aiaas.jobs.limits import batch_limits, training_threads
from aiaas.jobs.models import Job
from aiaas.jobs.worker import Handler, JobCancelled, JobFailed, JobRun, LeaseLost
from aiaas.registry.models import ModelVersion
from aiaas.sandbox import ChildPaths, ChildRun, claim_output, run_child
from aiaas.storage import ArtifactStore

log = structlog.get_logger()

KIND = "batch.predict"
CHILD = "aiaas.serving.batch_worker"
PREDICTION = "prediction"
PROBABILITY_PREFIX = "p."
MODEL_DIR = "model"  # under the work directory: the model's files, as the child reads them
OUTPUT_FILE = "scored.parquet"
PROGRESS_EVERY_S = 0.5
MAX_LINE_BYTES = 1 << 20
_COPY_BLOCK = 4 * 1024 * 1024


def handlers(ctx: JobsContext) -> dict[str, Handler]:
    """The batch-prediction handler, by job kind (registered with the training one)."""
    # store_version needs the settings and the store; the data secret is not used by it
    data = DataContext.build(ctx.settings, ctx.store, b"")
    return {KIND: lambda run: run_batch(ctx, data, run)}


def prediction_columns(task: str, classes: list[Any] | None) -> list[str]:
    """The columns a scored dataset gets: ``prediction`` (the label, or the value), then
    ``p.<class>`` for each class of a classifier, in the model's class order."""
    if task == "regression":
        return [PREDICTION]
    return [PREDICTION, *(f"{PROBABILITY_PREFIX}{c}" for c in classes or [])]


def name_taken(session: Session, tenant: Tenant, name: str) -> bool:
    """Whether a dataset of the organization has ``name`` (compared regardless of case)."""
    stmt = scoped(select(Dataset.id), tenant).where(func.lower(Dataset.name) == func.lower(name))
    return session.scalar(stmt.limit(1)) is not None


# --------------------------------------------------------------------------- the handler


def run_batch(ctx: JobsContext, data: DataContext, run: JobRun) -> None:
    """Score in the sandbox, then store the new dataset and succeed in one transaction."""
    version, mv = _rows(run)
    parquet = _parquet(ctx, version)
    names = prediction_columns(mv.task, (mv.signature or {}).get("classes"))
    with work_dir(ctx.settings) as wd:
        _fetch_model(ctx.store, mv, wd / MODEL_DIR)
        stream = _Stream(run, version.row_count)
        started = time.monotonic()
        child = _score(ctx, run, parquet, wd, mv, names, stream)
        loop_s = _check_child(run, child, stream)
        timing = {"scoring_s": time.monotonic() - started, "loop_s": loop_s}
        scored = _claim(wd / OUTPUT_FILE, version, names)
        _store(data, run, scored, names, timing)


def _rows(run: JobRun) -> tuple[DatasetVersion, ModelVersion]:
    """The job's dataset version and model version, as they are now (or a clear failure)."""
    spec, org_id = run.claimed.spec, run.claimed.org_id
    with run.factory() as session:
        version = session.scalar(
            select(DatasetVersion).where(
                DatasetVersion.id == spec["dataset_version_id"], DatasetVersion.org_id == org_id
            )
        )
        mv = session.scalar(
            select(ModelVersion).where(
                ModelVersion.id == spec["model_version_id"], ModelVersion.org_id == org_id
            )
        )
    if version is None:
        raise JobFailed(
            "dataset_version_deleted",
            f"version {spec['dataset_version']} of dataset {spec['dataset_id']!r} no longer exists",
        )
    if mv is None:
        raise JobFailed(
            "model_version_deleted",
            f"version {spec['model_version']} of model {spec['model_name']!r} no longer exists",
        )
    return version, mv


def _parquet(ctx: JobsContext, version: DatasetVersion) -> Path:
    try:
        return local_parquet(ctx.store, ctx.settings, version)
    except (OSError, AiaasError):
        raise JobFailed(
            "dataset_version_unreadable", "the dataset version's data file cannot be read"
        ) from None


def _fetch_model(store: ArtifactStore, mv: ModelVersion, dest: Path) -> None:
    """Copy the version's artifact files (plain names, as the registry stores them)."""
    dest.mkdir()
    for artifact in mv.artifacts or []:
        name = str(artifact.get("path"))
        if not name or "/" in name or name in (".", ".."):
            raise JobFailed("model_unreadable", f"the model has an unexpected file {name[:100]!r}")
        try:
            with store.open(mv.org_id, f"{mv.storage_prefix}/{name}") as src:
                with (dest / name).open("wb") as out:
                    while block := src.read(_COPY_BLOCK):
                        out.write(block)
        except (OSError, AiaasError):
            raise JobFailed("model_unreadable", f"the model file {name!r} cannot be read") from None


def _view(mv: ModelVersion) -> dict[str, Any]:
    """The child's :class:`aiaas.serving.service.VersionView`, its files under ``model/``."""
    return {
        "id": mv.id,
        "org_id": mv.org_id,
        "model_name": mv.model.name,
        "number": mv.number,
        "task": mv.task,
        "signature": dict(mv.signature or {}),
        "artifacts": [str(a.get("path")) for a in mv.artifacts or []],
        "storage_prefix": MODEL_DIR,
        "size_bytes": int(mv.size_bytes or 0),
    }


def _score(
    ctx: JobsContext,
    run: JobRun,
    parquet: Path,
    wd: Path,
    mv: ModelVersion,
    names: list[str],
    stream: _Stream,
) -> ChildRun:
    settings = ctx.settings
    request = {
        "data": str(parquet),
        "root": str(wd),
        "version": _view(mv),
        "columns": names,
        "strict_categories": bool(run.claimed.spec.get("strict_categories")),
        "chunk_rows": settings.jobs.batch_chunk_rows,
        "threads": training_threads(settings),
        "out": str(wd / OUTPUT_FILE),
    }
    paths = ChildPaths(
        cwd=wd, read=(parquet,), write=(wd,), landlock=settings.jobs.training_sandbox
    )
    return run_child(
        CHILD, request, batch_limits(settings), paths, on_output=stream.feed, cancel=run.stop
    )


@dataclass
class _Stream:
    """Turns the child's progress lines into the job's progress; keeps its answer."""

    run: JobRun
    total: int
    buffer: bytearray = field(default_factory=bytearray)
    rows: int = 0
    written_at: float = 0.0
    result: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            self._line(line)
        if len(self.buffer) > MAX_LINE_BYTES:
            raise JobFailed("scoring_error", "the scoring process wrote an oversized line")

    def _line(self, line: bytes) -> None:
        try:
            obj = json.loads(line)
        except ValueError:
            return  # not ours (a library printing): ignored
        if not isinstance(obj, dict):
            return
        if obj.get("type") == "result":
            self.result = obj
        elif obj.get("type") == "progress" and isinstance(obj.get("rows"), int):
            self._progress(max(0, min(int(obj["rows"]), self.total)))

    def _progress(self, rows: int) -> None:
        self.rows = rows
        now = time.monotonic()
        if now - self.written_at < PROGRESS_EVERY_S and rows < self.total:
            return
        self.written_at = now
        data = {"rows_done": rows, "rows_total": self.total}
        self.run.event("progress", data, progress=rows / self.total if self.total else 1.0)


def _check_child(run: JobRun, child: ChildRun, stream: _Stream) -> float | None:
    """The child's seconds in its scoring loop when it scored every row; else the job's
    failure (cancel, lease, limits, a coded error)."""
    if run.lost.is_set():
        raise LeaseLost(run.claimed.id)
    if run.cancel_requested.is_set() or child.cancelled:
        raise JobCancelled()
    reply = stream.result
    if reply is not None and reply.get("ok") is True:
        loop_s = reply.get("loop_s")  # untrusted: a positive number, or nothing
        if isinstance(loop_s, int | float) and not isinstance(loop_s, bool) and loop_s > 0:
            return float(loop_s)
        return None
    if reply is not None and isinstance(reply.get("code"), str):
        raise JobFailed(str(reply["code"])[:100], str(reply.get("message", ""))[:2000])
    if child.timed_out:
        raise JobFailed(
            "time_limit", "scoring ran past AIAAS_JOBS__BATCH_TIMEOUT_S and was stopped"
        )
    if child.overflow:
        raise JobFailed("scoring_error", "the scoring process wrote too much output")
    if child.killed_at_limit:
        raise JobFailed(
            "resource_limit", "scoring was killed at its memory or CPU limit (out of memory?)"
        )
    log.warning("batch_child_died", job_id=run.claimed.id, rc=child.returncode,
                stderr=child.stderr[-2000:])  # fmt: skip
    raise JobFailed(
        "scoring_crashed", f"the scoring process died ({child.signal or child.returncode})"
    )


def _claim(path: Path, version: DatasetVersion, names: list[str]) -> Path:
    """The child's output, if it is a fresh file with the input's rows and columns plus
    the prediction columns."""
    try:
        claimed = claim_output(path)
        meta = pq.read_metadata(claimed)
    except (ValueError, OSError):
        raise JobFailed("scoring_error", "the scoring process left no readable output") from None
    columns = [str(c.get("name")) for c in version.columns_schema]
    if meta.num_rows != version.row_count or meta.schema.names != [*columns, *names]:
        raise JobFailed("scoring_error", "the scoring output does not match its input")
    return claimed


# --------------------------------------------------------------------------- storing


def _store(
    data: DataContext,
    run: JobRun,
    scored: Path,
    names: list[str],
    timing: dict[str, float | None],
) -> None:
    """Store the new dataset and succeed, together; its files go if the commit does not."""
    claimed = run.claimed
    spec = claimed.spec
    principal = Principal(
        org_id=claimed.org_id,
        org_slug="",
        role=Role.developer,
        actor_type="system",
        actor_id=claimed.created_by or "system",
    )
    info = VersionInfo(source=lineage(spec, claimed.id))
    created: list[str] = []

    def finalize(session: Session, job: Job) -> dict[str, Any]:
        dataset = _new_dataset(session, principal, spec, claimed.created_by)
        created.append(dataset.id)
        try:
            with session.no_autoflush:  # the dataset row is written with its version, after
                stored = store_version(session, principal, data, dataset, scored, info)
        except Conflict:  # the new dataset's name, taken at this very moment
            raise _name_failure(spec) from None
        except AiaasError as exc:  # the storage quota, an oversized cell
            raise JobFailed("output_not_stored", exc.detail) from None
        return _result(spec, dataset, stored, names, run, timing)

    try:
        run.complete(finalize)
    except BaseException:
        for dataset_id in created:  # stored but (provably) not committed: remove the files
            if _dataset_absent(run, dataset_id):
                data.store.delete_prefix(claimed.org_id, f"datasets/{dataset_id}")
        raise


def lineage(spec: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The scored version's ``source``: where its rows and its predictions come from."""
    keys = (
        "dataset_id", "dataset_version", "dataset_version_id", "model_name", "model_id",
        "model_version", "model_version_id", "endpoint", "endpoint_id",
    )  # fmt: skip
    return {"kind": "batch_prediction", "job_id": job_id, **{k: spec.get(k) for k in keys}}


def _new_dataset(
    session: Session, principal: Principal, spec: dict[str, Any], created_by: str | None
) -> Dataset:
    """The output dataset, added to the session but not flushed (its row is written with
    its version: on SQLite a flush would take the write lock for the whole profile)."""
    name = str(spec["output_name"])
    if name_taken(session, principal, name):
        raise _name_failure(spec)
    dataset = Dataset(
        id=new_id("ds"),
        org_id=principal.org_id,
        name=name,
        description=(
            f"Predictions of model {spec['model_name']!r} version {spec['model_version']} on "
            f"dataset {spec['dataset_name']!r} version {spec['dataset_version']}"
        )[:2000],
        latest_version=0,
        created_by=created_by,
    )
    session.add(dataset)
    return dataset


def _name_failure(spec: dict[str, Any]) -> JobFailed:
    return JobFailed(
        "output_name_taken",
        f"a dataset named {spec['output_name']!r} was created meanwhile; submit again with "
        "another output_name",
    )


def _dataset_absent(run: JobRun, dataset_id: str) -> bool:
    """True only when the dataset's row is known not to exist (a commit that raised may
    still have committed); unknown (the database is away): False, and the sweep decides."""
    try:
        with run.factory() as session:
            return session.get(Dataset, dataset_id) is None
    except Exception:
        return False


def _result(
    spec: dict[str, Any],
    dataset: Dataset,
    stored: DatasetVersion,
    names: list[str],
    run: JobRun,
    timing: dict[str, float | None],
) -> dict[str, Any]:
    """What the job made; ``scoring_s``: the scoring process from start to end,
    ``rows_per_s``: the rows over its read-predict-write loop alone."""
    rows, loop_s = stored.row_count, timing["loop_s"]
    return {
        "dataset_id": dataset.id,
        "dataset_name": dataset.name,
        "dataset_version": stored.number,
        "dataset_version_id": stored.id,
        "rows": rows,
        "prediction_columns": names,
        "model_name": spec["model_name"],
        "model_version": spec["model_version"],
        "scoring_s": round(timing["scoring_s"] or 0.0, 3),
        "rows_per_s": round(rows / loop_s) if loop_s else None,
        "elapsed_s": round(time.monotonic() - run.started, 3),
    }
