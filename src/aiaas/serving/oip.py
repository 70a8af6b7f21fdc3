"""The Open Inference Protocol (KServe V2) over HTTP/REST for aiaas endpoints.

A "model" of the protocol is an endpoint: its name is the endpoint's name, its versions the
model versions the endpoint routes traffic to (a version it does not route to is a 404).
This module is the protocol, without FastAPI: :func:`infer` is called by the routes of
:mod:`aiaas.serving.oip_router` and by the serving gateway's fast path alike.

Requests (``$inference_request``) are decoded into a :class:`~aiaas.serving.predictor.Table`:

- one tensor per column (MLServer's ``content_type: "pd"``): names are the model's input
  columns, each of shape ``[N]`` or ``[N, 1]``; or
- one tensor ``[N, F]`` (any name that is not a column's) whose columns are the signature's
  inputs in order (``F`` = all of them, or only those the model takes), numeric inputs only.

Tensor data is JSON (flat or nested, row-major) or, with the binary tensor data extension,
raw little-endian bytes after the JSON header (``Inference-Header-Content-Length`` gives its
length; an input says ``parameters.binary_data_size``; a BYTES element is a 4-byte length
and its bytes).

Invariants:

- a tensor's data holds exactly ``prod(shape)`` elements; a shape never sizes anything (a
  binary size is checked against it before its bytes are read), so a huge shape is a
  refusal, never an allocation;
- the binary parts are consumed in input order and must use the body exactly;
- input names are the columns of the versions that may answer (every routed version's
  for an unversioned request): an unknown name is refused, not ignored;
- every refusal is the protocol's ``{"error": "<message>"}``: 400 for a bad payload
  (aiaas' 422 ``InvalidInput`` included), 404 for an unknown endpoint or version (another
  organization's endpoint included), 503 for a model that cannot be loaded;
- outputs are ``probabilities`` ``[N, K]`` and ``label`` ``[N]`` (classifiers) or ``value``
  ``[N]`` (regressors), in the float type the metadata declares (FP64 for a version served
  by its native model, FP32 for ONNX); the response's ``parameters`` carry the prediction
  ids: ``prediction_id`` for one row, else ``prediction_id_prefix`` (row ``i`` is
  ``prefix + str(i)``);
- a prediction is logged, shadowed and metered exactly as ``/predict`` does
  (:meth:`aiaas.serving.core.Serving.after`); a refusal once the endpoint is known is
  counted by its status (``ServingMetrics.refused``).
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import structlog
from numpy.typing import NDArray

import aiaas
from aiaas.auth.principal import Principal
from aiaas.errors import AiaasError, InvalidInput, NotFound, ServiceUnavailable
from aiaas.serving import payload
from aiaas.serving.core import Answer, Serving, answer_headers, choose, prediction_ids
from aiaas.serving.predictor import Predictor, Table
from aiaas.serving.views import EndpointView, VersionView

log = structlog.get_logger("aiaas.serving")

SERVER_NAME = "aiaas"
EXTENSIONS = ("binary_tensor_data",)
#: The binary extension's header: the JSON part's length in bytes (lower case, as ASGI).
HEADER_LENGTH = "inference-header-content-length"
JSON_TYPE = (b"content-type", b"application/json")
BINARY_TYPE = (b"content-type", b"application/octet-stream")
MAX_RANK = 8
MAX_INPUTS = 10_000
MAX_NAME = 1000
_LISTED = 20  # names shown in an error message at most
_INTERNAL = "an unexpected error occurred; quote the request id when reporting it"
#: Numeric datatypes as little-endian numpy types (the binary extension's byte order).
NUMPY_TYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
DATATYPES = frozenset({*NUMPY_TYPES, "BYTES"})
#: Signature column types (trained: pandas kinds; uploaded: ONNX element types) → datatype.
_SIGNATURE_TYPES = {
    "number": "FP64",
    "integer": "INT64",
    "boolean": "BOOL",
    "string": "BYTES",
    "datetime": "BYTES",
    "float": "FP32",
    "double": "FP64",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
}
_MATRIX_TYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Tensor:
    """One decoded input: ``data`` is flat (row-major) and holds ``prod(shape)`` elements —
    a numpy array for the numeric datatypes, a list of ``str`` for BYTES."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: NDArray[Any] | list[str]


