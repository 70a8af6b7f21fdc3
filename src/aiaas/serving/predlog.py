"""The prediction log: every answered row, written to Parquet in batches, off the request path.

A request hands its rows over with :meth:`PredictionLog.append` (a deque append: it never
waits, and past ``max_rows`` queued rows it drops and counts instead). A daemon thread
writes what has queued every ``flush_s`` seconds: one Parquet file per endpoint, version
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
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from aiaas.serving.predictor import Predictor, Table
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


class PredictionLog:
    def __init__(self, store: ArtifactStore, *, flush_s: float, max_rows: int) -> None:
        self.store = store
        self.flush_s = flush_s
        self.max_rows = max_rows
        self._queue: deque[LoggedBatch] = deque()
        self._queued_rows = 0
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
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception as exc:
                log.warning("prediction_log_flush_failed", error=str(exc)[:300])

    def flush(self) -> int:
        """Write everything queued now; the number of rows written."""
        with self._flush_lock:
            batches: list[LoggedBatch] = []
            while self._queue:
                batch = self._queue.popleft()
                self._queued_rows -= len(batch.ids)
                batches.append(batch)
            groups: dict[tuple[str, str, str], list[LoggedBatch]] = {}
            for batch in batches:
                key = (batch.endpoint.id, batch.predictor.id, batch.role)
                groups.setdefault(key, []).append(batch)
            written = 0
            for group in groups.values():
                try:
                    written += self._write(group)
                except Exception as exc:  # one bad group must not lose the others
                    self.dropped_rows += sum(len(b.ids) for b in group)
                    log.warning("prediction_log_write_failed", error=str(exc)[:300])
            self.written_rows += written
            return written

    def _write(self, group: list[LoggedBatch]) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

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
        for col in pred.columns:
            values = list(
                chain.from_iterable(_as_list(b.table.columns.get(col.name), b) for b in group)
            )
            columns[f"in.{col.name}"] = _floats(values) if col.kind == "numeric" else _texts(values)
        out = np.concatenate([b.out for b in group])
        if pred.classification:
            keys = np.array(pred.class_keys, dtype=object)
            columns["label"] = pa.array(keys[np.argmax(out, axis=1)], pa.string())
            for j, key in enumerate(pred.class_keys):
                columns[f"p.{key}"] = pa.array(out[:, j].astype(np.float64), pa.float64())
        else:
            columns["value"] = pa.array(out.astype(np.float64), pa.float64())
        sink = io.BytesIO()
        pq.write_table(pa.table(columns), sink, compression="zstd")
        now = datetime.now(UTC)
        self._seq += 1
        key = (
            f"predictions/{first.endpoint.id}/{now:%Y-%m-%d}/"
            f"{now:%H%M%S%f}-{os.getpid()}-{self._seq}-{first.role}.parquet"
        )
        self.store.put_bytes(first.endpoint.org_id, key, sink.getvalue())
        return n


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
