"""A loaded model version: request columns → arrays → ONNX Runtime (or the native model).

Two kinds of version are served:

- **trained** (``model.skops`` + ``encoding.json``, usually ``model.onnx``): the columns are
  encoded exactly as :class:`aiaas.automl.preprocess.TabularPreprocessor` does (numbers as
  floats with missing → NaN, categories → their training codes, dates → their parts), in
  numpy, then the ONNX graph runs on the float32 matrix; a model without an ONNX form runs
  its native members on the same matrix;
- **uploaded** (``model.onnx`` only; ``signature["onnx"]`` says how to feed it): one
  ``[N, F]`` tensor of the signature's columns (``layout=matrix``) or one tensor per column
  (``layout=columns``).

Column values arrive as Python lists (JSON) or numpy arrays (Open Inference Protocol
tensors). Every check names the row and column it refuses. Nothing here touches the
database or the network: :func:`load` gets the artifact bytes from the store.
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aiaas.errors import InvalidInput
from aiaas.serving.views import VersionView
from aiaas.storage import ArtifactStore

#: Column values of one request: a Python list (JSON) or a 1-D numpy array (tensors).
Values = list[Any] | NDArray[Any]
_NUMBER_TYPES = frozenset({float, int})
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}
_NUMPY_DTYPES: dict[str, type[np.floating[Any]] | type[np.integer[Any]]] = {
    "float32": np.float32,
    "float64": np.float64,
    "int64": np.int64,
}


class _Absent:
    """A column a row of a request does not have (rows given as objects may differ)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


def _absent(row: int, name: str) -> InvalidInput:
    return InvalidInput(f"{_where(row, name)}: the column is missing from this row")


class ModelLoadError(Exception):
    """A version's artifacts cannot be served (missing, corrupt, or of an unknown kind)."""


@dataclass(frozen=True)
class Column:
    """One request column the model takes, and how it becomes features."""

    name: str
    kind: str  # numeric | categorical | datetime | string
    nullable: bool
    levels: dict[str, float] | None = None  # categorical: level → code
    other: float = -1.0  # categorical: the code of a level not seen in training
    parts: tuple[str, ...] = ()  # datetime parts
    boolean: bool = False  # numeric: JSON true/false are 1/0