@dataclass(frozen=True, slots=True)
class Requested:
    """A requested output; ``binary`` None: the request-level ``binary_data_output``."""

    name: str
    binary: bool | None


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[Requested] | None
    binary_output: bool


@dataclass(frozen=True, slots=True)
class OutputSpec:
    name: str
    datatype: str
    shape: list[int]


# --------------------------------------------------------------------------- answers


def json_answer(status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
    return Answer(status, orjson.dumps(obj), [JSON_TYPE, *(headers or [])])


def error_answer(exc: AiaasError) -> Answer:
    """The protocol's error body; aiaas' 422 (a request that does not fit) is a 400 here."""
    status = 400 if isinstance(exc, InvalidInput) else exc.status
    headers = [(b"www-authenticate", b"Bearer")] if status == 401 else []
    return json_answer(status, {"error": exc.detail}, headers)


def _names(names: Sequence[str]) -> str:
    """Names for an error message: the first few, and how many more."""
    shown = ", ".join(repr(str(n)[:100]) for n in names[:_LISTED])
    more = len(names) - _LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


# --------------------------------------------------------------------------- the request


class _Binary:
    """The bytes after the JSON header, handed out in input order (views: no copies)."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int, name: str) -> memoryview:
        end = self.offset + size
        if end > len(self.data):
            raise InvalidInput(
                f"input {name!r}: its binary data ({size} bytes) runs past the end of the "
                f"body ({len(self.data) - self.offset} bytes left)"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def finish(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise InvalidInput(f"the body has {left} bytes after the inputs' binary data")


def split_body(body: bytes, headers: Mapping[str, str]) -> tuple[memoryview, memoryview]:
    """``(JSON header, binary part)`` as views of ``body``; without
    ``Inference-Header-Content-Length`` the whole body is JSON."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
        raise InvalidInput("compressed request bodies are not supported; send it uncompressed")
    raw = lowered.get(HEADER_LENGTH)
    view = memoryview(body)
    if raw is None:
        return view, view[len(body) :]
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidInput("Inference-Header-Content-Length must be a number of bytes")
    length = int(raw)
    if length > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length ({length}) is longer than the body "
            f"({len(body)} bytes)"
        )
    return view[:length], view[length:]


def parse_request(body: bytes, headers: Mapping[str, str]) -> InferRequest:
    """The inference request in ``body`` (JSON, or JSON then binary tensor data)."""
    head, rest = split_body(body, headers)
    if not head:
        raise InvalidInput('the request body is empty; send {"inputs": [...]}')
    try:
        obj = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request is not valid JSON: {exc}"[:300]) from None
    if not isinstance(obj, dict):
        raise InvalidInput("the request must be a JSON object")
    raw_inputs = obj.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput('"inputs" must be a non-empty list of tensors')
    if len(raw_inputs) > MAX_INPUTS:
        raise InvalidInput(f"a request may have at most {MAX_INPUTS} inputs")
    binary = _Binary(rest)
    inputs = [_input(raw, i, binary) for i, raw in enumerate(raw_inputs)]
    binary.finish()
    request_id = obj.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput('"id" must be a string')
    params = _parameters(obj.get("parameters"), "the request")
    return InferRequest(
        request_id,
        inputs,
        _requested(obj.get("outputs")),
        _flag(params, "binary_data_output", "the request") or False,
    )


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f'"parameters" of {where} must be an object')
    return raw


def _flag(params: dict[str, Any], key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"parameter {key!r} of {where} must be true or false")
    return value


