"""``aiaas serve --demo``: a demo organization, dataset, trained model and endpoint, made on
the first start and reused by every later one (idempotent by name), then a ready ``curl``.

Everything goes through the domains' services, as a system principal of the demo
organization, each step in its own short transaction; the server is called only to wait
until it listens. The steps:

1. the organization ``demo``;
2. the dataset ``breast_cancer``: scikit-learn's copy of the Wisconsin breast cancer data
   (shipped with it: no download), columns in snake_case, the target ``diagnosis``
   (``malignant`` / ``benign``), stored as version 1;
3. the model ``demo-classifier`` version 1: trained by a real training job (queued as
   ``POST /training-jobs`` queues it) that a job worker runs — a queued or running job of an
   interrupted start is waited for, a failed or cancelled one is submitted again;
4. the endpoint ``demo`` serving that version;
5. the organization-owned API key ``demo`` (developer), made once: its secret is printed in
   the ``curl`` line of the start that made it, and never again.
"""

from __future__ import annotations

import json
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import structlog
import typer
from sqlalchemy.orm import Session, sessionmaker

from aiaas.auth import service as auth_service
from aiaas.auth.models import Organization
from aiaas.auth.permissions import Role
from aiaas.auth.principal import Principal
from aiaas.data import service as data_service
from aiaas.data.context import DataContext
from aiaas.data.models import Dataset
from aiaas.data.scratch import work_dir
from aiaas.data.versions import VersionInfo, local_parquet, store_version
from aiaas.db import get_session_factory
from aiaas.db.pagination import PageParams
from aiaas.errors import AiaasError, NotFound
from aiaas.jobs import service as jobs_service
from aiaas.jobs.context import JobsContext
from aiaas.jobs.models import QUEUED, RUNNING, SUCCEEDED, TERMINAL
from aiaas.jobs.schemas import TrainingJobCreate
from aiaas.registry import service as registry_service
from aiaas.serving import service as serving_service
from aiaas.serving.schemas import EndpointCreate
from aiaas.settings import Settings
from aiaas.storage import get_store

log = structlog.get_logger()

ORG = "demo"
DATASET = "breast_cancer"
TARGET = "diagnosis"
MODEL = "demo-classifier"
ENDPOINT = "demo"
KEY_NAME = "demo"
KEY_ROLE = Role.developer
ACTOR = "system:demo"  # created_by of what the demo makes
TIME_BUDGET_S = 20.0  # the whole job, start-up included (clamped to min/max_time_budget_s)
WAIT_TIMEOUT_S = 900.0  # for the training job (a queue of other jobs may come first)
SERVER_WAIT_S = 600.0  # then the demo goes on anyway (the curl line may wait)
ATTEMPTS = 3  # training jobs one start waits for at most (a failed one is submitted again)
SLOW_START_FACTOR = 3  # a job whose process started too slowly: the next gets 3x the time
POLL_S = 0.5
PAGE = 100
DEFAULT_DATA_DIR = Path("./aiaas-data")
Echo = Callable[[str], None]


class DemoError(Exception):
    """The demo could not be set up (the message says why and what to do)."""


@dataclass(frozen=True)
class Env:
    """What every step needs: the settings, a session factory, the domains' contexts."""

    settings: Settings
    factory: sessionmaker[Session]
    data: DataContext
    jobs: JobsContext
    echo: Echo

    @classmethod
    def build(cls, settings: Settings, echo: Echo | None = None) -> Env:
        store = get_store(settings.resolved_artifacts_url)
        return cls(
            settings,
            get_session_factory(settings.resolved_database_url),
            DataContext.build(settings, store, settings.secret_key()),
            JobsContext.build(settings, store),
            echo or typer.echo,
        )

    def pages(self, cursor: str | None = None) -> PageParams:
        return PageParams(PAGE, cursor, self.data.secret_key)


@dataclass(frozen=True)
class Demo:
    """What a bootstrap made or found: the key is set only by the start that made it."""

    org_id: str
    dataset_id: str
    model_version: int
    key: str | None
    curl: str


# --------------------------------------------------------------------------- in `serve`


