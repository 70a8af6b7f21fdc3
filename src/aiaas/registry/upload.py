"""Bring your own model: an ONNX upload, checked in quarantine, turned into a signature.

:func:`with_onnx_upload` streams the multipart body to a private scratch file (at most
``registry.max_onnx_bytes``; 413 above), parses the form fields, has the file loaded,
checked and run by a sandboxed child (:mod:`aiaas.registry.onnx_worker`) and builds the
version's signature from that child's answer; only then does it hand a :class:`CheckedOnnx`
to the caller (the registry service, which stores the bytes and adds the row). The API
process never parses the file: no byte of it reaches its ONNX or protobuf parsers, and the
child's answer is re-validated field by field (:func:`graph_from_reply`).

The signature contract (what serving relies on) is built by :func:`build_signature`:

- ``layout="matrix"``: one input of rank 2, ``[N, F]`` of float, double or int64, with ``F``
  fixed (or given by the columns the user names); columns ``x0..x{F-1}`` unless the
  ``signature`` part names them;
- ``layout="columns"``: every input is one column, ``[N]`` or ``[N, 1]``, named as the
  input;
- outputs, judged by the shapes the child saw on its two-row run: probabilities
  ``[N, K]`` float (what serving answers for a classifier: required for one); a label
  ``[N]`` / ``[N, 1]``; or one float value ``[N]`` / ``[N, 1]`` (regression). A ZipMap
  output (a sequence of maps) is refused: convert with ``zipmap=False``;
- the classes are the ``signature`` part's, else the graph's own labels (of its one
  ``ai.onnx.ml`` classifier node), else ``0..K-1``.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import structlog
from starlette.requests import Request

from aiaas.data.scratch import new_work_dir, remove_work_dir
from aiaas.data.upload import receive_upload
from aiaas.errors import InvalidInput, ServiceUnavailable
from aiaas.registry.artifacts import storable
from aiaas.registry.limits import max_onnx_bytes, onnx_check_limits
from aiaas.registry.schemas import (
    CLASSES_MAX,
    ONNX_FILE,
    SIGNATURE_COLUMNS_MAX,
    OnnxUploadForm,
    SignatureHint,
    column_name_problem,
    onnx_upload_form,
)
from aiaas.sandbox import ChildPaths, ChildRun, last_json_line, run_child
from aiaas.settings import Settings

log = structlog.get_logger()
T = TypeVar("T")

WORKER = "aiaas.registry.onnx_worker"
NOT_LOADED = "the ONNX file could not be loaded"
UPLOADED_WARNING = (
    "an uploaded model: the platform neither trained nor scored it, so the version has no "
    "metrics and no training data lineage"
)
NO_PROBABILITIES = (
    "the graph has no probabilities output ([N, K] float, K >= 2), which is what the "
    "registry serves for a classifier (a label output alone is not enough)"
)
ZIPMAP = (
    "the graph's output {name!r} is a ZipMap (a sequence of maps); convert the classifier "
    "with zipmap=False (skl2onnx: options={{'zipmap': False}}; onnxmltools: zipmap=False)"
)
#: What serving feeds an [N, F] input (numbers only: strings go one column per input).
MATRIX_DTYPES = {"float": "float32", "double": "float64", "int64": "int64"}
COLUMN_TYPES = frozenset({"float", "double", "int32", "int64", "bool", "string"})
FLOAT_TYPES = frozenset({"float", "double"})
LABEL_TYPES = frozenset({"int64", "int32", "string"})
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]+")
_FILENAME_MAX = 128
_TEXT_MAX = 200  # producer name/version, type names, kept as they are otherwise
_DIMS_MAX = 32
#: Tags of ModelProto's fields (number << 3 | wire type): ir_version 1 and model_version 5
#: (varint), producer name/version, domain, doc string, graph, opset imports, metadata
#: props 14 (length-delimited), and the first byte of training_info 20 / functions 25.
MODEL_PROTO_FIRST_BYTES = frozenset(
    {0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA}
)
_ONE_COLUMN = ((), (1,), (None,))  # the shapes after the rows of a one-column input


# --------------------------------------------------------------------------- the child's answer


@dataclass(frozen=True)
class ValueInfo:
    """A graph input or output, as the child described it (re-validated)."""

    name: str
    kind: str  # "tensor", "zipmap", "sequence", "map", ...
    type: str  # "float", "int64", "string", ... (or "sequence<...>")
    shape: tuple[int | None, ...] | None  # declared; None: not a tensor / rank unknown
    seen: tuple[int, ...] | None = None  # outputs: the shape the two-row run returned

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "shape": None if self.shape is None else list(self.shape),
        }
        if self.kind != "tensor":
            entry["kind"] = self.kind
        return entry


@dataclass(frozen=True)
class GraphInfo:
    inputs: tuple[ValueInfo, ...]
    outputs: tuple[ValueInfo, ...]
    opset: tuple[tuple[str, int], ...]
    producer_name: str
    producer_version: str
    ir_version: int
    class_labels: tuple[int | str, ...] | None
    peak_rss: int = 0
    sandbox_abi: int = 0

    def report(self) -> dict[str, Any]:
        """The ``graph`` entry of the version's report."""
        return {
            "inputs": [v.as_dict() for v in self.inputs],
            "outputs": [
                {**v.as_dict(), "seen": None if v.seen is None else list(v.seen)}
                for v in self.outputs
            ],
            "opset": [{"domain": d, "version": n} for d, n in self.opset],
            "producer_name": self.producer_name,
            "producer_version": self.producer_version,
            "ir_version": self.ir_version,
        }