def _input(raw: Any, index: int, binary: _Binary) -> Tensor:
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{index}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise InvalidInput(f"inputs[{index}] needs a name (a string of 1 to {MAX_NAME} chars)")
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        shown = str(datatype)[:50]
        raise InvalidInput(
            f"input {name!r}: unsupported datatype {shown!r}; "
            f"use one of {_names(sorted(DATATYPES))}"
        )
    shape = _shape(raw.get("shape"), name)
    count = math.prod(shape)
    size = _parameters(raw.get("parameters"), f"input {name!r}").get("binary_data_size")
    if size is not None:
        if "data" in raw:
            raise InvalidInput(f"input {name!r} has both data and binary_data_size")
        if type(size) is not int or size < 0:
            raise InvalidInput(f"input {name!r}: binary_data_size must be a number of bytes")
        data = _from_binary(binary.take(size, name), datatype, count, name)
    elif "data" in raw:
        data = _from_json(raw["data"], datatype, name)
    else:
        raise InvalidInput(f"input {name!r} has no data")
    if len(data) != count:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} holds {count} elements, its data {len(data)}"
        )
    return Tensor(name, datatype, shape, data)


def _shape(raw: Any, name: str) -> tuple[int, ...]:
    if (
        not isinstance(raw, list)
        or not 1 <= len(raw) <= MAX_RANK
        or not all(type(d) is int and d >= 0 for d in raw)
    ):
        raise InvalidInput(
            f"input {name!r}: shape must be a list of 1 to {MAX_RANK} non-negative integers"
        )
    return tuple(raw)


def _flatten(data: Any) -> list[Any]:
    """Nested lists, row-major, as one flat list (iterative: nesting depth is unbounded)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def _from_json(data: Any, datatype: str, name: str) -> NDArray[Any] | list[str]:
    flat = _flatten(data)
    if datatype == "BYTES":
        if not all(type(v) is str for v in flat):
            raise InvalidInput(f"input {name!r}: BYTES data must be strings")
        return flat
    if datatype == "BOOL" and not all(type(v) is bool for v in flat):
        raise InvalidInput(f"input {name!r}: BOOL data must be true or false")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(flat, dtype=NUMPY_TYPES[datatype])
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"input {name!r}: the data does not fit {datatype}: {exc}"[:300]
        ) from None


def _from_binary(raw: memoryview, datatype: str, count: int, name: str) -> NDArray[Any] | list[str]:
    if datatype == "BYTES":
        return _bytes_elements(raw, count, name)
    dtype = NUMPY_TYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: binary_data_size is {len(raw)} bytes; {count} {datatype} "
            f"elements take {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype)


def _bytes_elements(raw: memoryview, count: int, name: str) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length, then that many UTF-8 bytes."""
    if count * _LENGTH.size > len(raw):
        raise InvalidInput(
            f"input {name!r}: {count} BYTES elements need more than {len(raw)} bytes"
        )
    out: list[str] = []
    pos = 0
    try:
        for _ in range(count):
            (length,) = _LENGTH.unpack_from(raw, pos)
            pos += _LENGTH.size
            if pos + length > len(raw):
                raise InvalidInput(f"input {name!r}: a BYTES element runs past its binary data")
            out.append(str(raw[pos : pos + length], "utf-8"))
            pos += length
    except (struct.error, UnicodeDecodeError) as exc:
        raise InvalidInput(f"input {name!r}: malformed BYTES data: {exc}"[:300]) from None
    if pos != len(raw):
        raise InvalidInput(
            f"input {name!r}: binary_data_size is {len(raw)} bytes; its elements take {pos}"
        )
    return out


def _requested(raw: Any) -> list[Requested] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_INPUTS:
        raise InvalidInput('"outputs" must be a list of {"name": ...} objects')
    found: list[Requested] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f'outputs[{i}] must be an object with a "name"')
        where = f"output {item['name'][:100]!r}"
        params = _parameters(item.get("parameters"), where)
        if "classification" in params:
            raise InvalidInput(f"{where}: the classification extension is not supported")
        found.append(Requested(item["name"], _flag(params, "binary_data", where)))
    return found


# --------------------------------------------------------------------------- request → table


