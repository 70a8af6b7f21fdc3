"""The prediction log: every answered row, written to Parquet in batches, off the request path.

A request hands its rows over with :meth:`PredictionLog.append` (a deque append: it never
waits, and past ``max_rows`` unwritten rows it drops and counts instead). A daemon thread
turns what has queued into Arrow columns every :data:`DRAIN_S` and writes it every
``flush_s`` seconds (a crash loses at most that much): one Parquet file per endpoint, version
and role (``primary`` / ``shadow``) under the organization's
``predictions/<endpoint id>/<YYYY-MM-DD>/`` (one atomic put each). Columns:
``prediction_id, ts, request_id, endpoint, model, version, role``, one column per input
the model takes (``in.<column>``), and ``label`` + ``p.<class>`` (classification) or
``value`` (regression). Monitoring reads these files.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from aiaas.serving.predictor import Column, Predictor, Table
from aiaas.serving.views import EndpointView
from aiaas.storage import ArtifactStore

log = structlog.get_logger("aiaas.serving")


@dataclass(frozen=True, slots=True)
class LoggedBatch:
    endpoint: EndpointView
    predictor: Predictor
    role: str
    ids: list[str]
    table: Table
    out: NDArray[Any]
    ts: float
    request_id: str


#: How often the writer turns what has queued into Arrow columns. It holds the GIL while it
#: does (a loop over the requests): at 8,000 requests a second, a drain every 0.2 s held it
#: ~8 ms, a whole round of 64 batched requests (the p99 at 64 connections); every 0.05 s,
#: ~2 ms. One long hold every ``flush_s`` tripled the p99.
DRAIN_S = 0.05


class PredictionLog:
    def __init__(self, store: ArtifactStore, *, flush_s: float, max_rows: int) -> None:
        self.store = store
        self.flush_s = flush_s
        self.max_rows = max_rows
        self._queue: deque[LoggedBatch] = deque()
        #: rows queued or drained, not yet written (bounded by ``max_rows``)
        self._queued_rows = 0
        #: drained rows by (endpoint, version, role): the first batch and Arrow tables
        self._pending: dict[tuple[str, str, str], tuple[LoggedBatch, list[Any], int]] = {}
        self.dropped_rows = 0
        self.written_rows = 0
        self._seq = 0
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def append(self, batch: LoggedBatch) -> None:
        n = len(batch.ids)
        if self._queued_rows + n > self.max_rows:
            self.dropped_rows += n
            return
        self._queued_rows += n
        self._queue.append(batch)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.flush()

    def _run(self) -> None:
        next_write = time.monotonic() + self.flush_s
        while not self._stop.wait(min(DRAIN_S, self.flush_s)):
            try:
                with self._flush_lock:
                    self._drain()
                    if time.monotonic() >= next_write:
                        next_write = time.monotonic() + self.flush_s
                        self._write_pending()
            except Exception as exc:
                log.warning("prediction_log_flush_failed", error=str(exc)[:300])

    def flush(self) -> int:
        """Write everything queued now; the number of rows written."""
        with self._flush_lock:
            self._drain()
            return self._write_pending()

    def _drain(self) -> None:
        """What has queued, as Arrow tables by endpoint, version and role (not yet written)."""
        batches: list[LoggedBatch] = []
        while self._queue:
            batches.append(self._queue.popleft())
        groups: dict[tuple[str, str, str], list[LoggedBatch]] = {}
        for batch in batches:
            key = (batch.endpoint.id, batch.predictor.id, batch.role)
            groups.setdefault(key, []).append(batch)
        for key, group in groups.items():
            rows = sum(len(b.ids) for b in group)
            try:
                table = self._arrow(group)
            except Exception as exc:  # one bad group must not lose the others
                self._lost(rows, exc)
                self._queued_rows -= rows  # no longer waiting to be written
                continue
            first, tables, pending = self._pending.get(key, (group[0], [], 0))
            tables.append(table)
            self._pending[key] = (first, tables, pending + rows)

    def _write_pending(self) -> int:
        import pyarrow as pa

        pending, self._pending = self._pending, {}
        written = 0
        for first, tables, rows in pending.values():
            try:
                self._put(first, pa.concat_tables(tables))
                written += rows
            except Exception as exc:
                self._lost(rows, exc)
            self._queued_rows -= rows
        self.written_rows += written
        return written

    def _lost(self, rows: int, exc: Exception) -> None:
        self.dropped_rows += rows
        log.warning("prediction_log_write_failed", error=str(exc)[:300])

    def _arrow(self, group: list[LoggedBatch]) -> Any:
        """The rows of ``group`` (one endpoint, version and role) as an Arrow table."""
        import pyarrow as pa

        first = group[0]
        pred = first.predictor
        counts = np.array([len(b.ids) for b in group])
        n = int(counts.sum())
        micros = np.repeat(np.array([int(b.ts * 1e6) for b in group], dtype=np.int64), counts)
        columns: dict[str, Any] = {
            "prediction_id": pa.array(list(chain.from_iterable(b.ids for b in group))),
            "ts": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "request_id": pa.array(np.repeat(np.array([b.request_id for b in group]), counts)),
            "endpoint": pa.array([first.endpoint.name] * n, pa.string()),
            "model": pa.array([first.endpoint.model_name] * n, pa.string()),
            "version": pa.array(np.full(n, pred.number, dtype=np.int32)),
            "role": pa.array([first.role] * n, pa.string()),
        }
        required = pred.required
        if all(b.table.matrix is not None and b.table.matrix_of == required for b in group):
            # numbers only, each request one matrix (the common case): one concatenation
            inputs = np.concatenate([b.table.matrix for b in group])
            for j, name in enumerate(required):
                columns[f"in.{name}"] = _float_array(inputs[:, j])
        else:
            for col in pred.columns:
                columns[f"in.{col.name}"] = _input_column(col, group)
        out = np.concatenate([b.out for b in group])
        if pred.classification:
            keys = np.array(pred.class_keys, dtype=object)
            columns["label"] = pa.array(keys[np.argmax(out, axis=1)], pa.string())
            for j, key in enumerate(pred.class_keys):
                columns[f"p.{key}"] = pa.array(out[:, j].astype(np.float64), pa.float64())
        else:
            columns["value"] = pa.array(out.astype(np.float64), pa.float64())
        return pa.table(columns)

    def _put(self, first: LoggedBatch, table: Any) -> None:
        import pyarrow.parquet as pq

        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        now = datetime.now(UTC)
        self._seq += 1
        key = (
            f"predictions/{first.endpoint.id}/{now:%Y-%m-%d}/"
            f"{now:%H%M%S%f}-{os.getpid()}-{self._seq}-{first.role}.parquet"
        )
        self.store.put_bytes(first.endpoint.org_id, key, sink.getvalue())


def _input_column(col: Column, group: list[LoggedBatch]) -> Any:
    """One input column of ``group`` as Arrow (numbers as float64, anything else as text)."""
    parts = [b.table.columns.get(col.name) for b in group]
    kinds = set(map(type, parts))
    if kinds == {list}:  # JSON values (C loops: a flush holds the GIL for every request)
        values = list(chain.from_iterable(parts))  # type: ignore[arg-type]
    elif col.kind == "numeric" and all(_is_numbers(p) for p in parts):
        return _float_array(np.concatenate(parts))  # type: ignore[arg-type]
    else:
        values = list(
            chain.from_iterable(_as_list(p, b) for p, b in zip(parts, group, strict=True))
        )
    return _floats(values) if col.kind == "numeric" else _texts(values)


def _is_numbers(values: Any) -> bool:
    return isinstance(values, np.ndarray) and values.dtype.kind in "fiu"


def _float_array(values: NDArray[Any]) -> Any:
    """Numbers (a numpy column) as float64 Arrow, non-finite values as null (no copy in
    Python: the matrix of a request is logged column by column as it is)."""
    import pyarrow as pa

    floats = np.ascontiguousarray(values, dtype=np.float64)
    finite = np.isfinite(floats)
    return pa.array(floats, pa.float64(), mask=None if finite.all() else ~finite)


def _as_list(values: Any, batch: LoggedBatch) -> list[Any]:
    if values is None:
        return [None] * len(batch.ids)
    if isinstance(values, np.ndarray):
        return list(values.tolist())
    return values if isinstance(values, list) else list(values)


def _texts(values: list[Any]) -> Any:
    """A text input column as an Arrow string array (other values as their text)."""
    import pyarrow as pa

    try:
        return pa.array(values, pa.string())
    except (pa.ArrowException, TypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _floats(values: list[Any]) -> Any:
    """A numeric input column as a float64 Arrow array; nulls, non-finite numbers and
    values of another type are logged as null (converted in C, no Python loop, unless a
    value of another type is there)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pa.array(values, pa.float64())
    except (pa.ArrowException, TypeError):
        arr = pa.array([v if type(v) in (float, int) else None for v in values], pa.float64())
    return pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, pa.float64()))