def start(settings: Settings, base_url: str, *, job_workers: int) -> threading.Thread:
    """Set the demo up in a daemon thread (the server starts meanwhile); errors are printed.

    The context is built here, before the thread: a first start makes the secret key file
    now, not at the same moment as the app does (``Settings.secret_key`` is not thread-safe
    within one process)."""
    thread = threading.Thread(
        target=_run_reporting,
        args=(Env.build(settings), base_url, job_workers),
        name="demo-bootstrap",
        daemon=True,
    )
    thread.start()
    return thread


def _run_reporting(env: Env, base_url: str, job_workers: int) -> None:
    echo = env.echo
    echo(f"demo: the model behind endpoint '{ENDPOINT}' is set up once the server is up")
    if job_workers == 0:
        echo("demo: this server runs no job worker (--job-workers 0): the demo's training job")
        echo("      waits for one (`aiaas worker` on the same database and artifact store)")
    try:
        bootstrap(env, base_url, wait_for_server=True)
    except (AiaasError, DemoError) as exc:
        detail = exc.detail if isinstance(exc, AiaasError) else str(exc)
        echo(f"demo: not ready: {detail}")
    except Exception:
        log.exception("demo_bootstrap_failed")
        echo("demo: not ready: an unexpected error (logged above); restart to try again")


# --------------------------------------------------------------------------- the steps


def bootstrap(
    env: Env,
    base_url: str,
    *,
    time_budget_s: float = TIME_BUDGET_S,
    timeout_s: float = WAIT_TIMEOUT_S,
    wait_for_server: bool = False,
) -> Demo:
    """Make (or find) the demo's organization, dataset, model, endpoint and key; print the
    progress and, last, a ``curl`` line that gets a prediction."""
    if wait_for_server:  # first: the server's start-up is not slowed down, and the job
        _wait_listening(base_url)  # worker's warm training process is ready meanwhile
    principal = ensure_org(env)
    dataset_id = ensure_dataset(env, principal)
    version = ensure_model(env, principal, dataset_id, time_budget_s, timeout_s)
    ensure_endpoint(env, principal, version)
    key = ensure_key(env, principal)
    curl = curl_line(base_url, key, example_row(env, principal, dataset_id))
    _print_ready(env, curl, key)
    return Demo(principal.org_id, dataset_id, version, key, curl)


def _principal(org: Organization) -> Principal:
    return Principal(
        org_id=org.id, org_slug=org.slug, role=Role.owner, actor_type="system", actor_id=ACTOR
    )


def ensure_org(env: Env) -> Principal:
    """The demo organization (created if missing), as the principal the steps act as."""
    with env.factory() as session, session.begin():
        try:
            org = auth_service.get_org_by_slug(session, ORG)
        except NotFound:
            org = auth_service.create_org(session, ORG, "Demo organization")
            env.echo(f"demo: created organization '{ORG}'")
        return _principal(org)


def load_frame() -> Any:
    """scikit-learn's breast cancer data (569 rows, 30 numeric features) as a DataFrame:
    snake_case columns and the target ``diagnosis`` as ``malignant`` / ``benign``."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.rename(columns=lambda c: "_".join(str(c).split()))
    frame[TARGET] = [str(bunch.target_names[t]) for t in bunch.target]
    return frame


def example_row(env: Env, principal: Principal, dataset_id: str) -> dict[str, Any]:
    """The first row of the stored dataset (version 1) without its target: the ``curl``
    body (read back from the store: a later start needs no scikit-learn)."""
    with env.factory() as session:
        version = data_service.get_version(session, principal, dataset_id, 1)
        path = local_parquet(env.data.store, env.settings, version)
    table = pq.read_table(path).slice(0, 1)
    features = table.select([name for name in table.column_names if name != TARGET])
    row: dict[str, Any] = features.to_pylist()[0]
    return row


def _find_dataset(env: Env, session: Session, principal: Principal) -> Dataset | None:
    params = env.pages()
    while True:
        page = data_service.list_datasets(session, principal, params)
        for dataset in page.items:
            if dataset.name.lower() == DATASET.lower():
                return dataset
        if page.next_cursor is None:
            return None
        params = env.pages(page.next_cursor)


def ensure_dataset(env: Env, principal: Principal) -> str:
    """The demo dataset's id; created with :func:`load_frame` as version 1 if missing."""
    with env.factory() as session, session.begin():
        found = _find_dataset(env, session, principal)
        if found is not None:
            env.echo(f"demo: dataset '{DATASET}' is stored")
            return found.id
        frame = load_frame()
        with work_dir(env.settings) as work:
            parquet = work / "data.parquet"
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), parquet)
            dataset = data_service.new_dataset(
                session, principal, DATASET, "scikit-learn's breast cancer data (aiaas demo)"
            )
            source = {"kind": "demo", "origin": "sklearn.datasets.load_breast_cancer"}
            store_version(session, principal, env.data, dataset, parquet, VersionInfo(source))
        rows, columns = frame.shape
        env.echo(f"demo: stored dataset '{DATASET}' ({rows} rows, {columns} columns)")
        return dataset.id


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class JobState:
    """A job as read at one moment (no ORM object leaves its session)."""

    id: str
    status: str
    result: dict[str, Any] | None
    error: str | None
    code: str | None = None


