"""The prediction log's own accounting: rows queued, written, dropped — and a failure in one
group loses that group only, never the log's capacity."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from aiaas.serving import payload
from aiaas.serving.predictor import Column
from aiaas.serving.predlog import LoggedBatch, PredictionLog
from aiaas.storage import get_store

NAMES = ("a", "b")


class Predictor:  # what the log reads of a loaded version
    id, number, classification, class_keys = "mv_1", 1, True, ["0", "1"]
    required = NAMES
    columns = tuple(Column(n, "numeric", False) for n in NAMES)


class View:  # what the log reads of an endpoint
    id, name, model_name, org_id = "ep_1", "ep", "m", "org_1"


def batch(rows: list[list[float]], first: int, *, numeric: bool = True) -> LoggedBatch:
    table = payload.decode(
        {"instances": rows}, NAMES, max_rows=99, numeric=NAMES if numeric else None
    )
    out = np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (len(rows), 1))
    ids = [f"pr_{first + i:016x}" for i in range(len(rows))]
    return LoggedBatch(View, Predictor, "primary", ids, table, out, time.time(), "rid")  # type: ignore[arg-type]


def read_all(store: Any) -> Any:
    keys = [k for k in store.list("org_1", "predictions") if k.endswith(".parquet")]
    tables = [pq.read_table(io.BytesIO(store.get_bytes("org_1", k))) for k in keys]
    return tables


def test_rows_written_as_sent_by_either_decoding(tmp_path: Path) -> None:
    store = get_store(f"file://{tmp_path}")
    log = PredictionLog(store, flush_s=3600, max_rows=100)
    log.append(batch([[1.0, 2.0], [3.0, 4.5]], 0))
    log.append(batch([[5, 6]], 2, numeric=False))  # the column-by-column path
    assert log.flush() == 3
    (table,) = read_all(store)
    assert table.column("in.a").to_pylist() == [1.0, 3.0, 5.0]
    assert table.column("in.b").to_pylist() == [2.0, 4.5, 6.0]
    assert table.column("prediction_id").to_pylist() == [f"pr_{i:016x}" for i in range(3)]
    assert table.column("label").to_pylist() == ["1", "1", "1"]


def test_a_failed_group_is_dropped_and_counted_and_the_capacity_comes_back(tmp_path: Path) -> None:
    class Broken(Predictor):
        id = "mv_broken"
        class_keys = ["only-one"]  # the output has two columns: the conversion fails

    store = get_store(f"file://{tmp_path}")
    log = PredictionLog(store, flush_s=3600, max_rows=4)
    bad = batch([[1.0, 2.0], [3.0, 4.0]], 0)
    out = bad.out[:, :1].T  # one row for two ids
    log.append(LoggedBatch(View, Broken, "primary", bad.ids, bad.table, out, bad.ts, "r"))  # type: ignore[arg-type]
    log.append(batch([[5.0, 6.0]], 2))
    assert log.flush() == 1  # the good group is written
    assert log.dropped_rows == 2
    for i in range(4):  # all 4 rows of capacity are free again
        log.append(batch([[float(i), 0.0]], 10 + i))
    assert log.dropped_rows == 2
    assert log.flush() == 4


def test_a_failed_write_is_dropped_and_counted(tmp_path: Path) -> None:
    class FailingStore:
        def put_bytes(self, org_id: str, key: str, data: bytes) -> None:
            raise OSError("disk full")

    log = PredictionLog(FailingStore(), flush_s=3600, max_rows=3)  # type: ignore[arg-type]
    log.append(batch([[1.0, 2.0], [3.0, 4.0]], 0))
    assert log.flush() == 0
    assert log.dropped_rows == 2
    log.append(batch([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], 2))  # the capacity is back
    assert log.dropped_rows == 2