def _text(value: Any, limit: int = _TEXT_MAX) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:limit]


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def _dims(value: Any, *, allow_none: bool) -> tuple[int | None, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > _DIMS_MAX:
        raise TypeError("not a shape")
    dims = tuple(None if (d is None and allow_none) else _int(d) for d in value)
    if any(d is not None and d < 0 for d in dims):
        raise ValueError("a negative dimension")
    return dims


def _value(raw: Any, *, output: bool) -> ValueInfo:
    if not isinstance(raw, dict):
        raise TypeError("not an object")
    name = raw["name"]
    if not isinstance(name, str) or len(name) > 1000:
        raise TypeError("not a name")
    seen = _dims(raw.get("seen"), allow_none=False) if output else None
    return ValueInfo(
        name=name,
        kind=_text(raw["kind"], 32),
        type=_text(raw["type"], 64),
        shape=_dims(raw.get("shape"), allow_none=True),
        seen=seen if seen is None else tuple(int(d or 0) for d in seen),
    )


def _labels(raw: Any) -> tuple[int | str, ...] | None:
    if not isinstance(raw, list) or not raw or len(raw) > CLASSES_MAX:
        return None
    if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        return tuple(raw)
    if all(isinstance(x, str) and 0 < len(x) <= _TEXT_MAX for x in raw):
        return tuple(_text(x) for x in raw)
    return None


def graph_from_reply(reply: dict[str, Any]) -> GraphInfo:
    """The child's description of the graph, checked field by field (raises KeyError,
    TypeError or ValueError): the child has read the file, so it is untrusted."""
    g = reply["graph"]
    inputs, outputs = g["inputs"], g["outputs"]
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise TypeError("no inputs or outputs")
    if len(inputs) > SIGNATURE_COLUMNS_MAX or len(outputs) > SIGNATURE_COLUMNS_MAX:
        raise ValueError("too many inputs or outputs")
    opset = tuple((_text(o["domain"]), _int(o["version"])) for o in g["opset"][:100])
    return GraphInfo(
        inputs=tuple(_value(v, output=False) for v in inputs),
        outputs=tuple(_value(v, output=True) for v in outputs),
        opset=opset,
        producer_name=_text(g.get("producer_name") or ""),
        producer_version=_text(g.get("producer_version") or ""),
        ir_version=_int(g["ir_version"]),
        class_labels=_labels(g.get("class_labels")),
        peak_rss=_int(reply.get("peak_rss") or 0),
        sandbox_abi=_int(reply.get("sandbox_abi") or 0),
    )


# --------------------------------------------------------------------------- the check


def check_onnx(settings: Settings, src: Path, work: Path, *, width: int | None) -> GraphInfo:
    """Load, check and run ``src`` in a sandboxed child that reads only ``src`` and writes
    only ``work``; its graph. Any failure is a 422 "the ONNX file could not be loaded: …"."""
    limits = onnx_check_limits(settings)
    run = run_child(
        WORKER,
        {"path": str(src), "width": width},
        limits,
        ChildPaths(cwd=work, read=(src,), write=(work,)),
    )
    reply = None if (run.timed_out or run.overflow) else last_json_line(run.output)
    if reply is None:
        log.warning("onnx_check_failed", returncode=run.returncode, stderr=run.stderr[-2000:])
        raise InvalidInput(f"{NOT_LOADED}: {_crash_reason(run, limits.timeout_s)}")
    if reply.get("internal"):
        log.error("onnx_check_unexpected_error", stderr=run.stderr)
    if not reply.get("ok"):
        reason = _text(reply.get("reason") or "it was refused", 500)
        if reply.get("unavailable"):
            raise ServiceUnavailable(reason)
        raise InvalidInput(f"{NOT_LOADED}: {reason}")
    try:
        return graph_from_reply(reply)
    except (KeyError, TypeError, ValueError, AttributeError):
        log.warning("onnx_check_bad_reply", returncode=run.returncode)
        raise InvalidInput(f"{NOT_LOADED}: the checking process gave no usable answer") from None


def _crash_reason(run: ChildRun, timeout_s: float) -> str:
    if run.timed_out:
        return f"checking it took longer than {timeout_s:g} s; it was stopped"
    if run.overflow:
        return "the checking process wrote more output than allowed; it was stopped"
    if run.signal == "SIGXCPU":
        return "checking it used more CPU time than allowed; it was stopped"
    if run.signal == "SIGKILL":
        return "checking it needed more memory than allowed; it was stopped"
    if run.signal is not None:
        return f"the checking process crashed ({run.signal})"
    return "the checking process ended without an answer"


# --------------------------------------------------------------------------- the signature


@dataclass(frozen=True)
class CheckedOnnx:
    """An uploaded ONNX file that loads and runs, with what its version row is made of."""

    path: Path
    size: int
    sha256: str
    filename: str | None
    task: str
    task_given: bool  # the ``task`` form field named it (else: inferred from the outputs)
    signature: dict[str, Any]
    graph: GraphInfo
    description: str | None

    def entry(self) -> dict[str, Any]:
        """The version's one ``artifacts`` entry."""
        return {"path": ONNX_FILE, "size": self.size, "sha256": self.sha256}

    def lineage(self) -> dict[str, Any]:
        """Where the version came from: an upload, its file name and SHA-256, and the
        description given with it."""
        lineage: dict[str, Any] = {
            "source": "upload",
            "filename": self.filename,
            "sha256": self.sha256,
        }
        if self.description:
            lineage["description"] = self.description
        return lineage

    def report(self) -> dict[str, Any]:
        """The version's report (what the model card is written from): the graph as the
        check saw it, how the task was chosen, and that nobody here trained or scored it."""
        g = self.graph
        producer = " ".join(p for p in (g.producer_name, g.producer_version) if p)
        return {
            "source": "upload",
            "graph": g.report(),
            "task_inference": (
                "given with the upload" if self.task_given else "inferred from the graph's outputs"
            ),
            "pipeline": {"model": f"uploaded ONNX graph ({producer or 'unknown producer'})"},
            "warnings": [UPLOADED_WARNING],
        }


def _kind(elem: str) -> str:
    return "categorical" if elem == "string" else "numeric"


def _column(name: str, elem: str) -> dict[str, Any]:
    return {"name": name, "type": elem, "used": True, "required": True, "kind": _kind(elem)}


def _fixed_rows(value: ValueInfo) -> None:
    assert value.shape is not None
    if value.shape[0] is not None:
        raise InvalidInput(
            f"the graph's input {value.name!r} has a fixed number of rows ({value.shape[0]}); "
            "convert the model with a dynamic first dimension (None)"
        )


def _checked_types(hint: SignatureHint | None, types: dict[str, str]) -> None:
    for name, said in (hint.types if hint else {}).items():
        if said != types[name]:
            raise InvalidInput(
                f"the signature says column {name!r} is {said}; the graph takes {types[name]}"
            )


def _matrix(x: ValueInfo, hint: SignatureHint | None) -> tuple[list[dict[str, Any]], str]:
    """The columns of a ``[N, F]`` input, and its dtype."""
    assert x.shape is not None
    _fixed_rows(x)
    if x.type not in MATRIX_DTYPES:
        raise InvalidInput(
            f"the graph's input {x.name!r} holds {x.type}; an [N, F] input holds float, "
            "double or int64 (string columns are one [N] or [N, 1] input each)"
        )
    names = hint.names if hint else None
    width = x.shape[1]
    if width is None and names is None:
        raise InvalidInput(
            f"the graph's input {x.name!r} has no fixed number of columns; name the columns "
            "in the signature part"
        )
    if names is not None and width is not None and len(names) != width:
        raise InvalidInput(
            f"the signature names {len(names)} columns; the graph's input {x.name!r} takes {width}"
        )
    count = width if width is not None else len(names or ())
    if count > SIGNATURE_COLUMNS_MAX:
        raise InvalidInput(f"the graph's input takes more than {SIGNATURE_COLUMNS_MAX} columns")
    columns = names if names is not None else [f"x{i}" for i in range(count)]
    _checked_types(hint, dict.fromkeys(columns, x.type))
    return [_column(name, x.type) for name in columns], MATRIX_DTYPES[x.type]


def _columns(inputs: tuple[ValueInfo, ...], hint: SignatureHint | None) -> list[dict[str, Any]]:
    """One column per input, each ``[N]`` or ``[N, 1]``, named as the input."""
    for value in inputs:
        if not value.shape or value.shape[1:] not in _ONE_COLUMN:  # None, [] or other
            raise InvalidInput(
                f"the graph's input {value.name!r} is not one column ([N] or [N, 1]); a graph "
                "takes either one [N, F] matrix or one [N] / [N, 1] input per column"
            )
        _fixed_rows(value)
        if value.type not in COLUMN_TYPES:
            raise InvalidInput(
                f"the graph's input {value.name!r} holds {value.type}; a column holds "
                f"{', '.join(sorted(COLUMN_TYPES))}"
            )
        if problem := column_name_problem(value.name):
            raise InvalidInput(
                f"the graph's input {value.name[:100]!r} is no column name: {problem}"
            )
    types = {v.name: v.type for v in inputs}
    names = hint.names if hint else None
    if names is not None:
        missing, extra = sorted(set(types) - set(names)), sorted(set(names) - set(types))
        if missing or extra:
            shown = ", ".join(repr(n) for n in (extra or missing)[:5])
            what = "names columns the graph has no input for" if extra else "misses the inputs"
            raise InvalidInput(f"the signature {what}: {shown}; the graph's inputs are its columns")
    _checked_types(hint, types)
    return [_column(name, types[name]) for name in (names or list(types))]


def _inputs(
    graph: GraphInfo, hint: SignatureHint | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The signature's ``inputs`` and the layout part of its ``onnx`` entry."""
    if not graph.inputs:
        raise InvalidInput("the graph has no input")
    for value in graph.inputs:
        if value.kind != "tensor":
            raise InvalidInput(f"the graph's input {value.name!r} is a {value.type}, not a tensor")
    if (
        len(graph.inputs) == 1
        and graph.inputs[0].shape is not None
        and len(graph.inputs[0].shape) == 2
    ):
        x = graph.inputs[0]
        columns, dtype = _matrix(x, hint)
        return columns, {"layout": "matrix", "input": x.name, "dtype": dtype}
    return _columns(graph.inputs, hint), {"layout": "columns"}


def _rows_of(value: ValueInfo) -> tuple[int, ...] | None:
    """What the two-row run returned for ``value``, if it was a tensor."""
    return value.seen if value.kind == "tensor" else None


def _is_column(seen: tuple[int, ...] | None) -> bool:
    return seen in ((2,), (2, 1))


@dataclass(frozen=True)
class _Outputs:
    probabilities: ValueInfo | None
    label: ValueInfo | None
    value: ValueInfo | None
    k: int  # probability columns (0: none)


def _one(found: list[ValueInfo], what: str) -> ValueInfo | None:
    if len(found) > 1:
        names = ", ".join(repr(v.name) for v in found[:5])
        raise InvalidInput(f"the graph has more than one {what} output ({names})")
    return found[0] if found else None


def _candidates(graph: GraphInfo) -> _Outputs:
    for out in graph.outputs:
        if out.kind == "zipmap":
            raise InvalidInput(ZIPMAP.format(name=out.name))
        if out.kind != "tensor":
            raise InvalidInput(f"the graph's output {out.name!r} is a {out.type}, not a tensor")
        if out.seen is None or not out.seen or out.seen[0] != 2:
            raise InvalidInput(
                f"the graph's output {out.name!r} did not give one row per input row "
                f"(2 rows in, shape {list(out.seen or [])} out)"
            )
    probs = [
        o
        for o in graph.outputs
        if o.type in FLOAT_TYPES and o.seen is not None and len(o.seen) == 2 and o.seen[1] >= 2
    ]
    labels = [o for o in graph.outputs if o.type in LABEL_TYPES and _is_column(_rows_of(o))]
    values = [o for o in graph.outputs if o.type in FLOAT_TYPES and _is_column(_rows_of(o))]
    p = _one(probs, "probabilities ([N, K] float)")
    k = p.seen[1] if p is not None and p.seen is not None else 0
    return _Outputs(p, _one(labels, "label ([N] or [N, 1])"), _one_value(values, p), k)


def _one_value(values: list[ValueInfo], probabilities: ValueInfo | None) -> ValueInfo | None:
    if probabilities is not None:  # a classifier: a float [N] output is not its answer
        return None
    return _one(values, "float [N] or [N, 1]")


def _task(outs: _Outputs, given: str | None) -> str:
    if given is None:
        if outs.probabilities is not None:
            return "binary" if outs.k == 2 else "multiclass"
        if outs.value is not None:
            return "regression"
        if outs.label is not None:
            raise InvalidInput(NO_PROBABILITIES)
        raise InvalidInput(
            "the graph has no output the registry can serve: a classifier gives probabilities "
            "[N, K] (float) and a label [N], a regressor one float output [N] or [N, 1]"
        )
    if given == "regression" and outs.value is None:
        raise InvalidInput("task regression needs one float output of shape [N] or [N, 1]")
    if given != "regression" and outs.probabilities is None:
        raise InvalidInput(f"task {given}: {NO_PROBABILITIES}")
    if outs.k and given == "binary" and outs.k != 2:
        raise InvalidInput(f"task binary needs 2 probability columns; the graph gives {outs.k}")
    if outs.k and given == "multiclass" and outs.k < 3:
        raise InvalidInput("task multiclass needs 3 or more classes; a 2-class model is binary")
    return given


def _classes(outs: _Outputs, task: str, graph: GraphInfo, hint: SignatureHint | None) -> list[Any]:
    given = list(hint.classes) if hint and hint.classes is not None else None
    labelled = list(graph.class_labels) if graph.class_labels is not None else None
    k = outs.k
    if given is not None and len(given) != k:
        raise InvalidInput(f"the signature names {len(given)} classes; the graph gives {k}")
    if given is not None and labelled is not None and given != labelled:
        raise InvalidInput(
            f"the signature's classes {given[:10]} differ from the graph's own {labelled[:10]}"
        )
    classes = given or (labelled if labelled is not None and len(labelled) == k else None)
    classes = classes or list(range(k))
    if outs.label is not None:
        strings = outs.label.type == "string"
        if any(isinstance(c, str) != strings for c in classes):
            held = "strings" if strings else "integers"
            raise InvalidInput(
                f"the graph's label output {outs.label.name!r} holds {held}; so must the "
                "classes (name them in the signature part)"
            )
    return classes


def _storable_names(graph: GraphInfo) -> None:
    """Serving feeds and reads the graph by these names: they must survive storage as
    they are (no NUL, valid UTF-8)."""
    for value in (*graph.inputs, *graph.outputs):
        if not value.name or storable(value.name) != value.name:
            raise InvalidInput(
                f"the graph's input or output name {value.name[:100]!r} is empty or holds "
                "characters the registry cannot store (NUL, invalid UTF-8)"
            )


def build_signature(
    graph: GraphInfo, hint: SignatureHint | None, task: str | None
) -> tuple[str, dict[str, Any]]:
    """The version's task and signature (the contract serving reads); 422 naming what
    does not fit."""
    inputs, layout = _inputs(graph, hint)
    outs = _candidates(graph)
    task = _task(outs, task)
    names: dict[str, str | None] = {"probabilities": None, "label": None, "value": None}
    if task == "regression":
        assert outs.value is not None
        if hint and hint.classes is not None:
            raise InvalidInput("a regression model has no classes (the signature names some)")
        output: dict[str, Any] = {"type": "number"}
        classes: list[Any] | None = None
        names["value"] = outs.value.name
    else:
        classes = _classes(outs, task, graph, hint)
        output = {"type": "label", "classes": classes}
        names["probabilities"] = outs.probabilities.name if outs.probabilities else None
        names["label"] = outs.label.name if outs.label else None
    _storable_names(graph)
    onnx = {"file": ONNX_FILE, **layout, **names}
    return task, {"inputs": inputs, "output": output, "classes": classes, "onnx": onnx}


# --------------------------------------------------------------------------- the route's helper


def clean_filename(raw: str | None) -> str | None:
    """The upload's file name as lineage keeps it: its last path segment, NFC, only
    ``A-Za-z0-9._-`` (others become ``_``), at most 128 characters; None when empty."""
    if not raw:
        return None
    name = unicodedata.normalize("NFC", re.split(r"[/\\]", raw)[-1])
    name = _FILENAME_UNSAFE.sub("_", name).strip("._")[:_FILENAME_MAX]
    return name or None


def looks_like_protobuf(first: bytes) -> bool:
    """Whether a file's first byte can start a serialized ``ModelProto``: the tag of one of
    its fields with that field's wire type (``MODEL_PROTO_FIRST_BYTES``; serializers write
    ``ir_version``, 0x08, first). Refuses a PNG, a ZIP, a pickle or a text file at once,
    without starting the sandboxed check (which alone costs seconds); whatever passes is
    checked in full there."""
    return bool(first) and first[0] in MODEL_PROTO_FIRST_BYTES


def check_upload(
    settings: Settings,
    work: Path,
    src: Path,
    form: OnnxUploadForm,
    *,
    size: int,
    sha256: str,
    filename: str | None,
) -> CheckedOnnx:
    """Check the received file ``src`` and build what its version is made of (blocking)."""
    if size == 0:
        raise InvalidInput(f"{NOT_LOADED}: the file is empty")
    with src.open("rb") as handle:
        first = handle.read(1)
    if not looks_like_protobuf(first):
        raise InvalidInput(f"{NOT_LOADED}: it is not an ONNX (protobuf) file")
    names = form.signature.names if form.signature else None
    child_dir = work / "check"
    child_dir.mkdir(mode=0o700)
    started = time.perf_counter()
    graph = check_onnx(settings, src, child_dir, width=len(names) if names else None)
    log.info(
        "onnx_checked",
        bytes=size,
        check_s=round(time.perf_counter() - started, 3),
        peak_rss=graph.peak_rss,
        sandbox_abi=graph.sandbox_abi,
    )
    task, signature = build_signature(graph, form.signature, form.task)
    return CheckedOnnx(
        path=src,
        size=size,
        sha256=sha256,
        filename=clean_filename(filename),
        task=task,
        task_given=form.task is not None,
        signature=signature,
        graph=graph,
        description=form.description,
    )


async def with_onnx_upload(
    request: Request, settings: Settings, use: Callable[[CheckedOnnx], T]
) -> T:
    """Receive the multipart upload, check it in the sandbox and hand it to ``use``, all
    blocking work (the check, every database call of ``use``) in a worker thread; the
    scratch directory is removed whatever happens."""
    work = await anyio.to_thread.run_sync(new_work_dir, settings)
    try:
        upload = await receive_upload(request, work / "upload.onnx", max_onnx_bytes(settings))
        form = onnx_upload_form(upload.fields)

        def check_and_use() -> T:
            checked = check_upload(
                settings,
                work,
                upload.file,
                form,
                size=upload.size,
                sha256=upload.sha256,
                filename=upload.filename,
            )
            return use(checked)

        return await anyio.to_thread.run_sync(check_and_use)
    finally:
        await anyio.to_thread.run_sync(remove_work_dir, work)
