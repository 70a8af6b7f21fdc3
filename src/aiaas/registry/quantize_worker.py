"""Dynamic quantization of a model version, in quarantine: ``python -B -I -m
aiaas.registry.quantize_worker``.

Started by :func:`aiaas.registry.quantize.quantize_in_sandbox` through
:func:`aiaas.sandbox.run_child`. The graph may be a user's upload (hostile bytes: uploads
are checked, but a check proves little about every input), so the process confines itself
before it reads anything (:func:`aiaas.sandbox.child.start`: address space, CPU seconds,
file sizes, open files; Landlock: it reads the source version's files and the reference
Parquet file, writes only its own work directory, no TCP). Then it

1. parses the source graph from its bytes and refuses external data and non-standard
   operator domains (as the upload check does, :mod:`aiaas.registry.onnx_worker`);
2. finds the weights dynamic quantization works on: the constant ``B`` of ``MatMul``, the
   constant ``W`` of ``Conv``, and the constant ``B`` of ``Gemm``, which it rewrites as
   ``MatMul`` (+ ``Add``) first (ONNX Runtime has no integer ``Gemm`` for dynamic
   quantization; PyTorch exports its linear layers as ``Gemm``). None: "nothing to quantize";
3. runs ``onnxruntime.quantization.quantize_dynamic`` (weights ``QInt8``: ONNX Runtime's
   default, U8S8 with the uint8 activations, its recommended format on x86-64 CPUs;
   per tensor, full range) into ``model.onnx`` of its work directory (temporary files in
   ``tmp/``),
   and checks that the result holds integer operators;
4. loads the source and the quantized version with the serving predictor
   (:func:`aiaas.serving.predictor.load`, one thread): the same column encoding and ONNX
   session as online predictions, so a trained version's graph gets the encoded matrix;
5. reads the first ``rows`` rows of the reference Parquet (the model's columns and the
   target), predicts them with both and scores both against the target (classification:
   accuracy, and ROC AUC for a binary model; regression: RMSE and MAE), and how far the
   two disagree;
6. times ``predict`` calls of 1 row and of 64 rows of both, interleaved: median and p99.

Protocol: one JSON line on stdout: ``{"ok": true, "rows": n, "rows_scored": n,
"weights": n, "integer_ops": n, "gemm_rewritten": n, "source": {"scores": {...},
"latency_ms": {"1_row": {"median", "p99", "calls"}, "64_rows": {...}}}, "quantized":
{...}, "agreement": x, "max_abs_diff": x, "peak_rss": n, "sandbox_abi": n}`` or ``{"ok":
false, "kind": "nothing" | "bad_input" | "refused", "reason": "..."}`` (``"internal":
true`` for a bug, its traceback on stderr; ``"unavailable": true`` when the sandbox could
not be applied). The parent re-validates every field it uses and the quantized file.
"""

from __future__ import annotations

import shutil
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
    from numpy.typing import NDArray

    from aiaas.serving.predictor import Column, Predictor, Table, Values

NOTHING = "nothing to quantize: the graph has no MatMul/Gemm/Conv weights"
QUANTIZED_OPS = ["MatMul", "Conv"]  # what quantize_dynamic may touch (Gemm is rewritten)
INTEGER_OPS = frozenset({"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"})
ONNX_FILE = "model.onnx"
ENCODING_FILE = "encoding.json"
WARMUP_CALLS = 20
CALLS = {"1_row": (1, 300), "64_rows": (64, 100)}  # name → (rows per call, calls)
LATENCY_BUDGET_S = 30.0  # per batch size: fewer calls when a model is slow
_READ_BATCH = 8192