def _has_version_1(env: Env, principal: Principal) -> bool:
    with env.factory() as session:
        try:
            registry_service.get_version(session, principal, MODEL, 1)
        except NotFound:
            return False
        return True


def ensure_model(
    env: Env, principal: Principal, dataset_id: str, time_budget_s: float, timeout_s: float
) -> int:
    """The number of the demo model's version to serve: 1 when it exists, else the version
    a training job registers. A failed job is submitted again (``ATTEMPTS`` in all), with
    ``SLOW_START_FACTOR`` times the budget when it ran out before training could start."""
    if _has_version_1(env, principal):
        env.echo(f"demo: model '{MODEL}' version 1 is trained")
        return 1
    budget = _clamped_budget(env.settings, time_budget_s)
    for _ in range(ATTEMPTS):
        job_id, submitted, job_budget = training_job(env, principal, dataset_id, budget)
        whose = "" if submitted else ", started by an earlier start"
        env.echo(
            f"demo: training '{MODEL}' on '{DATASET}' (job {job_id}{whose}; "
            f"about {job_budget:g} s) …"
        )
        job = wait_for_job(env, principal, job_id, timeout_s)
        if job.status == SUCCEEDED and job.result is not None:
            _print_trained(env, job)
            return int(job.result["model_version"])
        env.echo(f"demo: training job {job.id} {job.status}: {job.error or 'no detail'}")
        if job.code == "time_budget":  # its process started too slowly (a busy machine)
            budget = _clamped_budget(env.settings, max(budget, job_budget) * SLOW_START_FACTOR)
    raise DemoError(
        f"training '{MODEL}' failed {ATTEMPTS} times; the job's events say why: "
        f"GET /api/v1/training-jobs/{job_id}/events. Restart to try again."
    )


def _clamped_budget(settings: Settings, budget_s: float) -> float:
    jobs = settings.jobs
    return max(jobs.min_time_budget_s, min(budget_s, jobs.max_time_budget_s))


def training_job(
    env: Env, principal: Principal, dataset_id: str, budget_s: float
) -> tuple[str, bool, float]:
    """The demo model's queued or running job (an interrupted start's), or a new one: its
    id, whether it is new, and its time budget.

    The new one's ``Idempotency-Key`` names the job it follows, so two starts that saw the
    same state submit one job."""
    with env.factory() as session, session.begin():
        page = jobs_service.list_jobs(session, principal, env.pages(), model_name=MODEL)
        latest = page.items[0] if page.items else None
        if latest is not None and latest.status in (QUEUED, RUNNING):
            return latest.id, False, float(latest.spec["time_budget_s"])
        body = TrainingJobCreate(
            dataset_id=dataset_id,
            dataset_version=1,
            target=TARGET,
            time_budget_s=budget_s,
            model_name=MODEL,
        )
        key = f"demo-after-{latest.id if latest else 'none'}"
        job = jobs_service.submit_training(session, principal, env.jobs, body, idempotency_key=key)
        return job.id, True, budget_s


def read_job(env: Env, principal: Principal, job_id: str) -> JobState:
    with env.factory() as session:
        job = jobs_service.get_job(session, principal, job_id)
        error = job.error_message or job.error_code
        return JobState(job.id, job.status, job.result, error, job.error_code)


def wait_for_job(env: Env, principal: Principal, job_id: str, timeout_s: float) -> JobState:
    """The job once it has ended (``DemoError`` after ``timeout_s``)."""
    end = time.monotonic() + timeout_s
    while (job := read_job(env, principal, job_id)).status not in TERMINAL:
        if time.monotonic() > end:
            raise DemoError(
                f"training job {job_id} is still {job.status} after {timeout_s:g} s; "
                "restart to keep waiting for it"
            )
        time.sleep(POLL_S)
    return job