class MatrixColumns(Mapping[str, Values]):
    """The columns of a ``(n, F)`` matrix by name, each a view made when asked for."""

    __slots__ = ("_index", "_matrix")

    def __init__(self, matrix: NDArray[Any], names: Sequence[str]) -> None:
        self._matrix = matrix
        self._index = {name: j for j, name in enumerate(names)}

    def __getitem__(self, name: str) -> Values:
        return self._matrix[:, self._index[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


@dataclass(frozen=True)
class Table:
    """The request's rows by column (only the columns present), and their number.

    ``matrix``: the same values as one ``(n, len(matrix_of))`` float64 array, when the body
    held exactly the columns ``matrix_of`` (a model's all-numeric inputs) and every cell
    was a JSON number; ``columns`` then holds views of it.
    """

    n: int
    columns: Mapping[str, Values]
    matrix: NDArray[np.float64] | None = None
    matrix_of: tuple[str, ...] = ()


def _where(row: int, name: str) -> str:
    return f"row {row}, column {name!r}"


def _numbers(col: Column, values: Values) -> NDArray[np.float64]:
    """A numeric column as float64 (missing → NaN), or 422 naming the first bad cell."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "fiub":
            raise InvalidInput(f"column {col.name!r}: expected numbers, got {values.dtype}")
        out = values.astype(np.float64)
    else:
        kinds = set(map(type, values))
        if not kinds <= _NUMBER_TYPES:
            return _numbers_slow(col, values)
        out = np.array(values, dtype=np.float64)
    if not col.nullable and not np.isfinite(out).all():
        row = int(np.flatnonzero(~np.isfinite(out))[0])
        raise InvalidInput(f"{_where(row, col.name)}: a finite number is required")
    return out


def _numbers_slow(col: Column, values: list[Any]) -> NDArray[np.float64]:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        t = type(v)
        if t is float or t is int:
            out[i] = v
        elif v is None:
            if not col.nullable:
                raise InvalidInput(f"{_where(i, col.name)}: a value is required, got null")
            out[i] = math.nan
        elif t is bool and col.boolean:
            out[i] = float(v)
        elif v is ABSENT:
            raise _absent(i, col.name)
        else:
            raise InvalidInput(f"{_where(i, col.name)}: expected a number, got {_json_type(v)}")
    return out


def numeric_matrix(
    columns: Sequence[Column], table: Table, dtype: type[np.floating[Any]] | type[np.integer[Any]]
) -> NDArray[Any]:
    """The ``(n, F)`` matrix of all-numeric ``columns`` in ``dtype``.

    One conversion when every value is a JSON number (the common case: one pass to check
    the types, one ``np.array``); otherwise column by column, which names the first bad
    cell (a string, a boolean, a null where none is allowed, a missing value).
    """
    if table.matrix is not None and len(columns) == len(table.matrix_of):
        if all(c.name == m for c, m in zip(columns, table.matrix_of, strict=True)):
            X = table.matrix
            if all(c.nullable for c in columns) or np.isfinite(X).all():
                return _cast(columns, X, dtype)
    values = [column_values(table, c.name) for c in columns]
    if all(type(v) is list for v in values):
        kinds = {type(x) for v in values for x in v}
        if kinds <= _NUMBER_TYPES:
            out = np.array(values, dtype=np.float64)
            if out.ndim == 2 and (all(c.nullable for c in columns) or np.isfinite(out).all()):
                return _cast(columns, out.T, dtype)
    cols = [_numbers(c, v) for c, v in zip(columns, values, strict=True)]
    return _cast(columns, np.array(cols, dtype=np.float64).T, dtype)


def _cast(
    columns: Sequence[Column],
    X: NDArray[np.float64],
    dtype: type[np.floating[Any]] | type[np.integer[Any]],
) -> NDArray[Any]:
    if dtype is np.float32:  # a value beyond float32 would become ±inf: refused by its cell
        _fits_float32([c.name for c in columns], X)
    return np.ascontiguousarray(X, dtype=dtype)


def _json_type(v: Any) -> str:
    names = {str: "a string", bool: "a boolean", list: "an array", dict: "an object"}
    return names.get(type(v), type(v).__name__)


def _label_text(v: Any) -> str | None:
    """A categorical value as training saw it (``plain_label`` then ``str``)."""
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            v = int(v)
    return str(v)


def _codes(col: Column, values: Values, strict: bool) -> NDArray[np.float64]:
    """A categorical column as its training codes; unknown → ``other`` (or 422 if strict)."""
    assert col.levels is not None
    lookup = col.levels
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if type(v) is str:
            text: str | None = v
        elif v is ABSENT:
            raise _absent(i, col.name)
        elif isinstance(v, list | dict):
            raise InvalidInput(f"{_where(i, col.name)}: expected a category, got {_json_type(v)}")
        else:
            text = _label_text(v)
        if text is None:
            out[i] = -1.0
            continue
        code = lookup.get(text)
        if code is None:
            if strict:
                raise InvalidInput(
                    f"{_where(i, col.name)}: unknown category {text[:100]!r} "
                    "(this endpoint refuses categories the model never saw)"
                )
            code = col.other
        out[i] = code
    return out


def _datetime_parts(col: Column, values: Values) -> list[NDArray[np.float64]]:
    """Date parts as training computed them (pandas, off the numeric hot path)."""
    import pandas as pd

    from aiaas.automl.preprocess import _dt_part, _to_datetime

    for i, v in enumerate(values):
        if v is ABSENT:
            raise _absent(i, col.name)
        if v is not None and not isinstance(v, str | int | float):
            raise InvalidInput(f"{_where(i, col.name)}: expected a date, got {_json_type(v)}")
    dt = _to_datetime(pd.Series(list(values), dtype="object"))
    return [_dt_part(dt, p) for p in col.parts]


def _strings(col: Column, values: Values) -> NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is ABSENT:
            raise _absent(i, col.name)
        if isinstance(v, list | dict):
            raise InvalidInput(f"{_where(i, col.name)}: expected a string, got {_json_type(v)}")
        text = _label_text(v)
        if text is None and not col.nullable:
            raise InvalidInput(f"{_where(i, col.name)}: a value is required, got null")
        out[i] = "" if text is None else text
    return out


def column_values(table: Table, name: str) -> Values:
    values = table.columns.get(name)
    if values is None:
        raise InvalidInput(f"column {name!r} is missing")
    return values


class Predictor:
    """One model version, loaded; :meth:`predict` is safe to call from any thread."""

    def __init__(
        self,
        version: VersionView,
        *,
        columns: Sequence[Column],
        known: Sequence[str],
        run: Callable[[Table, bool], NDArray[Any]],
        nbytes: int,
    ) -> None:
        self.version = version
        self.id = version.id
        self.number = version.number
        self.task = version.task
        self.columns = tuple(columns)
        self.required = tuple(c.name for c in self.columns)
        #: the signature's columns in order (rows sent as lists follow it)
        self.order = tuple(known) or self.required
        self.known = frozenset(known) | frozenset(self.required)
        #: the columns a body may carry as one number matrix (every input is a number)
        self.numeric: tuple[str, ...] | None = (
            self.required
            if self.columns and all(c.kind == "numeric" for c in self.columns)
            else None
        )
        classes = version.signature.get("classes")
        self.classes: list[Any] = list(classes) if isinstance(classes, list) else []
        self.class_keys = [str(c) for c in self.classes]
        self.classification = self.task != "regression"
        self._run = run
        self.nbytes = nbytes

    def predict(self, table: Table, *, strict_categories: bool) -> NDArray[Any]:
        """``(n, K)`` probabilities (classification) or ``(n,)`` values (regression), in
        the model's float type."""
        return self._run(table, strict_categories)


# --------------------------------------------------------------------------- loading


def load(store: ArtifactStore, version: VersionView, *, threads: int) -> Predictor:
    """Read a version's artifacts from the store and build its predictor."""
    files = set(version.artifacts)
    try:
        if "encoding.json" in files:
            return _load_trained(store, version, files, threads)
        if "model.onnx" in files and isinstance(version.signature.get("onnx"), dict):
            return _load_uploaded(store, version, threads)
    except (InvalidInput, ModelLoadError):
        raise
    except Exception as exc:
        raise ModelLoadError(f"{type(exc).__name__}: {exc}"[:300]) from exc
    raise ModelLoadError("the version has neither a trained model nor an ONNX upload")


def _get(store: ArtifactStore, version: VersionView, name: str) -> bytes:
    return store.get_bytes(version.org_id, f"{version.storage_prefix}/{name}")


def _session(data: bytes, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def _trained_columns(encoding: dict[str, Any]) -> list[Column]:
    columns = []
    for spec in encoding.get("columns") or []:
        kind = spec.get("kind")
        name = str(spec.get("name"))
        if kind == "numeric":
            columns.append(Column(name, "numeric", True, boolean=spec.get("dtype") == "boolean"))
        elif kind == "categorical":
            levels = {str(v): float(i) for i, v in enumerate(spec.get("levels") or [])}
            other = float(len(levels)) if spec.get("other") else -1.0
            columns.append(Column(name, "categorical", True, levels=levels, other=other))
        elif kind == "datetime":
            columns.append(Column(name, "datetime", True, parts=tuple(spec.get("parts") or ())))
    return columns


def _fits_float32(names: Sequence[str], X: NDArray[np.float64]) -> NDArray[np.float64]:
    """``X`` (``(n,)`` or ``(n, F)``), once no value is beyond float32's range; else a 422
    naming the first such cell. The cast to float32 would make it ±inf: the native members
    refuse that ("Input contains infinity") and an ONNX graph answers NaN or a saturated
    value, served with a 200 (``{"value": null}``)."""
    big = np.abs(X) > _FLOAT32_MAX
    if big.any():
        row, col = (int(i) for i in np.argwhere(big.reshape(len(X), -1))[0])
        value = float(X.reshape(len(X), -1)[row, col])
        raise InvalidInput(
            f"{_where(row, names[col])}: {value:g} is out of the model's range "
            "(float32: at most 3.4e+38 in magnitude)"
        )
    return X


def _trained_numbers(names: Sequence[str], X: NDArray[np.float64]) -> NDArray[np.float64]:
    """Numeric features as :class:`~aiaas.automl.preprocess.TabularPreprocessor` makes them
    before its float32 cast: ±inf is missing (NaN), and every value must fit float32."""
    return _fits_float32(names, np.where(np.isinf(X), np.nan, X))


def _encoder(columns: Sequence[Column]) -> Callable[[Table, bool], NDArray[np.float32]]:
    """Table → the float32 feature matrix the trained model's members take."""
    all_numeric = all(c.kind == "numeric" for c in columns)
    names = [c.name for c in columns]

    def encode(table: Table, strict: bool) -> NDArray[np.float32]:
        if all_numeric:
            X = _trained_numbers(names, numeric_matrix(columns, table, np.float64))
            return np.asarray(X, dtype=np.float32)
        parts: list[NDArray[np.float64]] = []
        for c in columns:
            values = column_values(table, c.name)
            if c.kind == "numeric":
                parts.append(_trained_numbers([c.name], _numbers(c, values)))
            elif c.kind == "categorical":
                parts.append(_codes(c, values, strict))
            else:
                parts.extend(_datetime_parts(c, values))
        out = np.column_stack(parts) if parts else np.empty((table.n, 0))
        return np.asarray(out, dtype=np.float32)

    return encode


def _load_trained(
    store: ArtifactStore, version: VersionView, files: set[str], threads: int
) -> Predictor:
    encoding = json.loads(_get(store, version, "encoding.json"))
    columns = _trained_columns(encoding)
    encode = _encoder(columns)
    regression = version.task == "regression"
    known = [str(c.get("name")) for c in version.signature.get("inputs") or []]
    if "model.onnx" in files:
        data = _get(store, version, "model.onnx")
        session = _session(data, threads)
        output = session.get_outputs()[0].name
        feed = session.get_inputs()[0].name

        def run(table: Table, strict: bool) -> NDArray[Any]:
            X = encode(table, strict)
            out = np.asarray(session.run([output], {feed: X})[0])
            return _finish(out, regression, normalize=True)

        nbytes = 3 * len(data)
    else:
        model = _native_model(store, version)

        def run(table: Table, strict: bool) -> NDArray[Any]:
            raw = model._raw(encode(table, strict), "native")
            return _finish(raw, regression, normalize=True)

        nbytes = 4 * version.size_bytes
    return Predictor(version, columns=columns, known=known, run=run, nbytes=nbytes)


_NATIVE_LOCK = threading.Lock()


def _native_model(store: ArtifactStore, version: VersionView) -> Any:
    """The skops model (platform-trained, trusted types only), its members on one thread."""
    from aiaas.automl import model as automl_model

    with tempfile.TemporaryDirectory(prefix="aiaas-serve-") as tmp, _NATIVE_LOCK:
        root = Path(tmp)
        for name in version.artifacts:
            if name.endswith(".onnx"):
                continue
            (root / name).write_bytes(_get(store, version, name))
        manifest = json.loads((root / "manifest.json").read_text())
        manifest["files"] = {
            k: v for k, v in manifest.get("files", {}).items() if not k.endswith(".onnx")
        }
        (root / "manifest.json").write_text(json.dumps(manifest))
        model = automl_model.load(root)
    for member in model.members:
        for param in ("n_jobs", "num_threads", "thread_count"):
            if param in getattr(member, "get_params", dict)():
                member.set_params(**{param: 1})
    return model


def _finish(out: NDArray[Any], regression: bool, *, normalize: bool) -> NDArray[Any]:
    """The model's output in its own float type (float32 from ONNX prints as float32)."""
    if out.dtype.kind != "f":
        out = out.astype(np.float64)
    if regression:
        return out.reshape(-1)
    if out.ndim == 1:  # a single probability column: P(positive)
        out = np.column_stack([1 - out, out])
    if not normalize:
        return out
    total = np.clip(out.sum(axis=1, keepdims=True), 1e-15, None)
    return np.asarray(out / total, dtype=out.dtype)


def _uploaded_columns(signature: dict[str, Any]) -> list[Column]:
    columns = []
    for col in signature.get("inputs") or []:
        if not col.get("required", col.get("used", True)):
            continue
        kind = "string" if col.get("kind") == "categorical" else "numeric"
        columns.append(
            Column(
                str(col["name"]),
                kind,
                bool(col.get("nullable", False)),
                boolean=col.get("type") in ("bool", "boolean"),
            )
        )
    return columns


def _load_uploaded(store: ArtifactStore, version: VersionView, threads: int) -> Predictor:
    spec: dict[str, Any] = version.signature["onnx"]
    data = _get(store, version, str(spec.get("file") or "model.onnx"))
    session = _session(data, threads)
    columns = _uploaded_columns(version.signature)
    regression = version.task == "regression"
    want = spec.get("value") if regression else spec.get("probabilities")
    if not want:
        raise ModelLoadError("the signature names no output to serve")
    outputs = [str(want)]
    graph_inputs = {i.name: i for i in session.get_inputs()}
    if spec.get("layout") == "matrix":
        feed = str(spec["input"])
        dtype = _NUMPY_DTYPES.get(str(spec.get("dtype")), np.float32)

        def feeds(table: Table, strict: bool) -> dict[str, NDArray[Any]]:
            return {feed: numeric_matrix(columns, table, dtype)}

    else:
        shapes = {
            c.name: (len(graph_inputs[c.name].shape), _ORT_TYPES.get(graph_inputs[c.name].type))
            for c in columns
        }

        def feeds(table: Table, strict: bool) -> dict[str, NDArray[Any]]:
            out: dict[str, NDArray[Any]] = {}
            for c in columns:
                rank, np_type = shapes[c.name]
                values = column_values(table, c.name)
                if np_type is np.object_:
                    arr: NDArray[Any] = _strings(c, values)
                else:
                    numbers = _numbers(c, values)
                    if np_type in (None, np.float32):
                        _fits_float32([c.name], numbers)
                    arr = numbers.astype(np_type or np.float32, copy=False)
                out[c.name] = arr.reshape(-1, 1) if rank == 2 else arr
            return out

    def run(table: Table, strict: bool) -> NDArray[Any]:
        out = np.asarray(session.run(outputs, feeds(table, strict))[0])
        return _finish(out, regression, normalize=False)

    known = [str(c.get("name")) for c in version.signature.get("inputs") or []]
    return Predictor(version, columns=columns, known=known, run=run, nbytes=3 * len(data))