class Refused(Exception):
    """The work stops here; ``kind`` says why (``nothing``, ``bad_input``, ``refused``)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class _Files(ArtifactStore):
    """The version files under the work root, read-only: what the predictor's loader reads."""

    def __init__(self, root: Path):
        self.root = root

    def open(self, org_id: str, key: str) -> BinaryIO:
        return (self.root / validate_key(org_id, key)).open("rb")

    def put_bytes(self, org_id: str, key: str, data: bytes) -> None:
        raise PermissionError("read-only")

    def exists(self, org_id: str, key: str) -> bool:
        return (self.root / validate_key(org_id, key)).is_file()

    def delete_prefix(self, org_id: str, prefix: str) -> None:
        raise PermissionError("read-only")

    def list(self, org_id: str, prefix: str) -> Iterator[str]:
        raise PermissionError("not listed")

    def put_file(self, org_id: str, key: str, local_path: Path) -> None:
        raise PermissionError("read-only")

    def delete(self, org_id: str, key: str) -> None:
        raise PermissionError("read-only")

    def modified(self, org_id: str, key: str) -> float | None:
        return None

    def local_path(self, org_id: str, key: str) -> Path | None:
        return None


# --------------------------------------------------------------------------- the graph


def _float_initializers(graph: Any) -> dict[str, Any]:
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
    return {t.name: t for t in graph.initializer if t.data_type in floats}


def _weights(graph: Any) -> int:
    """MatMul and Conv nodes of the main graph whose weight is a float initializer."""
    inits = _float_initializers(graph)
    return sum(
        1
        for n in graph.node
        if n.domain in ("", "ai.onnx")
        and n.op_type in QUANTIZED_OPS
        and len(n.input) > 1
        and n.input[1] in inits
    )


def _gemm_matmul(node: Any, inits: dict[str, Any], fresh: Any) -> tuple[list[Any], Any] | None:
    """``Gemm(A, B, C)`` with a constant 2-D ``B``, no ``transA`` and ``beta`` 1 (or no
    ``C``) as ``MatMul(A, alpha * B')`` and ``Add(·, C)``: the new nodes and the new weight
    (None: left alone)."""
    import numpy as np
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.input[1] not in inits or attrs.get("transA", 0):
        return None
    b = numpy_helper.to_array(inits[node.input[1]])
    has_c = len(node.input) > 2 and bool(node.input[2])
    beta = float(attrs.get("beta", 1.0))
    if b.ndim != 2 or (has_c and beta != 1.0):
        return None
    b = b.T if attrs.get("transB", 0) else b
    b = np.ascontiguousarray(b * np.asarray(attrs.get("alpha", 1.0), dtype=b.dtype))
    weight = numpy_helper.from_array(b, fresh(f"{node.input[1]}_matmul"))
    out = node.output[0]
    product = fresh(f"{out}_matmul") if has_c else out
    nodes = [helper.make_node("MatMul", [node.input[0], weight.name], [product], fresh(node.name))]
    if has_c:
        nodes.append(helper.make_node("Add", [product, node.input[2]], [out], fresh(node.name)))
    return nodes, weight


def rewrite_gemm(model: Any) -> int:
    """Rewrite the main graph's Gemm nodes with a constant weight as MatMul (+ Add), drop
    the initializers nothing uses any more; how many were rewritten."""
    graph = model.graph
    inits = _float_initializers(graph)
    taken = {t.name for t in graph.initializer} | {v.name for v in graph.input}
    taken |= {name for n in graph.node for name in (*n.output, n.name)}

    def fresh(base: str) -> str:
        base = base or "gemm"
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    nodes, count = [], 0
    for node in graph.node:
        gemm = node.op_type == "Gemm" and node.domain in ("", "ai.onnx")
        done = _gemm_matmul(node, inits, fresh) if gemm else None
        if done is None:
            nodes.append(_copy(node))
            continue
        nodes.extend(done[0])
        graph.initializer.append(done[1])
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        _drop_unused(model)
    return count


def _copy(message: Any) -> Any:
    copied = type(message)()
    copied.CopyFrom(message)
    return copied


