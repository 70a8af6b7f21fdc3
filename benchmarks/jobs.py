"""Training as a service: what a job costs around its search, and what the queue withstands.

    python benchmarks/jobs.py                       # 30 s budgets, magic, all parts
    python benchmarks/jobs.py --budget 12 --skip-ray --skip-pg

Everything runs as real processes over real HTTP, in a fresh temporary data dir (SQLite
metadata, local artifact store), one part after another (never two fits at once):

1. ``aiaas serve --job-workers 1``: upload the training split of a PMLB file, submit a job,
   follow its Server-Sent Events. Overheads: submit → first ``trial`` event, last ``trial``
   event → ``succeeded`` (the version is registered in that transaction), the whole job's wall
   time against its budget, trials and trials per minute of budget.
2. ``aiaas automl fit`` (the local CLI) on the same training split, seed and budget; both
   models are scored on the same held-out 25 % (seed-0 split, stratified for classification):
   the service must add no quality loss.
3. The same job on a second server with ``AIAAS_EXECUTOR=ray`` (a local Ray started by the
   training process): trials per minute against the local executor. A failure is recorded.
4. The queue alone: ``--claims`` no-op jobs pre-enqueued, 4 worker processes each looping
   ``claim`` + ``finish``; claims per second on PostgreSQL (a scratch database, dropped at the
   end) and on SQLite, and a check that no job was claimed twice.
5. kill -9: ``aiaas worker`` (its own session) runs a job; once it has a trial its process
   group is SIGKILLed and another ``aiaas worker`` starts: kill → job running again, and the
   job must end ``succeeded`` after 2 attempts with one registered version.

The table is printed and written to benchmarks/results/jobs.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AIAAS = str(BIN / "aiaas")
DATA = ROOT.parent / "shared" / "datasets" / "pmlb"
RESULTS = ROOT / "benchmarks" / "results"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TARGET = "target"
NOOP = "bench.noop"
CLAIM_WORKERS = 4
TERMINAL = {"succeeded", "failed", "cancelled"}
OVERHEAD_TARGET_S = 2.0
RECOVERY_TARGET_S = 30.0
AUC_TOLERANCE = 0.005  # "not worse": within this of the CLI (as benchmarks/automl.py)
LOSS_TOLERANCE = 0.01  # log loss / RMSE: within 1 %


# ------------------------------------------------------------------------------ processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of every aiaas process: ours, not the developer's AIAAS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIAAS_", "RAY_"))}
    env |= {"AIAAS_DATA_DIR": str(data_dir), "OMP_WAIT_POLICY": "PASSIVE"}
    return env | extra


def _cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [AIAAS, *args], env=_env(data_dir), cwd=data_dir, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"aiaas {' '.join(args)}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Proc:
    """An aiaas process in its own session (so one signal reaches all of it), logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 15) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self, sig: int = signal.SIGTERM, wait_s: float = 20.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(wait_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)


def _start(name: str, data_dir: Path, args: list[str], **env: str) -> Proc:
    log = data_dir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [AIAAS, *args],
            env=_env(data_dir, **env),
            cwd=data_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, log)


