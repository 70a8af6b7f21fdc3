"""One prediction, start to end, shared by the gateway (fast path) and the FastAPI routes.

``endpoint (cached view) → a version drawn by traffic weight → the loaded predictor →
decode + validate + convert → predict → answer bytes``; then, off the request path: the
prediction log, the shadow (queued to its own thread), metrics and usage counters in
memory. Small requests are predicted on the event loop (a thread hop would cost more than
the model); large ones in a worker thread.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import os
import queue
import random
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
import structlog
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy.orm import Session, sessionmaker

from aiaas.auth.principal import Principal
from aiaas.errors import AiaasError, InvalidInput, NotFound, ServiceUnavailable
from aiaas.serving import payload
from aiaas.serving.cache import EndpointCache, ModelCache
from aiaas.serving.predictor import MatrixColumns, ModelLoadError, Predictor, Table, Values
from aiaas.serving.predlog import LoggedBatch, PredictionLog
from aiaas.serving.views import EndpointView, VersionView
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore

log = structlog.get_logger("aiaas.serving")

#: Rows predicted on the event loop; larger requests go to a worker thread.
INLINE_ROWS = 512
#: The nice value of the serving's background threads (the shadow, the log writer).
BACKGROUND_NICE = 19
_SHADOW_QUEUE = 10_000
_SHADOW_BATCH_ROWS = 1024


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0)


class _Stats:
    """One endpoint × version × role's counts, updated in place (no lock: the event loop
    is the only writer of primary stats, the shadow thread of shadow stats)."""

    __slots__ = ("buckets", "labels", "requests", "rows", "seconds")

    def __init__(self, labels: tuple[str, str, str, str]) -> None:
        self.labels = labels  # org, endpoint, version, role
        self.requests = 0
        self.rows = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)


class ServingMetrics:
    """Per organization, endpoint, version and role (primary, shadow): requests, rows,
    latency, refusals — counted in plain memory on the request path and turned into
    Prometheus metrics only when ``/metrics`` is scraped (a collector), so a prediction
    pays a few integer additions, not a lock per metric."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._stats: dict[tuple[str, int, str], _Stats] = {}
        #: ``(org_id, endpoint name, status) → count`` of refused prediction requests.
        self.refusals: dict[tuple[str, str, int], int] = {}
        registry.register(self)

    def record(
        self, view: EndpointView, version: int, rows: int, seconds: float, role: str = "primary"
    ) -> None:
        key = (view.id, version, role)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = _Stats((view.org_id, view.name, str(version), role))
        stats.requests += 1
        stats.rows += rows
        stats.seconds += seconds
        stats.buckets[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1

    def refused(self, view: EndpointView | None, status: int) -> None:
        if view is None:
            return
        key = (view.org_id, view.name, status)
        self.refusals[key] = self.refusals.get(key, 0) + 1

    def usage(self) -> dict[tuple[str, str], tuple[int, int]]:
        """``(org_id, endpoint name) → (requests, rows)`` of primary traffic so far."""
        found: dict[tuple[str, str], tuple[int, int]] = {}
        for stats in list(self._stats.values()):
            org, name, _version, role = stats.labels
            if role == "primary":
                requests, rows = found.get((org, name), (0, 0))
                found[(org, name)] = (requests + stats.requests, rows + stats.rows)
        return found

    def collect(self) -> Iterator[Metric]:
        labels = ["org", "endpoint", "version", "role"]
        requests = CounterMetricFamily(
            "aiaas_predictions_requests",
            "Prediction requests answered, by organization, endpoint, version and role.",
            labels=labels,
        )
        rows = CounterMetricFamily("aiaas_predictions_rows", "Rows predicted.", labels=labels)
        latency = HistogramMetricFamily(
            "aiaas_prediction_duration_seconds",
            "Time from the body's arrival to the answer (primary) or of the shadow's call.",
            labels=labels,
        )
        for stats in list(self._stats.values()):
            label_values = list(stats.labels)
            requests.add_metric(label_values, stats.requests)
            rows.add_metric(label_values, stats.rows)
            cumulative, buckets = 0, []
            for bound, count in zip((*_LATENCY_BUCKETS, math.inf), stats.buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
            latency.add_metric(label_values, buckets, stats.seconds)
        refused = CounterMetricFamily(
            "aiaas_predictions_refused",
            "Prediction requests refused (4xx/5xx), by organization, endpoint and status.",
            labels=["org", "endpoint", "status"],
        )
        for (org, name, status), count in list(self.refusals.items()):
            refused.add_metric([org, name, str(status)], count)
        yield from (requests, rows, latency, refused)


class ShadowRunner:
    """Predicts shadow copies in its own thread, batched, and logs them (never answered)."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self._queue: queue.Queue[tuple[EndpointView, VersionView, Table, list[str], str]] = (
            queue.Queue(_SHADOW_QUEUE)
        )
        self.dropped = 0
        self.done = 0
        self._thread: threading.Thread | None = None

    def submit(self, view: EndpointView, table: Table, ids: list[str], request_id: str) -> None:
        assert view.shadow is not None
        try:
            self._queue.put_nowait((view, view.shadow, table, ids, request_id))
        except queue.Full:
            self.dropped += len(ids)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        background_priority()
        while True:
            first = self._queue.get()
            time.sleep(0.002)  # let concurrent copies gather: one call predicts them all
            items = [first]
            rows = first[2].n
            while rows < _SHADOW_BATCH_ROWS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                items.append(item)
                rows += item[2].n
            groups: dict[tuple[str, str], list[Any]] = {}
            for item in items:
                groups.setdefault((item[0].id, item[1].id), []).append(item)
            for group in groups.values():
                try:
                    self._predict(group)
                except Exception as exc:  # a shadow's failure is logged, never answered
                    log.warning("shadow_failed", error=str(exc)[:300])

    def _predict(
        self, group: list[tuple[EndpointView, VersionView, Table, list[str], str]]
    ) -> None:
        view, version = group[0][0], group[0][1]
        predictor = self.serving.models.load(version)
        table = merge_tables([g[2] for g in group], predictor.required)
        out = predictor.predict(table, strict_categories=False)
        offset = 0
        now = time.time()
        for _v, _s, part, ids, request_id in group:
            chunk = out[offset : offset + part.n]
            offset += part.n
            self.serving.predictions.append(
                LoggedBatch(view, predictor, "shadow", ids, part, chunk, now, request_id)
            )
        self.serving.metrics.record(view, version.number, table.n, 0.0, role="shadow")
        self.done += table.n


def background_priority() -> None:
    """Make the calling thread yield the CPU to the request threads (Linux: a thread is a
    task with its own nice value; elsewhere a no-op). Its work (the shadow's predictions,
    the log's conversion) then runs in the time requests leave over: under a load that
    takes the whole core it falls behind, and past its queue its rows are dropped and
    counted — never the caller's time."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed
        pass


def merge_tables(tables: list[Table], columns: tuple[str, ...]) -> Table:
    """The rows of ``tables`` as one table of ``columns`` (one matrix when each was one)."""
    if len(tables) == 1:
        return tables[0]
    if all(t.matrix is not None and t.matrix_of == columns for t in tables):
        matrix = np.concatenate([t.matrix for t in tables])
        return Table(len(matrix), MatrixColumns(matrix, columns), matrix, columns)
    merged: dict[str, Values] = {}
    for name in columns:
        values: list[Any] = []
        for t in tables:
            col = t.columns.get(name)
            if col is None:
                raise InvalidInput(f"column {name!r} is missing")
            values.extend(col.tolist() if hasattr(col, "tolist") else col)
        merged[name] = values
    return Table(sum(t.n for t in tables), merged)


class Batcher:
    """Adaptive micro-batching of one predictor: the first request waits up to ``wait_s``
    for others (stopping early at ``max_rows``); one call predicts them all."""

    def __init__(self, predictor: Predictor, *, max_rows: int, wait_s: float) -> None:
        self.predictor = predictor
        self.max_rows = max_rows
        self.wait_s = wait_s
        self._pending: list[tuple[Table, bool, asyncio.Future[NDArray[Any]]]] = []
        self._rows = 0
        self._full: asyncio.Event | None = None

    async def predict(self, table: Table, strict: bool) -> NDArray[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[NDArray[Any]] = loop.create_future()
        self._pending.append((table, strict, future))
        self._rows += table.n
        if len(self._pending) == 1:
            self._full = asyncio.Event()
            loop.create_task(self._lead())
        elif self._rows >= self.max_rows and self._full is not None:
            self._full.set()
        return await future

    async def _lead(self) -> None:
        assert self._full is not None
        if self.wait_s > 0:
            try:
                await asyncio.wait_for(self._full.wait(), self.wait_s)
            except TimeoutError:
                pass
        else:  # no waiting: only the requests already read in this turn of the event loop
            await asyncio.sleep(0)
        batch, self._pending, self._rows = self._pending, [], 0
        if len(batch) == 1:
            table, strict, future = batch[0]
            _settle(future, lambda: self.predictor.predict(table, strict_categories=strict))
            return
        try:
            merged = merge_tables([b[0] for b in batch], self.predictor.required)
            out = self.predictor.predict(merged, strict_categories=any(b[1] for b in batch))
        except Exception:  # one bad request must not fail the others: each on its own
            for table, strict, future in batch:
                _settle(
                    future,
                    lambda t=table, s=strict: self.predictor.predict(t, strict_categories=s),
                )
            return
        offset = 0
        for table, _strict, future in batch:
            if not future.done():
                future.set_result(out[offset : offset + table.n])
            offset += table.n


def _settle(future: asyncio.Future[NDArray[Any]], call: Any) -> None:
    try:
        result = call()
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
        return
    if not future.done():
        future.set_result(result)


class Serving:
    """The serving domain's share of the app state: caches, log, shadow, metrics."""

    def __init__(
        self,
        settings: Settings,
        store: ArtifactStore,
        session_factory: sessionmaker[Session],
        registry: CollectorRegistry,
    ) -> None:
        conf = settings.serving
        self.settings = conf
        self.models = ModelCache(store, threads=conf.onnx_threads, max_bytes=conf.model_cache_bytes)
        self.endpoints = EndpointCache(
            session_factory, refresh_s=conf.refresh_s, on_change=self._preload
        )
        self.predictions = PredictionLog(
            store, flush_s=conf.log_flush_s, max_rows=conf.log_queue_rows
        )
        self.metrics = ServingMetrics(registry)
        self.shadow = ShadowRunner(self)
        self._batchers: dict[str, Batcher] = {}
        self._started = False
        self._preloader: queue.Queue[VersionView] = queue.Queue()

    def start(self) -> None:
        """Start the refresher, log writer, shadow and preload threads (once per process)."""
        if self._started:
            return
        self._started = True
        self.endpoints.start()
        if self.settings.prediction_log:
            self.predictions.start()
        self.shadow.start()
        threading.Thread(target=self._preload_run, name="model-preload", daemon=True).start()

    def stop(self) -> None:
        self.endpoints.stop()
        if self.settings.prediction_log:
            self.predictions.stop()

    def _preload(self, views: list[EndpointView]) -> None:
        for view in views:
            for version in view.versions():
                if self.models.get(version) is None:
                    self._preloader.put(version)

    def _preload_run(self) -> None:
        while True:
            version = self._preloader.get()
            try:
                self.models.load(version)
            except ModelLoadError:
                pass  # logged by the cache; a request will report it

    # ----------------------------------------------------------------------- the request

    async def endpoint(self, principal: Principal, name: str) -> EndpointView:
        view = await self.endpoints.lookup(principal.org_id, name)
        if view is None:
            raise NotFound("endpoint", name[:100])
        return view

    async def predictor(self, version: VersionView) -> Predictor:
        found = self.models.get(version)
        if found is not None:
            return found
        try:
            return await anyio.to_thread.run_sync(self.models.load, version)
        except ModelLoadError as exc:
            raise ServiceUnavailable(
                f"model {version.model_name!r} version {version.number} cannot be loaded: {exc}"[
                    :400
                ]
            ) from None

    async def run(self, predictor: Predictor, table: Table, strict: bool) -> NDArray[Any]:
        try:
            if self.settings.batching:
                batcher = self._batchers.get(predictor.id)
                if batcher is None or batcher.predictor is not predictor:
                    batcher = self._batchers[predictor.id] = Batcher(
                        predictor,
                        max_rows=self.settings.batch_max_rows,
                        wait_s=self.settings.batch_wait_ms / 1000,
                    )
                if table.n < self.settings.batch_max_rows:
                    return await batcher.predict(table, strict)
            if table.n <= INLINE_ROWS:
                return predictor.predict(table, strict_categories=strict)
            return await anyio.to_thread.run_sync(
                lambda: predictor.predict(table, strict_categories=strict)
            )
        except AiaasError:
            raise
        except Exception as exc:  # onnxruntime refusing an input it was given
            raise InvalidInput(f"the model refused the input: {exc}"[:400]) from None

    async def predict(
        self,
        principal: Principal,
        name: str,
        body: bytes,
        *,
        request_id: str,
        mlflow: bool = False,
    ) -> Answer:
        """``POST /endpoints/{name}/predict`` (or ``/invocations`` with ``mlflow``)."""
        started = time.perf_counter()
        view = await self.endpoint(principal, name)
        try:
            predictor = await self.predictor(choose(view))
            table = payload.decode(
                payload.parse_json(body),
                predictor.order,
                max_rows=self.settings.max_rows,
                numeric=predictor.numeric,
            )
            out = await self.run(predictor, table, view.unknown_categories == "error")
        except AiaasError as exc:
            self.metrics.refused(view, exc.status)
            raise
        ids = prediction_ids(table.n)
        if mlflow:
            data = payload.invocations_body(out)
        else:
            data = payload.predict_body(
                out,
                ids=ids,
                classes=predictor.classes,
                keys=predictor.class_keys,
                regression=not predictor.classification,
                model=view.model_name,
                version=predictor.number,
            )
        headers = answer_headers(predictor, payload.ignored_columns(table, predictor.known), view)
        self.after(view, predictor, table, out, ids, request_id, started)
        return Answer(200, data, headers)

    def after(
        self,
        view: EndpointView,
        predictor: Predictor,
        table: Table,
        out: NDArray[Any],
        ids: list[str],
        request_id: str,
        started: float,
    ) -> None:
        """Off the request path: the log, the shadow's copy, metrics (all in memory)."""
        now = time.time()
        if self.settings.prediction_log:
            self.predictions.append(
                LoggedBatch(view, predictor, "primary", ids, table, out, now, request_id)
            )
        if view.shadow is not None:
            self.shadow.submit(view, table, ids, request_id)
        self.metrics.record(view, predictor.number, table.n, time.perf_counter() - started)


def choose(view: EndpointView) -> VersionView:
    """The version a request goes to: a draw by the traffic weights."""
    routes = view.routes
    if len(routes) == 1:
        return routes[0][0]
    draw = random.random() * routes[-1][1]
    for version, upto in routes:
        if draw < upto:
            return version
    return routes[-1][0]


def prediction_ids(n: int) -> list[str]:
    """Ids for feedback: ``pr_<random>`` for one row, ``pr_<random>-<i>`` for many."""
    base = "pr_" + secrets.token_hex(8)
    if n == 1:
        return [base]
    return [f"{base}-{i}" for i in range(n)]


def answer_headers(
    predictor: Predictor, ignored: list[str], view: EndpointView
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-aiaas-model-version", str(predictor.number).encode()),
        (b"x-aiaas-endpoint-revision", str(view.revision).encode()),
    ]
    if ignored:
        text = ", ".join(ignored).encode("ascii", "backslashreplace")[:1000]
        headers.append((b"x-ignored-columns", text))
    return headers
