"""The batch scoring child: one dataset version × one model version, inside the sandbox.

Started by :func:`aiaas.serving.batch.run_batch` through :func:`aiaas.sandbox.run_child`
(rlimits; Landlock: read the version's Parquet file, read and write its work directory —
which holds a copy of the model's files and its output — and no TCP). It loads the model
with the serving predictor (:func:`aiaas.serving.predictor.load`: the same encoding and
ONNX session as online predictions), reads the Parquet ``chunk_rows`` rows at a time,
predicts each chunk and appends it, with its prediction columns, to the output Parquet.

Protocol: one ``{"type": "progress", "rows": n}`` line after each chunk (rows done so far),
then one answer line ``{"type": "result", "ok": true, "rows": n, "loop_s": s}`` (``loop_s``:
the seconds of the read-predict-write loop) or ``{"type": "result",
"ok": false, "code": ..., "message": ...}``. The parent re-validates the output file.

The request: ``data`` (Parquet path), ``root`` (the work directory), ``version`` (the
fields of a :class:`~aiaas.serving.service.VersionView`; its files under ``root``),
``columns`` (the prediction columns' names: ``prediction`` then ``p.<class>`` by class),
``strict_categories``, ``chunk_rows``, ``threads``, ``out`` (the output path).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from aiaas.sandbox import child
from aiaas.storage.base import ArtifactStore, validate_key

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from numpy.typing import NDArray

    from aiaas.serving.predictor import Column, Predictor, Values

#: how the loader says a shared library did not fit under the address-space limit
_NO_MEMORY = ("failed to map segment", "Cannot allocate memory", "bad_alloc")


class _Files(ArtifactStore):
    """The model's files in the work directory, read-only: what the predictor's loader
    reads (``get_bytes``); nothing else is ever called."""

    def __init__(self, root: Path):
        self.root = root

    def open(self, org_id: str, key: str) -> BinaryIO:
        return (self.root / validate_key(org_id, key)).open("rb")

    def put_bytes(self, org_id: str, key: str, data: bytes) -> None:
        raise PermissionError("read-only")

    def put_file(self, org_id: str, key: str, local_path: Path) -> None:
        raise PermissionError("read-only")

    def exists(self, org_id: str, key: str) -> bool:
        return (self.root / validate_key(org_id, key)).is_file()

    def delete(self, org_id: str, key: str) -> None:
        raise PermissionError("read-only")

    def delete_prefix(self, org_id: str, prefix: str) -> None:
        raise PermissionError("read-only")

    def list(self, org_id: str, prefix: str) -> Iterator[str]:
        raise PermissionError("not listed")

    def modified(self, org_id: str, key: str) -> float | None:
        return None

    def local_path(self, org_id: str, key: str) -> Path | None:
        return None


def _line(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "result", "ok": False, "code": code, "message": message[:2000]}


# --------------------------------------------------------------------------- columns


def _values(col: Column, arr: pa.Array) -> Values:
    """One Arrow column as the predictor takes it: numbers as float64 (null → NaN), dates
    as ISO text, anything else as Python values (the predictor names a bad one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    if col.kind == "numeric" and (numeric or pa.types.is_boolean(t) or pa.types.is_null(t)):
        out: NDArray[Any] = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
        return out
    if col.kind == "datetime" and (pa.types.is_timestamp(t) or pa.types.is_date(t)):
        arr = pc.cast(arr, pa.string())
    if col.kind == "numeric":  # text where numbers belong: the predictor says where
        return list(arr.to_pylist())
    objects: NDArray[Any] = arr.to_numpy(zero_copy_only=False)
    return objects


def _predictions(predictor: Predictor, out: NDArray[Any], names: list[str]) -> list[pa.Array]:
    """The prediction columns of one chunk: the label (or value), then each probability."""
    import numpy as np
    import pyarrow as pa

    if not predictor.classification:
        return [pa.array(np.asarray(out, dtype=np.float64))]
    if out.ndim != 2 or out.shape[1] != len(names) - 1:
        raise ValueError(f"the model gave {out.shape} probabilities for {len(names) - 1} classes")
    labels = pa.array(predictor.classes).take(pa.array(np.argmax(out, axis=1)))
    probs = [pa.array(np.asarray(out[:, k], dtype=np.float64)) for k in range(out.shape[1])]
    return [labels, *probs]


# --------------------------------------------------------------------------- scoring


def _writer(path: str, schema: pa.Schema) -> pq.ParquetWriter:
    """The output file: dictionary encoding for all but floating-point columns (labels and
    categories shrink; random floats only pay for a dictionary they then abandon)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    coded = [f.name for f in schema if not pa.types.is_floating(f.type)]
    return pq.ParquetWriter(path, schema, use_dictionary=coded)


def _load(request: dict[str, Any]) -> Predictor:
    from aiaas.serving.predictor import load
    from aiaas.serving.views import VersionView

    raw = request["version"]
    view = VersionView(**{**raw, "artifacts": tuple(raw["artifacts"])})
    return load(_Files(Path(request["root"])), view, threads=int(request["threads"]))


def score(request: dict[str, Any]) -> dict[str, Any]:
    """Score every chunk into the output file; the answer (``ok`` with the rows, or a
    coded error)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aiaas.errors import InvalidInput
    from aiaas.serving.predictor import ModelLoadError, Table

    try:
        predictor = _load(request)
    except (ModelLoadError, InvalidInput) as exc:
        return _error("model_load_failed", f"the model cannot be loaded: {exc}")
    names = [str(n) for n in request["columns"]]
    strict = bool(request["strict_categories"])
    started = time.perf_counter()
    source = pq.ParquetFile(request["data"])
    writer: pq.ParquetWriter | None = None
    done = 0
    try:
        for batch in source.iter_batches(batch_size=int(request["chunk_rows"])):
            table = Table(
                batch.num_rows,
                {c.name: _values(c, batch.column(c.name)) for c in predictor.columns},
            )
            try:
                out = predictor.predict(table, strict_categories=strict)
            except InvalidInput as exc:
                where = f"rows {done} to {done + batch.num_rows - 1} of the dataset"
                return _error("bad_input", f"{exc.detail} (in {where}; rows count from 0 there)")
            extra = _predictions(predictor, out, names)
            scored = pa.RecordBatch.from_arrays(
                [*batch.columns, *extra], names=[*batch.schema.names, *names]
            )
            if writer is None:
                writer = _writer(request["out"], scored.schema)
            writer.write_batch(scored)
            done += batch.num_rows
            _line({"type": "progress", "rows": done})
    finally:
        if writer is not None:
            writer.close()
    return {"type": "result", "ok": True, "rows": done, "loop_s": time.perf_counter() - started}


def _preload() -> None:
    """Import the scoring stack before the request arrives (only our own code runs here;
    the sandbox applies in :func:`child.start`, before any model or data is read)."""
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401

    from aiaas.serving import predictor, service  # noqa: F401


def main() -> int:
    child.die_with_parent()
    _preload()
    try:
        started = child.start()
    except OSError as exc:
        child.answer(_error("sandbox", f"the sandbox could not be applied: {exc}"))
        return 1
    request = started.request
    scratch = Path(request["root"]) / "tmp"  # a model without ONNX unpacks here
    scratch.mkdir(exist_ok=True)
    tempfile.tempdir = str(scratch)
    try:
        reply = score(request)
    except MemoryError:
        reply = _error("out_of_memory", "scoring ran out of memory (its address-space limit)")
    except Exception as exc:  # reported to the parent, which fails the job with it
        if any(sign in str(exc) for sign in _NO_MEMORY):
            reply = _error("out_of_memory", f"scoring ran out of memory (its limit): {exc}")
        else:
            reply = _error("scoring_error", f"{type(exc).__name__}: {exc}")
    _line(reply)
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()  # the answer is out and the output closed: skip the teardown
    os._exit(code)  # of threads and libraries