@contextlib.contextmanager
def _server(data_dir: Path, job_workers: int, **env: str) -> Iterator[tuple[Proc, str]]:
    port = _free_port()
    name = f"serve-{port}"
    proc = _start(name, data_dir, ["serve", "--port", str(port), "--job-workers",
                                   str(job_workers)], **env)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"aiaas serve exited ({proc.popen.returncode}):\n{proc.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"aiaas serve not ready after 90 s:\n{proc.tail()}")
            time.sleep(0.2)
        yield proc, base
    finally:
        proc.stop()


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc: children of each of its threads)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = [int(x) for x in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# ----------------------------------------------------------------------------------- API
@dataclass
class Event:
    type: str
    data: dict[str, Any]
    arrived: float  # client wall clock

    @property
    def at(self) -> float:
        return _ts(self.data["at"])


def _ts(value: str) -> float:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass
class Follower:
    """Reads a job's SSE stream in a thread (resuming with Last-Event-ID) until its end."""

    client: httpx.Client
    job_id: str
    events: list[Event] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def start(self) -> Follower:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        last = 0
        try:
            for _ in range(20):
                headers = {"Last-Event-ID": str(last)} if last else {}
                url = f"/api/v1/training-jobs/{self.job_id}/events"
                with contextlib.suppress(httpx.TransportError):
                    with self.client.stream("GET", url, headers=headers) as resp:
                        resp.raise_for_status()
                        last = self._read(resp, last)
                if any(e.type in TERMINAL for e in self.events):
                    return
                time.sleep(0.5)
            self.error = "the event stream ended before the job did"
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def _read(self, resp: httpx.Response, last: int) -> int:
        fields: dict[str, str] = {}
        for line in resp.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                fields[key] = fields[key] + "\n" + value if key in fields else value
                continue
            if "data" in fields and "event" in fields:
                self.events.append(Event(fields["event"], json.loads(fields["data"]), time.time()))
                last = int(fields.get("id", last))
            fields = {}
        return last

    def first(self, type_: str) -> Event | None:
        return next((e for e in self.events if e.type == type_), None)

    def of(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]

    def wait_for(self, pred: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred(self) or self.done.is_set():
                return bool(pred(self))
            time.sleep(0.05)
        return False


def _client(base: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base,
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(30.0, read=60.0),
    )


def _upload(client: httpx.Client, path: Path, name: str) -> str:
    with path.open("rb") as fh:
        resp = client.post(
            "/api/v1/datasets",
            files={"file": (path.name, fh, "application/octet-stream")},
            data={"name": name},
            timeout=120,
        )
    if resp.status_code != 201:
        raise RuntimeError(f"upload: {resp.status_code} {resp.text[:300]}")
    return str(resp.json()["id"])


def _submit(client: httpx.Client, dataset_id: str, model: str, budget: float) -> tuple[str, float]:
    body = {"dataset_id": dataset_id, "target": TARGET, "time_budget_s": budget,
            "model_name": model, "seed": 0}  # fmt: skip
    t = time.time()
    resp = client.post("/api/v1/training-jobs", json=body)
    if resp.status_code != 202:
        raise RuntimeError(f"submit: {resp.status_code} {resp.text[:300]}")
    return str(resp.json()["id"]), t


def _get(client: httpx.Client, path: str) -> dict[str, Any]:
    resp = client.get(path)
    resp.raise_for_status()
    out: dict[str, Any] = resp.json()
    return out


# ------------------------------------------------------------------------- one job, timed
def _run_job(client: httpx.Client, dataset_id: str, model: str, budget: float) -> dict[str, Any]:
    """Submit, follow to the end; the overheads as the SSE client and the server saw them."""
    job_id, t_submit = _submit(client, dataset_id, model, budget)
    follow = Follower(client, job_id).start()
    follow.done.wait(budget + 150)
    job = _get(client, f"/api/v1/training-jobs/{job_id}")
    trials = _get(client, f"/api/v1/training-jobs/{job_id}/trials")
    out: dict[str, Any] = {"job_id": job_id, "status": job["status"], "job": job,
                           "stream_error": follow.error}  # fmt: skip
    if job.get("error"):
        out["error"] = f"{job['error']['code']}: {job['error']['message']}"
    created = _ts(job["created_at"])
    started, trial_events = follow.first("started"), follow.of("trial")
    end = next((e for e in follow.events if e.type in TERMINAL), None)
    out["trials"] = len(trial_events)
    out["trial_rows"] = trials.get("count")
    out["trial_workers"] = len({t.get("worker") for t in trials.get("items", [])})
    out["trials_per_min"] = len(trial_events) / (budget / 60)
    if started is not None:
        out["queued_s"] = started.at - created
    if trial_events:
        first, last = trial_events[0], trial_events[-1]
        out["first_trial_client_s"] = first.arrived - t_submit
        out["first_trial_server_s"] = first.at - created
        out["claim_to_first_trial_s"] = first.at - started.at if started else None
        out["first_trial_fit_s"] = first.data.get("fit_time_s")
        if end is not None and end.type == "succeeded":
            out["registered_client_s"] = end.arrived - last.arrived
            out["registered_server_s"] = end.at - last.at
    if end is not None:
        out["wall_client_s"] = end.arrived - t_submit
        out["wall_server_s"] = end.at - created
    result = job.get("result") or {}
    out |= {k: result.get(k) for k in ("cv_score", "holdout_score", "metric", "model_version")}
    if job["status"] == "succeeded":
        name = result.get("model_name", model)
        resp = client.get(f"/api/v1/models/{name}/versions/{result.get('model_version', 1)}")
        out["registry_get"] = resp.status_code
    return out


# ------------------------------------------------------------------------- data and scores
def _split(dataset: str, tmp: Path) -> tuple[Path, Any]:
    import pandas as pd
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(DATA / f"{dataset}.tsv.gz", sep="\t")
    y = df[TARGET]
    classify = y.nunique() <= 20 and pd.api.types.is_integer_dtype(y)
    train, test = train_test_split(
        df, test_size=0.25, random_state=0, stratify=y if classify else None
    )
    path = tmp / f"{dataset}-train.tsv.gz"
    train.to_csv(path, sep="\t", index=False)
    return path, test.reset_index(drop=True)


def _score(model: Any, test: Any) -> tuple[str, float]:
    """The held-out score of a trained model: ROC AUC, log loss or RMSE (as automl.py)."""
    import numpy as np
    from sklearn import metrics

    X, y = test.drop(columns=[TARGET]), test[TARGET]
    if model.task == "regression":
        pred = np.asarray(model.predict(X), dtype=float)
        return "rmse", float(np.sqrt(np.mean((y.to_numpy(dtype=float) - pred) ** 2)))
    proba = np.asarray(model.predict_proba(X), dtype=float)
    classes = np.asarray(model.classes_).astype(y.dtype)
    if model.task == "binary":
        return "roc_auc", float(metrics.roc_auc_score(y == classes[1], proba[:, 1]))
    return "log_loss", float(metrics.log_loss(y, proba, labels=list(classes)))


def _job_model(data_dir: Path, job_id: str, into: Path) -> tuple[Any, int]:
    """The job's registered model, loaded from its version's stored files; and how many
    versions point at this job."""
    from sqlalchemy import select

    import aiaas.automl as automl
    from aiaas.db import get_session_factory
    from aiaas.registry.models import ModelVersion
    from aiaas.settings import Settings
    from aiaas.storage import get_store

    settings = Settings(data_dir=data_dir, _env_file=None)
    with get_session_factory(settings.resolved_database_url)() as session:
        versions = list(session.scalars(select(ModelVersion).where(ModelVersion.job_id == job_id)))
    if not versions:
        raise RuntimeError(f"no model version for job {job_id}")
    mv = versions[0]
    store = get_store(settings.resolved_artifacts_url)
    wanted = {str(a["path"]).rsplit("/", 1)[-1] for a in mv.artifacts}
    into.mkdir(parents=True)
    for key in store.list(mv.org_id, mv.storage_prefix):
        name = key.rsplit("/", 1)[-1]
        if name in wanted:
            (into / name).write_bytes(store.get_bytes(mv.org_id, key))
    return automl.load(into), len(versions)


def _cli_fit(data_dir: Path, train: Path, budget: float, out: Path) -> dict[str, Any]:
    t = time.monotonic()
    done = subprocess.run(
        [AIAAS, "automl", "fit", str(train), "--target", TARGET, "--time-budget", str(budget),
         "--seed", "0", "--output", str(out)],
        env=_env(data_dir), cwd=data_dir, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.monotonic() - t
    if done.returncode:
        raise RuntimeError(f"aiaas automl fit: {done.stderr.strip()[-500:]}")
    report = json.loads((out / "report.json").read_text())["report"]
    return {"wall_s": wall, "cv_score": report.get("cv_score"),
            "trials": report.get("trials", {}).get("total")}  # fmt: skip


# ------------------------------------------------------------------------- kill -9 recovery
def _recovery(data_dir: Path, key: str, dataset_id: str, budget: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    first = _start("worker-1", data_dir, ["worker", "--count", "1"])
    second: Proc | None = None
    try:
        with _server(data_dir, 0) as (_, base), _client(base, key) as client:
            job_id, _ = _submit(client, dataset_id, "bench-recovery", budget)
            out["job_id"] = job_id
            follow = Follower(client, job_id).start()
            tag = f":{first.popen.pid}:"
            ours = follow.wait_for(
                lambda f: (
                    f.first("trial") is not None
                    and any(tag in str(e.data.get("worker")) for e in f.of("started"))
                ),
                budget + 60,
            )
            if not ours:
                raise RuntimeError(f"no trial under the first worker:\n{first.tail()}")
            doomed = [first.popen.pid, *_descendants(first.popen.pid)]
            t_kill = time.time()
            os.killpg(first.popen.pid, signal.SIGKILL)
            first.popen.wait(10)
            second = _start("worker-2", data_dir, ["worker", "--count", "1"])
            running_again = None
            while time.time() - t_kill < budget + 120:
                job = _get(client, f"/api/v1/training-jobs/{job_id}")
                if job["status"] == "running" and job["attempts"] >= 2:
                    running_again = time.time() - t_kill
                    break
                if job["status"] in TERMINAL:
                    break
                time.sleep(0.1)
            out["kill_to_running_s"] = running_again
            time.sleep(1.0)
            out["orphans"] = sum(_alive(p) for p in doomed)
            restarted = [e for e in follow.of("started") if e.data.get("attempt") == 2]
            if restarted:
                out["kill_to_started_server_s"] = restarted[0].at - t_kill
            follow.done.wait(budget + 150)
            job = _get(client, f"/api/v1/training-jobs/{job_id}")
            out |= {"status": job["status"], "attempts": job["attempts"]}
            if job.get("error"):
                out["error"] = f"{job['error']['code']}: {job['error']['message']}"
            out["events"] = [e.type for e in follow.events if e.type not in ("trial", "best")]
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()
    if out.get("status") == "succeeded":
        with tempfile.TemporaryDirectory() as tmp:
            _, out["versions"] = _job_model(data_dir, out["job_id"], Path(tmp) / "m")
    return out


# ------------------------------------------------------------------------- queue claims/s
def _claim_loop(url: str, index: int, ready: Any, go: Any, results: Any) -> None:
    """One worker process: claim + finish until the queue is empty."""
    import aiaas.db.models  # noqa: F401  (every table known to the ORM, as in a worker)
    from aiaas.db import get_session_factory
    from aiaas.jobs import queue
    from aiaas.jobs.models import SUCCEEDED

    policy = queue.QueuePolicy(lease_s=60, max_attempts=3, retry_backoff_s=0,
                               max_concurrent_per_org=1000)  # fmt: skip
    factory = get_session_factory(url)
    worker = f"bench-{index}"
    with factory() as session:  # connect before the clock starts
        session.connection()
    ready.set()
    go.wait()
    ids: list[str] = []
    errors: list[str] = []
    while True:
        try:
            claimed = queue.claim(factory, worker, [NOOP], policy)
            if claimed is None:
                break
            with factory() as session, session.begin():
                job = queue.hold(session, claimed.id, worker)
                if job is None:
                    errors.append(f"lost {claimed.id}")
                    continue
                queue.finish(session, job, SUCCEEDED, result=None)
            ids.append(claimed.id)
        except Exception as exc:  # a lock timeout would be a failed claim: count it
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            if len(errors) > 50:
                break
    results.put((index, ids, errors, time.time()))


def _claims(url: str, n: int) -> dict[str, Any]:
    """Enqueue ``n`` no-op jobs, drain them with 4 processes; claims/s and double claims."""
    from sqlalchemy import func, select

    from aiaas.auth import service as auth_service
    from aiaas.db import dispose_all, get_session_factory
    from aiaas.db.migrate import upgrade
    from aiaas.jobs import queue
    from aiaas.jobs.models import Job, JobEvent

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    factory = get_session_factory(url)
    with factory() as session, session.begin():
        org = auth_service.create_org(session, f"bench-{secrets.token_hex(3)}")
        org_id = org.id
        for i in range(n):
            queue.enqueue(session, org_id=org_id, kind=NOOP, spec={"i": i}, max_attempts=3,
                          created_by=None)  # fmt: skip
    dispose_all()  # no connection of this process crosses into the workers
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(CLAIM_WORKERS)]
    procs = [ctx.Process(target=_claim_loop, args=(url, i, readies[i], go, results))
             for i in range(CLAIM_WORKERS)]  # fmt: skip
    for p in procs:
        p.start()
    for r in readies:
        if not r.wait(120):
            raise RuntimeError("a claim worker did not start")
    t0 = time.time()
    go.set()
    rows = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(30)
    elapsed = max(r[3] for r in rows) - t0
    counts = Counter(job_id for r in rows for job_id in r[1])
    errors = [e for r in rows for e in r[2]]
    with get_session_factory(url)() as session:
        done = session.scalar(
            select(func.count()).select_from(Job).where(Job.kind == NOOP, Job.status == "succeeded")
        )
        started = session.scalar(
            select(func.count())
            .select_from(JobEvent)
            .join(Job, Job.id == JobEvent.job_id)
            .where(Job.kind == NOOP, JobEvent.type == "started")
        )
    dispose_all()
    out = {
        "claims": sum(counts.values()),
        "per_s": sum(counts.values()) / elapsed,
        "elapsed_s": elapsed,
        "twice": sum(c - 1 for c in counts.values() if c > 1),
        "distinct": len(counts),
        "succeeded_rows": done,
        "started_events": started,
        "per_worker": sorted(len(r[1]) for r in rows),
        "errors": errors[:3],
        "n_errors": len(errors),
    }
    if out["distinct"] != n or out["twice"] or errors:
        out["error"] = f"{out['distinct']} of {n} jobs claimed, {out['twice']} twice, " + (
            f"{len(errors)} errors: {'; '.join(errors[:2])}"
        )
    return out


@contextlib.contextmanager
def _pg_scratch(url: str) -> Iterator[str]:
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"aiaas_bench_{secrets.token_hex(4)}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        from aiaas.db import dispose_all

        dispose_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ----------------------------------------------------------------------------------- render
def _s(value: Any, unit: str = " s", digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def _ok(cond: bool | None) -> str:
    return "—" if cond is None else ("yes" if cond else "**no**")


def _failed(part: dict[str, Any]) -> str:
    msg = str(part.get("error") or part.get("status") or "not run")
    return "failed: " + " ".join(msg.split())[:300].replace("|", "/")


def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    budget = args.budget
    lines = [
        f"# Training jobs benchmark ({budget:g} s budgets, {args.dataset})",
        "",
        f"Machine: {os.cpu_count()} cores; run at "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; load average at the start "
        f"{r['load']}. Real processes and HTTP, a fresh data dir (SQLite, local artifacts), "
        "default job settings; one part at a time. The job and `aiaas automl fit` train on the "
        "same seed-0 75 % split and are scored on the same 25 %.",
        "",
    ]
    loc = r.get("local", {})
    lines += ["## One job (local executor, `aiaas serve --job-workers 1`)", ""]
    if "first_trial_client_s" not in loc and loc.get("status") != "succeeded":
        lines += [_failed(loc), ""]
    q = r.get("quality", {})

    def post(timings: dict[str, float] | None) -> float | None:
        if not timings:
            return None
        return float(timings.get("ensemble_s", 0.0)) + float(timings.get("refit_s", 0.0))

    engine_post = post(q.get("job_timings"))
    server_reg = loc.get("registered_server_s")
    rest = None if engine_post is None or server_reg is None else server_reg - engine_post
    first = loc.get("first_trial_client_s")
    reg = loc.get("registered_client_s")
    wall = loc.get("wall_client_s")
    lines += [
        "| measure | value | target | met |",
        "|---|---:|---|---|",
        f"| submit → first trial event (SSE client) | {_s(first)} | < 2 s | "
        f"{_ok(None if first is None else first < OVERHEAD_TARGET_S)} |",
        f"| … server clock: submit → claimed | {_s(loc.get('queued_s'))} | | |",
        f"| … server clock: claimed → first trial (process start, data read, its fit of "
        f"{_s(loc.get('first_trial_fit_s'))}) | {_s(loc.get('claim_to_first_trial_s'))} | | |",
        f"| last trial → registered (`succeeded` event, SSE client) | {_s(reg)} | < 2 s | "
        f"{_ok(None if reg is None else reg < OVERHEAD_TARGET_S)} |",
        f"| … server clock | {_s(loc.get('registered_server_s'))} | | |",
        f"| … of which the engine's ensembling + refit on all rows (model report; the CLI's: "
        f"{_s(post(q.get('cli_timings')))}) | {_s(post(q.get('job_timings')))} | | |",
        f"| … the rest: end of search, save, process exit, register, commit | {_s(rest)} | | |",
        f"| whole job, submit → succeeded (SSE client) | {_s(wall)} = "
        f"{_s(wall and wall / budget, ' × budget')} | ≤ 1.05 × budget + a small constant | "
        f"{'—' if wall is None else f'{wall - 1.05 * budget:+.1f} s over 1.05 × budget'} |",
        f"| trials (events / rows) | {loc.get('trials', '—')} / {loc.get('trial_rows', '—')} | | |",
        f"| trials per minute of budget | {_s(loc.get('trials_per_min'), '', 1)} | | |",
        f"| job result: CV {loc.get('metric') or ''} / holdout score | "
        f"{_s(loc.get('cv_score'), '', 4)} / {_s(loc.get('holdout_score'), '', 4)} | | |",
        f"| `GET /models/…/versions/1` | {loc.get('registry_get', '—')} | 200 | "
        f"{_ok(None if 'registry_get' not in loc else loc['registry_get'] == 200)} |",
        "",
    ]
    lines += ["## Quality: the job's model vs `aiaas automl fit` (same split, seed, budget)", ""]
    if "job_test" in q and "cli_test" in q:
        metric, greater = q["metric"], q["metric"] == "roc_auc"
        diff = q["job_test"] - q["cli_test"]
        ok = (
            diff >= -AUC_TOLERANCE
            if greater
            else q["job_test"] <= q["cli_test"] * (1 + LOSS_TOLERANCE)
        )
        tol = f"≥ CLI − {AUC_TOLERANCE}" if greater else f"≤ CLI × {1 + LOSS_TOLERANCE}"
        lines += [
            f"| | job (service) | `aiaas automl fit` | job − CLI | not worse ({tol}) |",
            "|---|---:|---:|---:|---|",
            f"| test {metric} (held-out 25 %) | {q['job_test']:.4f} | {q['cli_test']:.4f} | "
            f"{diff:+.4f} | {_ok(ok)} |",
            f"| CV score | {_s(loc.get('cv_score'), '', 4)} | {_s(q.get('cli_cv'), '', 4)} | | |",
            f"| trials | {loc.get('trials', '—')} | {q.get('cli_trials', '—')} | | |",
            f"| wall time | {_s(wall)} (submit → registered) | {_s(q.get('cli_wall_s'))} "
            "(process start → saved) | | |",
            "",
        ]
    else:
        lines += [_failed(q), ""]
    ray = r.get("ray")
    lines += ["## Executors: trials per minute of budget, one job each", ""]
    lines += [
        "| executor | trials | trials/min | trial workers | status |",
        "|---|---:|---:|---:|---|",
    ]
    for name, part in (("local", loc), ("ray", ray)):
        if part is None:
            lines.append(f"| {name} | — | — | — | skipped (--skip-ray) |")
            continue
        status = part.get("status", "—") if part.get("status") == "succeeded" else _failed(part)
        lines.append(
            f"| {name} | {part.get('trials', '—')} | {_s(part.get('trials_per_min'), '', 1)} | "
            f"{part.get('trial_workers', '—')} | {status} |"
        )
    lines.append("")
    lines += [
        f"## Queue: {args.claims} pre-enqueued no-op jobs, {CLAIM_WORKERS} worker processes "
        "looping `claim` + `finish`",
        "",
        "| database | claims/s | claimed | claimed twice | per worker | errors |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name in ("postgresql", "sqlite"):
        c = r.get(f"claims_{name}")
        if c is None:
            lines.append(f"| {name} | — | — | — | — | skipped (--skip-pg) |")
        elif "per_s" not in c:
            lines.append(f"| {name} | — | — | — | — | {_failed(c)} |")
        else:
            errs = f"{c['n_errors']}" + (f" ({'; '.join(c['errors'])})" if c["errors"] else "")
            lines.append(
                f"| {name} | {c['per_s']:.0f} | {c['claims']} (rows succeeded: "
                f"{c['succeeded_rows']}, started events: {c['started_events']}) | {c['twice']} | "
                f"{', '.join(map(str, c['per_worker']))} | {errs} |"
            )
    lines.append("")
    rec = r.get("recovery", {})
    k = rec.get("kill_to_running_s")
    lines += [
        "## kill -9 of `aiaas worker` while its job trains (default settings)",
        "",
        "| measure | value | target | met |",
        "|---|---:|---|---|",
        f"| kill → job running again (client poll) | {_s(k)} | < 30 s | "
        f"{_ok(None if k is None else k < RECOVERY_TARGET_S)} |",
        f"| … server clock: kill → `started` (attempt 2) | "
        f"{_s(rec.get('kill_to_started_server_s'))} | | |",
        f"| training processes left after the kill | {rec.get('orphans', '—')} | 0 | "
        f"{_ok(None if 'orphans' not in rec else rec['orphans'] == 0)} |",
        f"| job ends | {rec.get('status', '—')}, attempts {rec.get('attempts', '—')} | "
        f"succeeded, attempts 2 | "
        f"{_ok(None if 'status' not in rec else (rec['status'], rec.get('attempts')) == ('succeeded', 2))} |",  # noqa: E501
        f"| registered versions of the job | {rec.get('versions', '—')} | 1 | "
        f"{_ok(None if 'versions' not in rec else rec['versions'] == 1)} |",
        "",
    ]
    if rec.get("error"):
        lines += [_failed(rec), ""]
    if rec.get("events"):
        lines += [f"Events of the recovered job (trials left out): {', '.join(rec['events'])}.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def _part(results: dict[str, Any], name: str, fn: Any, *a: Any) -> None:
    t = time.monotonic()
    print(f"-- {name} …", flush=True)
    try:
        results[name] = fn(*a)
    except Exception as exc:
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"-- {name}: {time.monotonic() - t:.0f} s: {_brief(results[name])}", flush=True)


def _brief(part: Any) -> str:
    if not isinstance(part, dict):
        return str(part)
    skip = {"job", "events"}
    return json.dumps({k: v for k, v in part.items() if k not in skip}, default=str)[:600]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=30.0, help="job time budget (s)")
    parser.add_argument("--dataset", default="magic", help="a PMLB file in shared/ (no .tsv.gz)")
    parser.add_argument("--claims", type=int, default=4000, help="no-op jobs for the queue part")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL server for the queue part")
    parser.add_argument("--skip-ray", action="store_true", help="no Ray executor job")
    parser.add_argument("--skip-pg", action="store_true", help="no PostgreSQL queue part")
    parser.add_argument("--out", default=str(RESULTS / "jobs.md"), help="markdown output file")
    args = parser.parse_args()

    started = time.monotonic()
    results: dict[str, Any] = {"load": " ".join(Path("/proc/loadavg").read_text().split()[:3])}
    tmp = Path(tempfile.mkdtemp(prefix="aiaas-bench-jobs-"))
    keep = False
    try:
        data_dir = tmp / "data"
        data_dir.mkdir()
        _cli(data_dir, "admin", "create-org", "bench")
        key = _cli(data_dir, "admin", "create-api-key", "--org", "bench", "--role", "admin",
                   "--name", "bench")  # fmt: skip
        train, test = _split(args.dataset, tmp)
        dataset_id = ""

        def local() -> dict[str, Any]:
            nonlocal dataset_id
            with _server(data_dir, 1) as (_, base), _client(base, key) as client:
                dataset_id = _upload(client, train, args.dataset)
                return _run_job(client, dataset_id, "bench-local", args.budget)

        _part(results, "local", local)

        def quality() -> dict[str, Any]:
            q: dict[str, Any] = {}
            cli = _cli_fit(data_dir, train, args.budget, tmp / "cli-model")
            q |= {"cli_wall_s": cli["wall_s"], "cli_cv": cli["cv_score"],
                  "cli_trials": cli["trials"]}  # fmt: skip
            import aiaas.automl as automl

            cli_model = automl.load(tmp / "cli-model")
            q["metric"], q["cli_test"] = _score(cli_model, test)
            q["cli_timings"] = cli_model.report().get("timings", {})
            job_id = results["local"].get("job_id")
            if results["local"].get("status") != "succeeded" or not job_id:
                q["error"] = "the job did not succeed: " + _failed(results["local"])
                return q
            model, _ = _job_model(data_dir, job_id, tmp / "job-model")
            _, q["job_test"] = _score(model, test)
            q["job_timings"] = model.report().get("timings", {})
            return q

        _part(results, "quality", quality)

        if not args.skip_ray:

            def ray() -> dict[str, Any]:
                with _server(data_dir, 1, AIAAS_EXECUTOR="ray") as (_, base):
                    with _client(base, key) as client:
                        return _run_job(client, dataset_id, "bench-ray", args.budget)

            _part(results, "ray", ray)
        else:
            results["ray"] = None

        _part(results, "recovery", _recovery, data_dir, key, dataset_id, args.budget)

        if not args.skip_pg:

            def pg() -> dict[str, Any]:
                with _pg_scratch(args.pg_url) as url:
                    return _claims(url, args.claims)

            _part(results, "claims_postgresql", pg)
        sqlite_url = f"sqlite:///{tmp / 'queue' / 'aiaas.db'}"
        _part(results, "claims_sqlite", _claims, sqlite_url, args.claims)
    except BaseException:
        keep = True
        print(f"kept {tmp} for inspection", flush=True)
        raise
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)

    table = render(results, args)
    table += f"\nWhole benchmark: {time.monotonic() - started:.0f} s.\n"
    print()
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table, encoding="utf-8")
    print(f"written to {out}")
    broken = [n for n, p in results.items() if isinstance(p, dict) and "error" in p
              and n not in ("ray",)]  # fmt: skip
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