def to_table(
    request: InferRequest, predictor: Predictor, known: frozenset[str], *, max_rows: int
) -> Table:
    """The request's rows by column; ``known``: the input names the endpoint accepts."""
    inputs = request.inputs
    first = inputs[0]
    if len(inputs) == 1 and len(first.shape) == 2 and first.name not in known:
        table = _matrix_table(first, predictor)
    else:
        table = _columns_table(inputs, predictor, known)
    if table.n == 0:
        raise InvalidInput("the request has no rows")
    if table.n > max_rows:
        raise InvalidInput(f"a request may carry at most {max_rows} rows, this one has {table.n}")
    return table


def _columns_table(inputs: list[Tensor], predictor: Predictor, known: frozenset[str]) -> Table:
    kinds = {c.name: c.kind for c in predictor.columns}
    columns: dict[str, Any] = {}
    rows: int | None = None
    for t in inputs:
        if t.name not in known:
            raise InvalidInput(
                f"unknown input {t.name[:100]!r}; "
                f"the model's inputs are {_names(predictor.required)}"
            )
        if t.name in columns:
            raise InvalidInput(f"input {t.name!r} is given twice")
        if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
            raise InvalidInput(
                f"input {t.name!r} must have shape [N] or [N, 1], not {list(t.shape)}"
            )
        if rows is not None and t.shape[0] != rows:
            raise InvalidInput(f"the inputs differ in rows: {rows} and {t.shape[0]} ({t.name!r})")
        rows = t.shape[0]
        kind = kinds.get(t.name)
        if kind == "numeric" and t.datatype == "BYTES":
            raise InvalidInput(f"input {t.name!r} is numeric; send it as FP64, FP32, INT64 or BOOL")
        data = t.data
        # numbers stay arrays for numeric columns; categories and dates are read per value
        columns[t.name] = data if kind == "numeric" or isinstance(data, list) else data.tolist()
    missing = [c for c in predictor.required if c not in columns]
    if missing:
        raise InvalidInput(
            f"missing input {_names(missing)}; the model's inputs are {_names(predictor.required)}"
        )
    return Table(rows or 0, columns)


def _matrix_table(t: Tensor, predictor: Predictor) -> Table:
    """One ``[N, F]`` tensor: its columns are the signature's inputs in order (all of them,
    or only those the model takes)."""
    order = list(predictor.order)
    required = list(predictor.required)
    rows, width = t.shape
    if width == len(order):
        names = order
    elif width == len(required):
        names = required
    else:
        raise InvalidInput(
            f"input {t.name[:100]!r} has {width} columns; the model takes {len(required)} "
            f"({_names(required)}), or send one tensor per column"
        )
    kinds = {c.name: c.kind for c in predictor.columns}
    other = [c for c in names if kinds.get(c, "numeric") != "numeric"]
    if other:
        raise InvalidInput(
            f"one [N, F] tensor takes numbers only ({other[0]!r} is {kinds[other[0]]}); "
            "send one tensor per column"
        )
    if isinstance(t.data, list):
        raise InvalidInput(f"input {t.name[:100]!r}: a [N, F] tensor must be numeric, not BYTES")
    matrix = t.data.reshape(rows, width)
    return Table(rows, {name: matrix[:, j] for j, name in enumerate(names)})


# --------------------------------------------------------------------------- outputs


def float_type(version: VersionView) -> str:
    """FP64 for a version served by its native model (no ONNX graph), else FP32."""
    native = "encoding.json" in version.artifacts and "model.onnx" not in version.artifacts
    return "FP64" if native else "FP32"


def label_type(classes: list[Any]) -> str:
    """INT64 when every class is an integer, else BYTES (the class as text)."""
    ints = all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    return "INT64" if classes and ints else "BYTES"


def output_specs(version: VersionView) -> list[OutputSpec]:
    """What a version answers, in the order an answer lists them by default."""
    real = float_type(version)
    if version.task == "regression":
        return [OutputSpec("value", real, [-1])]
    classes = version.signature.get("classes")
    classes = list(classes) if isinstance(classes, list) else []
    return [
        OutputSpec("probabilities", real, [-1, len(classes) or -1]),
        OutputSpec("label", label_type(classes), [-1]),
    ]


