"""Serving fixtures: tiny AutoML models of every task, a deploy helper, the models' own answers.

Every model takes the same columns — ``a``, ``b`` (floats) and ``colour`` (a category:
red, green, blue) — so one row generator feeds them all: the registry's binary classifier
(``saved_model``, classes 0 and 1; redefined here with a budget that survives a busy
machine), a second one that answers differently (``other_binary_model``), a multiclass
classifier (classes ``"high"``, ``"low"``, ``"mid"``) and a regressor, each fitted once per
session in about a second (linear family, no ensemble, one trial on a holdout). ``datetime_model``
adds a date column (``when``).

``deploy(tenant, model_dir, model=…, endpoint=…, **body)`` registers ``model_dir`` as the
next version of ``model`` (no training job) and deploys it over the API (``deployer(http,
register)``: the same through another HTTP client, e.g. a real server's);
``reference(model_dir, rows)`` is what :mod:`aiaas.automl` itself predicts for ``rows``;
``serve(settings)`` runs the app under uvicorn in a thread (real HTTP, for the concurrent
tests and for what only a real HTTP server checks); ``logged(app, org_id)`` reads the
prediction log back from the store.
"""

from __future__ import annotations

import functools
import io
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import uvicorn
from fastapi.testclient import TestClient

from aiaas.api.app import create_app
from aiaas.api.state import app_state
from aiaas.registry.models import ModelVersion
from aiaas.settings import Settings
from tests.conftest import Tenant
from tests.registry.conftest import Register, register, store  # noqa: F401

API = "/api/v1/endpoints"
COLOURS = ("red", "green", "blue")
COLUMNS = ("a", "b", "colour")
MULTICLASS = ["high", "low", "mid"]
#: How close a served answer must be to the model's own (ONNX float32 vs native float64).
TOLERANCE = 1e-5

Deploy = Callable[..., dict[str, Any]]


def training_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "colour": rng.choice(COLOURS, n)}
    )


def _fit(df: pd.DataFrame, target: str, path: Path) -> Path:
    from aiaas import automl

    # one trial on a holdout ends the search (well under a second); the budget only guards
    # a loaded machine, where a 3 s budget can end before the first trial does (SearchFailed)
    model = automl.fit(
        df,
        target,
        time_budget=30,
        families=["linear"],
        ensemble=False,
        max_trials=1,
        cv=0.25,
        seed=0,
    )
    return model.save(path)


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The registry's binary classifier (same data, classes 0 and 1), with the budget that
    survives a busy machine (the registry's 3 s budget can fail there before one trial)."""
    rng = np.random.default_rng(0)
    n = 160
    df = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "colour": rng.choice(COLOURS, n)}
    )
    df["y"] = (df["a"] + (df["colour"] == "red") + rng.normal(scale=0.5, size=n) > 0.5).astype(int)
    return _fit(df, "y", tmp_path_factory.mktemp("saved-binary") / "model")


@pytest.fixture(scope="session")
def multiclass_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved three-class classifier with string labels (high, low, mid)."""
    df = training_frame(180, seed=1)
    score = df["a"] + df["b"] + (df["colour"] == "red")
    df["y"] = np.where(score > 0.8, "high", np.where(score < -0.5, "low", "mid"))
    return _fit(df, "y", tmp_path_factory.mktemp("saved-multiclass") / "model")


@pytest.fixture(scope="session")
def regression_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved regressor of a, b and colour."""
    df = training_frame(160, seed=2)
    noise = np.random.default_rng(3).normal(scale=0.1, size=len(df))
    df["y"] = 2 * df["a"] - df["b"] + 1.5 * (df["colour"] == "red") + noise
    return _fit(df, "y", tmp_path_factory.mktemp("saved-regression") / "model")


@pytest.fixture(scope="session")
def other_binary_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second binary classifier of a, b and colour (classes 0 and 1, so it can share an
    endpoint with ``saved_model``) whose probabilities differ: its answers tell who served."""
    df = training_frame(160, seed=5)
    df["y"] = (df["b"] - df["a"] + 0.5 * (df["colour"] == "blue") > 0).astype(int)
    return _fit(df, "y", tmp_path_factory.mktemp("saved-binary-other") / "model")


@pytest.fixture(scope="session")
def datetime_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved binary classifier of ``a`` and a date column ``when`` (ISO-8601 text)."""
    rng = np.random.default_rng(4)
    n = 160
    days = rng.integers(0, 700, n)
    when = pd.Timestamp("2023-01-01") + pd.to_timedelta(days, unit="D")
    df = pd.DataFrame({"a": rng.normal(size=n), "when": when.strftime("%Y-%m-%d")})
    df["y"] = ((days > 350) ^ (df["a"] > 1.0)).astype(int)
    return _fit(df, "y", tmp_path_factory.mktemp("saved-datetime") / "model")