def _drop_unused(model: Any) -> None:
    """Remove the initializers no node (of any subgraph) reads, and their graph inputs
    (older models list initializers as inputs too)."""
    from aiaas.registry.onnx_worker import _all_graphs

    graph = model.graph
    used = {i for g in _all_graphs(model) for n in g.node for i in n.input}
    used |= {o.name for o in graph.output}
    dropped = {t.name for t in graph.initializer} - used
    kept = [_copy(t) for t in graph.initializer if t.name not in dropped]
    inputs = [_copy(v) for v in graph.input if v.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.input[:]
    graph.input.extend(inputs)


def quantize(source: Path, out: Path) -> dict[str, int]:
    """Quantize the graph at ``source`` into ``out``; what was found and done."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from aiaas.registry.onnx_worker import _all_graphs, refuse_custom_domains, refuse_external_data

    try:
        model = onnx.load_model_from_string(source.read_bytes())
    except (DecodeError, ValueError, RuntimeError):
        raise Refused("refused", "the source graph is not an ONNX model") from None
    graphs = _all_graphs(model)
    try:
        refuse_external_data(model, graphs)
        refuse_custom_domains(model, graphs)
    except Exception as exc:  # onnx_worker.Refused
        raise Refused("refused", str(exc)) from None
    gemm = rewrite_gemm(model)
    weights = _weights(model.graph)
    if not weights:
        raise Refused("nothing", NOTHING)
    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(model, out, op_types_to_quantize=QUANTIZED_OPS, weight_type=QuantType.QInt8)
    quantized = onnx.load_model_from_string(out.read_bytes())
    integer_ops = sum(1 for n in quantized.graph.node if n.op_type in INTEGER_OPS)
    if not integer_ops:
        raise Refused("nothing", NOTHING)
    return {"weights": weights, "integer_ops": integer_ops, "gemm_rewritten": gemm}


# --------------------------------------------------------------------------- the reference


def read_reference(path: str, columns: list[str], target: str, rows: int) -> pa.Table:
    """The first ``rows`` rows of the model's columns and the target."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    present = set(source.schema_arrow.names)
    for name in [*columns, target]:
        if name not in present:
            what = "the target" if name == target else "the model takes it"
            raise Refused("bad_input", f"the reference dataset has no column {name!r} ({what})")
    wanted = list(dict.fromkeys([*columns, target]))
    batches, n = [], 0
    for batch in source.iter_batches(batch_size=min(rows, _READ_BATCH), columns=wanted):
        batches.append(batch.slice(0, rows - n))
        n += batches[-1].num_rows
        if n >= rows:
            break
    schema = pa.schema([source.schema_arrow.field(name) for name in wanted])
    table = pa.Table.from_batches(batches, schema=schema)
    if table.num_rows == 0:
        raise Refused("bad_input", "the reference dataset has no rows")
    return table


def _values(col: Column, arr: pa.Array) -> Values:
    """One Arrow column as the predictor takes it: numbers as float64 (null → NaN), dates
    as ISO text, anything else as Python values (the predictor names a bad one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(arr.type):
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


def _table(predictor: Predictor, data: pa.Table) -> Table:
    from aiaas.serving.predictor import Table

    columns = {c.name: _values(c, data.column(c.name).combine_chunks()) for c in predictor.columns}
    return Table(data.num_rows, columns)


def _label(value: Any) -> str | None:
    """A target value as the model's class keys are written (``1.0`` is ``"1"``)."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:
            return None
        if value.is_integer():
            value = int(value)
    return str(value)


# --------------------------------------------------------------------------- the scores


def _auc(positive: NDArray[Any], score: NDArray[Any]) -> float | None:
    """ROC AUC (Mann-Whitney, ties averaged); None without both classes."""
    import numpy as np

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = np.arange(1, len(score) + 1)
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _class_scores(out: NDArray[Any], y: NDArray[Any], has: NDArray[Any]) -> dict[str, Any]:
    import numpy as np

    scores: dict[str, Any] = {
        "accuracy": float(np.mean(np.argmax(out[has], axis=1) == y[has])),
    }
    if out.shape[1] == 2:
        scores["roc_auc"] = _auc(y[has] == 1, np.asarray(out[has, 1], dtype=np.float64))
    return scores


def _value_scores(out: NDArray[Any], y: NDArray[Any], has: NDArray[Any]) -> dict[str, Any]:
    import numpy as np

    err = np.asarray(out[has], dtype=np.float64) - y[has]
    if not np.isfinite(err).all():
        raise Refused("bad_input", "a model gave a value that is not a finite number")
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def _targets(predictor: Predictor, column: pa.Array, name: str) -> tuple[Any, Any]:
    """The target as class indices (-1: not a class) or numbers, and which rows have one."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not predictor.classification:
        t = column.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
            raise Refused("bad_input", f"the target column {name!r} does not hold numbers")
        y = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        return y, np.isfinite(y)
    index = {key: i for i, key in enumerate(predictor.class_keys)}
    labels = [_label(v) for v in column.to_pylist()]
    y = np.array([-1 if s is None else index.get(s, -1) for s in labels], dtype=np.int64)
    has = np.array([s is not None for s in labels], dtype=bool)
    if has.any() and not (y >= 0).any():
        shown = ", ".join(repr(k) for k in predictor.class_keys[:10])
        raise Refused(
            "bad_input",
            f"none of the values of the target column {name!r} is one of the model's "
            f"classes ({shown})",
        )
    return y, has


def score(
    source: Predictor, quantized: Predictor, table: Table, target: pa.Array, name: str
) -> dict[str, Any]:
    """Predict the reference rows with both models; their scores and disagreement."""
    import numpy as np

    from aiaas.errors import InvalidInput

    try:
        out_s = source.predict(table, strict_categories=False)
        out_q = quantized.predict(table, strict_categories=False)
    except InvalidInput as exc:
        reason = f"{exc.detail} (rows of the reference dataset count from 0)"
        raise Refused("bad_input", reason) from None
    y, has = _targets(source, target, name)
    if not has.any():
        raise Refused("bad_input", f"no reference row has a value in the target column {name!r}")
    scores = _value_scores if not source.classification else _class_scores
    diff = np.abs(np.asarray(out_s, np.float64) - np.asarray(out_q, np.float64))
    agreement = None
    if source.classification:
        agreement = float(np.mean(np.argmax(out_s, axis=1) == np.argmax(out_q, axis=1)))
    return {
        "rows_scored": int(has.sum()),
        "source": {"scores": scores(out_s, y, has)},
        "quantized": {"scores": scores(out_q, y, has)},
        "agreement": agreement,
        "max_abs_diff": float(np.nanmax(diff)) if np.isfinite(diff).any() else None,
    }


# --------------------------------------------------------------------------- the latency


def _take(table: Table, index: NDArray[Any]) -> Table:
    from aiaas.serving.predictor import Table

    columns: dict[str, Values] = {}
    for name, values in table.columns.items():
        if isinstance(values, list):
            columns[name] = [values[i] for i in index]
        else:
            columns[name] = values[index]
    return Table(len(index), columns)


def _summary(seconds: list[float]) -> dict[str, Any]:
    import numpy as np

    median, p99 = np.percentile(np.array(seconds) * 1000.0, [50, 99])
    return {"median": round(float(median), 4), "p99": round(float(p99), 4), "calls": len(seconds)}


def _timed(predictor: Predictor, table: Table) -> float:
    started = time.perf_counter()
    predictor.predict(table, strict_categories=False)
    return time.perf_counter() - started


def latency(source: Predictor, quantized: Predictor, table: Table) -> dict[str, Any]:
    """Median and p99 milliseconds of ``predict`` calls of 1 and of 64 rows, both models
    called alternately (which goes first alternates too) on the same rows."""
    import numpy as np

    found: dict[str, Any] = {"source": {}, "quantized": {}}
    for name, (rows, calls) in CALLS.items():
        starts = np.arange(calls + WARMUP_CALLS) * rows
        tables = [_take(table, (s + np.arange(rows)) % table.n) for s in starts]
        for t in tables[:WARMUP_CALLS]:
            _timed(source, t)
            _timed(quantized, t)
        times: tuple[list[float], list[float]] = ([], [])
        deadline = time.monotonic() + LATENCY_BUDGET_S
        for i, t in enumerate(tables[WARMUP_CALLS:]):
            pair = (source, quantized) if i % 2 == 0 else (quantized, source)
            first, second = _timed(pair[0], t), _timed(pair[1], t)
            times[0].append(first if i % 2 == 0 else second)
            times[1].append(second if i % 2 == 0 else first)
            if time.monotonic() > deadline:
                break
        found["source"][name] = _summary(times[0])
        found["quantized"][name] = _summary(times[1])
    return found


# --------------------------------------------------------------------------- main


def _view(raw: dict[str, Any], prefix: str | None = None) -> Any:
    from aiaas.serving.views import VersionView

    view = {**raw, "artifacts": tuple(raw["artifacts"])}
    if prefix is not None:
        view["storage_prefix"] = prefix
    return VersionView(**view)


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Quantize, load both, score both, time both; the answer."""
    from aiaas.serving.predictor import ModelLoadError, load

    stamps = [time.perf_counter()]
    root = Path(request["root"])
    source_view = _view(request["source"])
    quant_prefix = str(request["quant_prefix"])
    quant_dir = root / quant_prefix
    done = quantize(root / source_view.storage_prefix / ONNX_FILE, quant_dir / ONNX_FILE)
    if ENCODING_FILE in source_view.artifacts:
        shutil.copyfile(
            root / source_view.storage_prefix / ENCODING_FILE, quant_dir / ENCODING_FILE
        )
    stamps.append(time.perf_counter())
    store = _Files(root)
    try:
        source = load(store, source_view, threads=1)
        quantized = load(store, _view(request["source"], quant_prefix), threads=1)
    except ModelLoadError as exc:
        raise Refused("refused", f"a graph cannot be served ({exc})") from None
    target = str(request["target"])
    data = read_reference(
        str(request["data"]), [c.name for c in source.columns], target, int(request["rows"])
    )
    table = _table(source, data)
    stamps.append(time.perf_counter())
    scored = score(source, quantized, table, data.column(target).combine_chunks(), target)
    stamps.append(time.perf_counter())
    timings = latency(source, quantized, table)
    stamps.append(time.perf_counter())
    for which in ("source", "quantized"):
        scored[which]["latency_ms"] = timings[which]
    steps = ("quantize_s", "load_s", "score_s", "latency_s")
    spent = {k: round(b - a, 3) for k, a, b in zip(steps, stamps[:-1], stamps[1:], strict=True)}
    return {"ok": True, "rows": table.n, **done, **scored, "seconds": spent}


def _preload() -> None:
    """Import the stack before the request arrives (only our own code runs here; the
    sandbox applies in :func:`child.start`, before any model or data is read)."""
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime.quantization  # noqa: F401
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401

    from aiaas.registry import onnx_worker  # noqa: F401
    from aiaas.serving import predictor, views  # noqa: F401


def main() -> int:
    child.die_with_parent()
    _preload()
    try:
        started = child.start()
    except OSError as exc:
        reason = f"the model sandbox could not be applied ({exc.strerror or exc})"
        child.answer({"ok": False, "reason": reason, "unavailable": True})
        return 0
    request = started.request
    tmp = Path(request["root"]) / str(request["tmp"])
    tmp.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(tmp)  # the quantizer's temporary copies stay in the work dir
    try:
        reply = run(request)
    except Refused as exc:
        child.answer({"ok": False, "kind": exc.kind, "reason": str(exc)[:2000]})
        return 0
    except MemoryError:
        child.answer(
            {"ok": False, "kind": "refused", "reason": "it needed more memory than allowed"}
        )
        return 0
    except Exception:  # a bug or an unforeseen graph: the parent logs the traceback
        import traceback

        traceback.print_exc(file=sys.stderr)
        child.answer(
            {"ok": False, "kind": "refused", "reason": "an unexpected error", "internal": True}
        )
        return 0
    child.answer({**reply, "peak_rss": child.peak_rss(), "sandbox_abi": started.landlock_abi})
    return 0


if __name__ == "__main__":
    sys.exit(main())