def _check_outputs(request: InferRequest, specs: list[OutputSpec]) -> None:
    names = [s.name for s in specs]
    for want in request.outputs or []:
        if want.name not in names:
            raise InvalidInput(
                f"unknown output {want.name[:100]!r}; the model's outputs are {_names(names)}"
            )


def _produced(out: NDArray[Any], predictor: Predictor, specs: list[OutputSpec]) -> dict[str, Any]:
    """``name → (datatype, shape, flat data)`` of every output."""
    n = int(out.shape[0])
    types = {s.name: s.datatype for s in specs}
    if not predictor.classification:
        values = np.ascontiguousarray(out.reshape(-1), dtype=NUMPY_TYPES[types["value"]])
        return {"value": (types["value"], [n], values)}
    probs = np.ascontiguousarray(out, dtype=NUMPY_TYPES[types["probabilities"]])
    picks = np.argmax(out, axis=1)
    if types["label"] == "INT64":
        labels: Any = np.asarray(predictor.classes, dtype=np.int64)[picks]
    else:
        labels = [predictor.class_keys[i] for i in picks.tolist()]
    return {
        "probabilities": (types["probabilities"], [n, int(out.shape[1])], probs.reshape(-1)),
        "label": (types["label"], [n], labels),
    }


def _raw(datatype: str, data: Any) -> bytes:
    """A tensor as the binary extension sends it."""
    if datatype == "BYTES":
        parts = []
        for text in data:
            encoded = text.encode("utf-8")
            parts.append(_LENGTH.pack(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    return np.ascontiguousarray(data, dtype=NUMPY_TYPES[datatype]).tobytes()


def _id_parameters(ids: list[str]) -> dict[str, str]:
    if len(ids) == 1:
        return {"prediction_id": ids[0]}
    return {"prediction_id_prefix": ids[0].rsplit("-", 1)[0] + "-"}


def encode_response(
    request: InferRequest,
    view: EndpointView,
    predictor: Predictor,
    out: NDArray[Any],
    ids: list[str],
    headers: list[tuple[bytes, bytes]],
) -> Answer:
    """The ``$inference_response``: JSON, or a JSON header then the binary outputs."""
    produced = _produced(out, predictor, output_specs(predictor.version))
    wanted = request.outputs or [Requested(name, None) for name in produced]
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for want in wanted:
        datatype, shape, data = produced[want.name]
        entry: dict[str, Any] = {"name": want.name, "datatype": datatype, "shape": shape}
        if want.binary if want.binary is not None else request.binary_output:
            blob = _raw(datatype, data)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data
        entries.append(entry)
    head: dict[str, Any] = {"model_name": view.name, "model_version": str(predictor.number)}
    if request.id is not None:
        head["id"] = request.id
    head["parameters"] = _id_parameters(ids)
    head["outputs"] = entries
    body = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return Answer(200, body, [JSON_TYPE, *headers])
    length = (HEADER_LENGTH.encode(), str(len(body)).encode())
    return Answer(200, body + b"".join(blobs), [BINARY_TYPE, length, *headers])


# --------------------------------------------------------------------------- metadata


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": aiaas.__version__, "extensions": list(EXTENSIONS)}


def served(view: EndpointView, version: int | None) -> list[VersionView]:
    """The versions the endpoint routes to (all of them, or ``version``: 404 if not routed)."""
    routed = [v for v, _ in view.routes]
    if version is None:
        return routed
    found = [v for v in routed if v.number == version]
    if not found:
        raise NotFound("endpoint version", f"{view.name}/{version}")
    return found


def _required(version: VersionView) -> list[dict[str, Any]]:
    """The signature's columns the model takes (as the predictor decides it)."""
    return [
        c for c in version.signature.get("inputs") or [] if c.get("required", c.get("used", True))
    ]


def _column_type(col: dict[str, Any]) -> str:
    found = _SIGNATURE_TYPES.get(str(col.get("type")))
    if found is not None:
        return found
    return "FP64" if col.get("kind") == "numeric" else "BYTES"


def input_metadata(versions: list[VersionView]) -> list[dict[str, Any]]:
    """One ``[-1]`` tensor per column the versions take (in order of first appearance), or
    the ``[-1, F]`` tensor of an uploaded model fed as one matrix."""
    spec = versions[0].signature.get("onnx")
    if isinstance(spec, dict) and spec.get("layout") == "matrix":
        width = len(versions[0].signature.get("inputs") or [])
        datatype = _MATRIX_TYPES.get(str(spec.get("dtype")), "FP32")
        return [{"name": str(spec.get("input")), "datatype": datatype, "shape": [-1, width]}]
    seen: dict[str, dict[str, Any]] = {}
    for version in versions:
        for col in _required(version):
            name = str(col.get("name"))
            if name not in seen:
                seen[name] = {"name": name, "datatype": _column_type(col), "shape": [-1]}
    return list(seen.values())


def model_metadata(view: EndpointView, version: int | None) -> dict[str, Any]:
    """``$metadata_model_response`` of an endpoint (or of one version it routes to)."""
    versions = served(view, version)
    first = versions[0]
    platform = "onnx_onnxv1" if "model.onnx" in first.artifacts else SERVER_NAME
    return {
        "name": view.name,
        "versions": [str(v.number) for v in versions],
        "platform": platform,
        "inputs": input_metadata(versions),
        "outputs": [
            {"name": s.name, "datatype": s.datatype, "shape": s.shape} for s in output_specs(first)
        ],
    }


async def model_ready(
    serving: Serving, principal: Principal, name: str, version: int | None
) -> Answer:
    """200 ``{"name", "ready": true}`` when every version served loads, else 503."""
    try:
        view = await serving.endpoint(principal, name)
        for chosen in served(view, version):
            await serving.predictor(chosen)
    except ServiceUnavailable as exc:
        return json_answer(503, {"name": name, "ready": False, "error": exc.detail})
    except AiaasError as exc:
        return error_answer(exc)
    return json_answer(200, {"name": view.name, "ready": True})


async def metadata_answer(
    serving: Serving, principal: Principal, name: str, version: int | None
) -> Answer:
    try:
        view = await serving.endpoint(principal, name)
        return json_answer(200, model_metadata(view, version))
    except AiaasError as exc:
        return error_answer(exc)


# --------------------------------------------------------------------------- inference


def _known(view: EndpointView, version: int | None) -> frozenset[str]:
    """Input names the request may use: every column of the versions that may answer it."""
    names = {
        str(c.get("name")) for v in served(view, version) for c in v.signature.get("inputs") or []
    }
    return frozenset(names)


async def infer(
    serving: Serving,
    principal: Principal,
    name: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    version: int | None,
    request_id: str,
) -> Answer:
    """``POST /v2/models/{name}[/versions/{version}]/infer``, start to end; never raises:
    every refusal is an :class:`Answer` with the protocol's error body."""
    started = time.perf_counter()
    view: EndpointView | None = None
    try:
        view = await serving.endpoint(principal, name)
        chosen = served(view, version)[0] if version is not None else choose(view)
        request = parse_request(body, headers)
        _check_outputs(request, output_specs(chosen))
        predictor = await serving.predictor(chosen)
        table = to_table(
            request, predictor, _known(view, version), max_rows=serving.settings.max_rows
        )
        out = await serving.run(predictor, table, view.unknown_categories == "error")
        ids = prediction_ids(table.n)
        extra = answer_headers(predictor, payload.ignored_columns(table, predictor.known), view)
        answer = encode_response(request, view, predictor, out, ids, extra)
    except AiaasError as exc:
        answer = error_answer(exc)
        serving.metrics.refused(view, answer.status)  # counted once the endpoint is known
        return answer
    except Exception:
        log.exception("oip_infer_failed", endpoint=name[:100])
        serving.metrics.refused(view, 500)
        return json_answer(500, {"error": _INTERNAL})
    serving.after(view, predictor, table, out, ids, request_id, started)
    return answer