@pytest.fixture
def models(saved_model: Path, multiclass_model: Path, regression_model: Path) -> dict[str, Path]:
    """Task → saved model directory."""
    return {"binary": saved_model, "multiclass": multiclass_model, "regression": regression_model}


@functools.cache
def _loaded(model_dir: Path) -> Any:
    from aiaas import automl

    return automl.load(model_dir)


def reference(model_dir: Path, rows: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    """The model's own answer: ``predict_proba`` (classification) or ``predict`` values."""
    model = _loaded(model_dir)
    frame = pd.DataFrame(rows)
    if model.task == "regression":
        return np.asarray(model.predict(frame), dtype=np.float64)
    return np.asarray(model.predict_proba(frame), dtype=np.float64)


def classes(model_dir: Path) -> list[Any]:
    return list(_loaded(model_dir).classes_)


def rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` request rows of a, b, colour (plain Python values, as JSON gives them)."""
    frame = training_frame(n, seed)
    return [
        {"a": float(r.a), "b": float(r.b), "colour": str(r.colour)}
        for r in frame.itertuples(index=False)
    ]


def deployer(http: Any, register: Register) -> Deploy:  # noqa: F811
    """:func:`deploy` through ``http``: a TestClient, or an ``httpx.Client`` with a base URL."""

    def make(
        tenant: Tenant,
        model_dir: Path,
        *,
        model: str = "m",
        endpoint: str = "ep",
        versions: int = 1,
        **body: Any,
    ) -> dict[str, Any]:
        last: ModelVersion | None = None
        for _ in range(versions):
            last = register(tenant, model, model_dir=model_dir)
        assert last is not None
        spec = body or {"version": last.number}
        response = http.post(
            API,
            json={"name": endpoint, "model": model, **spec},
            headers=tenant.headers("developer"),
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    return make


@pytest.fixture
def deploy(client: TestClient, register: Register) -> Deploy:  # noqa: F811
    """``deploy(tenant, model_dir, model="m", endpoint="ep", versions=1, **body)``: register
    ``model_dir`` as the next ``versions`` version(s) of ``model`` (no training job), then
    create ``endpoint`` with ``body`` (default ``{"version": <the last one>}``) through the
    test client; returns the endpoint's JSON."""
    return deployer(client, register)


@pytest.fixture(params=[True, False], ids=["gateway", "fastapi-routes"])
def any_client(request: pytest.FixtureRequest, settings: Settings) -> Iterator[TestClient]:
    """A test client of the app with the serving gateway on (the default: it answers
    ``/predict`` and ``/invocations`` before FastAPI routes them) and off (the FastAPI
    routes of :mod:`aiaas.serving.router` answer): both must keep one contract."""
    serving = settings.serving.model_copy(update={"fast_path": request.param})
    app = create_app(settings.model_copy(update={"serving": serving}))
    with TestClient(app) as found:
        yield found


# --------------------------------------------------------------------------- a real server


@dataclass
class Live:
    """The app served by uvicorn on a free local port: its base URL and app."""

    base: str
    app: Any

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(settings: Settings) -> Iterator[Live]:
    """``create_app(settings)`` under uvicorn (httptools, as ``aiaas serve`` runs it) in a
    thread, until the block ends."""
    app = create_app(settings)
    port = _free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", http="httptools"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-serving-tests", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn exited"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def live(settings: Settings) -> Iterator[Live]:
    """The app (default settings) served over real HTTP."""
    with serve(settings) as found:
        yield found


# --------------------------------------------------------------------------- the log


def logged(app: Any, org_id: str) -> pd.DataFrame:
    """Every prediction-log row of ``org_id`` written so far (flushes the log first)."""
    state = app_state(app)
    state.serving.predictions.flush()
    frames = [
        pq.read_table(io.BytesIO(state.store.get_bytes(org_id, key))).to_pandas()
        for key in state.store.list(org_id, "predictions")
        if key.endswith(".parquet")
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """INFO records off (the access log and the HTTP client's line per request): a test that
    sends hundreds of requests spends more on formatting them than on the requests."""
    names = ("", "aiaas", "httpx", "httpx2")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll ``check`` until it holds (returns the seconds it took) or fail after ``seconds``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - started