def _print_trained(env: Env, job: JobState) -> None:
    result = job.result or {}
    metric, cv, holdout = result.get("metric"), result.get("cv_score"), result.get("holdout_score")
    scores = f"{metric} {cv:.3f} cross-validated" if isinstance(cv, float) else str(metric)
    if isinstance(holdout, float):
        scores += f", {holdout:.3f} on the holdout"
    trials = result.get("trials")
    count = trials.get("complete") if isinstance(trials, dict) else trials
    elapsed = result.get("elapsed_s")
    took = f" in {elapsed:.0f} s" if isinstance(elapsed, int | float) else ""
    env.echo(
        f"demo: trained '{MODEL}' version {result.get('model_version')}: {scores} "
        f"({count} trial{'' if count == 1 else 's'}{took})"
    )


# --------------------------------------------------------------------------- serving, key


def ensure_endpoint(env: Env, principal: Principal, version: int) -> None:
    """The endpoint ``demo`` (deployed with ``version`` if missing; kept as it is if not)."""
    with env.factory() as session, session.begin():
        try:
            serving_service.get_endpoint(session, principal, ENDPOINT)
            made = ""
        except NotFound:
            body = EndpointCreate(name=ENDPOINT, model=MODEL, version=version)
            limit = env.settings.serving.max_endpoints_per_org
            serving_service.create_endpoint(session, principal, body, max_per_org=limit)
            made = f" (model '{MODEL}' version {version})"
    env.echo(f"demo: endpoint '{ENDPOINT}' ready{made}")


def ensure_key(env: Env, principal: Principal) -> str | None:
    """A new API key ``demo`` — None when the organization has one already (kept, revoked
    or expired alike: a key is made once)."""
    with env.factory() as session, session.begin():
        params = env.pages()
        while True:
            page = auth_service.list_api_keys(session, principal, params)
            if any(row.name == KEY_NAME for row in page.items):
                return None
            if page.next_cursor is None:
                break
            params = env.pages(page.next_cursor)
        org = session.get(Organization, principal.org_id)
        assert org is not None
        _, key = auth_service.issue_api_key(session, org, role=KEY_ROLE, name=KEY_NAME)
    return key


# --------------------------------------------------------------------------- the curl line


def curl_line(base_url: str, key: str | None, row: dict[str, Any]) -> str:
    """A shell command that predicts ``row`` (with ``$AIAAS_API_KEY`` without a key)."""
    body = json.dumps({"instances": [row]}, separators=(",", ":"))
    bearer = key if key else "$AIAAS_API_KEY"  # double-quoted below: the variable expands
    return (
        f'curl -s -H "Authorization: Bearer {bearer}" '
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)} "
        f"{base_url.rstrip('/')}/api/v1/endpoints/{ENDPOINT}/predict"
    )


def _admin_command(settings: Settings) -> str:
    """How to make a new demo key from this shell (the program as it was started)."""
    program = sys.argv[0] if Path(sys.argv[0]).name == "aiaas" else "aiaas"
    command = f"{program} admin create-api-key --org {ORG} --role {KEY_ROLE.value} --name demo-2"
    if settings.data_dir != DEFAULT_DATA_DIR.resolve():
        command += f" --data-dir {shlex.quote(str(settings.data_dir))}"
    return command


def _print_ready(env: Env, curl: str, key: str | None) -> None:
    if key is not None:
        env.echo(
            f"demo: created the API key '{KEY_NAME}' ({KEY_ROLE.value}) of organization "
            f"'{ORG}': it is in the line below and shown this once — store it"
        )
    else:
        env.echo(
            "demo: $AIAAS_API_KEY is the demo key printed by the first start; to make a new "
            f"one: export AIAAS_API_KEY=$({_admin_command(env.settings)})"
        )
    env.echo(f"demo: ready — a prediction from endpoint '{ENDPOINT}':\n  {curl}")


def _wait_listening(base_url: str, timeout_s: float = SERVER_WAIT_S) -> None:
    """Until the server accepts connections (the ``curl`` line works when printed)."""
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, parts.port or 80), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
