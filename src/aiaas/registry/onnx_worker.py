"""The quarantine load of an uploaded ONNX model: ``python -B -I -m aiaas.registry.onnx_worker``.

Started by :func:`aiaas.sandbox.run_child` from :func:`aiaas.registry.upload.check_onnx`
(SECURITY-CHECKLIST Part 3 and ART-04/ART-06: "all loads of uploaded artifacts happen in a
sandboxed subprocess first"). The process confines itself before it reads a byte of the
file (:func:`aiaas.sandbox.child.start`: address space, CPU seconds, no file writes, open
files; Landlock: it reads the uploaded file only and writes nothing outside its work dir,
no TCP). Then it

1. parses the bytes with ``onnx.load_model_from_string`` (never a path: nothing is resolved
   beside the file) and refuses any tensor whose data lives elsewhere (``data_location``
   EXTERNAL or ``external_data`` entries, in initializers, sparse initializers, ``Constant``
   attributes and every subgraph and local function);
2. refuses nodes of any op domain but ``""``, ``ai.onnx`` and ``ai.onnx.ml`` (a custom
   domain needs a native library);
3. runs ``onnx.checker.check_model``;
4. builds an ONNX Runtime session from the bytes (CPU, one thread, no arena) and runs it on
   two rows of zeros (empty strings for string inputs);

and answers with the graph's inputs and outputs, the output shapes it saw, the opsets and
producer, and the class labels of an ``ai.onnx.ml`` classifier node, if there is one.

Protocol: one JSON line on stdout, ``{"ok": true, "graph": {...}, "peak_rss": n,
"sandbox_abi": n}`` or ``{"ok": false, "reason": "<short reason>"}`` (``"internal": true``
for a bug, whose traceback goes to stderr). The parent re-validates every field.
"""

from __future__ import annotations

import sys
from typing import Any

from aiaas.sandbox import child

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
ROWS = 2  # rows of the proving run
MAX_FEED_ELEMENTS = 10_000_000  # of all the inputs of the proving run together
MAX_NAMES = 10_000  # graph inputs or outputs answered
_CLASSIFIERS = frozenset({"TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier"})
#: Integer class labels: ``classlabels_int64s`` (trees), ``classlabels_ints`` (linear, SVM).
_INT_LABELS = frozenset({"classlabels_int64s", "classlabels_ints"})
#: TensorProto element types by number, as the signature names them.
ELEM_TYPES = {
    1: "float",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "double",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}

#: Input element types the proving run can feed (numpy's names).
_NUMPY = {
    "float": "float32",
    "double": "float64",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
}


class Refused(Exception):
    """The file is not a model the registry takes; the message says why (short)."""


# --------------------------------------------------------------------------- graph walks


def _graphs(graph: Any) -> Any:
    """``graph`` and every subgraph of its nodes (If, Loop, Scan), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _all_graphs(model: Any) -> list[Any]:
    graphs = list(_graphs(model.graph))
    for function in model.functions:  # model-local functions: their nodes' subgraphs too
        for node in function.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    graphs.extend(_graphs(attr.g))
                for sub in attr.graphs:
                    graphs.extend(_graphs(sub))
    return graphs


def _nodes(model: Any, graphs: list[Any]) -> Any:
    for graph in graphs:
        yield from graph.node
    for function in model.functions:
        yield from function.node


def _tensors(model: Any, graphs: list[Any]) -> Any:
    """Every TensorProto of the model: initializers, sparse ones, node attributes."""
    for graph in graphs:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in _nodes(model, graphs):
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sparse in attr.sparse_tensors:
                yield sparse.values
                yield sparse.indices


def refuse_external_data(model: Any, graphs: list[Any]) -> None:
    from onnx import TensorProto

    for tensor in _tensors(model, graphs):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            raise Refused(
                f"tensor {tensor.name[:100]!r} keeps its data in an external file; "
                "upload a self-contained model (no external data)"
            )


def refuse_custom_domains(model: Any, graphs: list[Any]) -> None:
    domains = sorted({n.domain for n in _nodes(model, graphs)} - STANDARD_DOMAINS)
    if domains:
        shown = ", ".join(repr(d[:100]) for d in domains[:5])
        raise Refused(
            f"it uses operators of the non-standard domain {shown}; only the standard "
            "domains ('', 'ai.onnx', 'ai.onnx.ml') are allowed"
        )


# --------------------------------------------------------------------------- description


def _type_of(type_proto: Any) -> tuple[str, str, list[int | None] | None]:
    """``(kind, type, shape)`` of a ValueInfo's type: ``("tensor", "float", [None, 20])``."""
    which = type_proto.WhichOneof("value")
    if which == "tensor_type":
        t = type_proto.tensor_type
        elem = ELEM_TYPES.get(t.elem_type, f"type{t.elem_type}")
        if not t.HasField("shape"):
            return "tensor", elem, None
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        return "tensor", elem, dims
    if which == "sequence_type":
        inner = type_proto.sequence_type.elem_type
        kind, name, _ = _type_of(inner)
        return "sequence", f"sequence<{name if kind == 'tensor' else kind}>", None
    if which == "map_type":
        key = ELEM_TYPES.get(type_proto.map_type.key_type, "?")
        return "map", f"map<{key}>", None
    return str(which or "unknown"), str(which or "unknown"), None


def _describe(values: Any) -> list[dict[str, Any]]:
    described = []
    for value in list(values)[:MAX_NAMES]:
        kind, type_name, shape = _type_of(value.type)
        if kind == "sequence" and value.type.sequence_type.elem_type.WhichOneof("value") == (
            "map_type"
        ):
            kind = "zipmap"  # a sequence of maps: what a ZipMap operator outputs
        described.append({"name": value.name, "kind": kind, "type": type_name, "shape": shape})
    return described


def _class_labels(model: Any) -> list[Any] | None:
    """The class labels of the graph's one ``ai.onnx.ml`` classifier node, if it has one."""
    found = [n for n in model.graph.node if n.domain == "ai.onnx.ml" and n.op_type in _CLASSIFIERS]
    if len(found) != 1:
        return None
    for attr in found[0].attribute:
        if attr.name in _INT_LABELS and attr.ints:
            return list(attr.ints)[:MAX_NAMES]
        if attr.name == "classlabels_strings" and attr.strings:
            return [s.decode("utf-8", "replace") for s in attr.strings][:MAX_NAMES]
    return None


# --------------------------------------------------------------------------- the run


def _feed(inputs: list[dict[str, Any]], width: int | None) -> dict[str, Any]:
    """Two rows of zeros (empty strings) per input: dynamic first dims are the rows, other
    dynamic dims ``width`` (the columns the user named) or 1."""
    import numpy as np

    feed: dict[str, Any] = {}
    total = 0
    width = width if len(inputs) == 1 else None  # only a single [N, F] input has columns
    for spec in inputs:
        if spec["kind"] != "tensor":
            raise Refused(f"input {spec['name'][:100]!r} is a {spec['type']}, not a tensor")
        shape = spec["shape"] if spec["shape"] is not None else [None, width]
        dims = [
            (d if d is not None else (ROWS if i == 0 else (width or 1)))
            for i, d in enumerate(shape)
        ]
        count = int(np.prod(dims, dtype=np.float64)) if dims else 1
        total += count
        if total > MAX_FEED_ELEMENTS:
            raise Refused(f"input {spec['name'][:100]!r} declares a shape too large to run")
        if spec["type"] == "string":
            feed[spec["name"]] = np.full(dims, "", dtype=object)
        elif spec["type"] in _NUMPY:
            feed[spec["name"]] = np.zeros(dims, dtype=_NUMPY[spec["type"]])
        else:
            raise Refused(
                f"input {spec['name'][:100]!r} has the element type {spec['type']}, which "
                "the registry does not take"
            )
    return feed


def prove_it_runs(data: bytes, inputs: list[dict[str, Any]], width: int | None) -> list[Any]:
    """Run the graph on two rows; the shape of each output it returned (None: not a tensor)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise Refused(f"ONNX Runtime cannot load it ({_short(exc)})") from None
    feed = _feed(inputs, width)
    try:
        results = session.run(None, feed)
    except Exception as exc:
        raise Refused(f"it does not run on {ROWS} rows of zeros ({_short(exc)})") from None
    return [list(r.shape) if hasattr(r, "shape") else None for r in results]


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "bad_alloc" in text or "Failed to allocate" in text:
        return "it needed more memory than allowed"
    return text[:300] or type(exc).__name__


def check(path: str, width: int | None) -> dict[str, Any]:
    """Load, check and run the model at ``path``; its description (raises :class:`Refused`)."""
    import onnx
    from google.protobuf.message import DecodeError

    with open(path, "rb") as handle:
        data = handle.read()
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise Refused(f"it is not an ONNX model ({_short(exc)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise Refused("it is not an ONNX model (it holds no graph)")
    graphs = _all_graphs(model)
    refuse_external_data(model, graphs)
    refuse_custom_domains(model, graphs)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, and the C++ checker's other complaints
        raise Refused(f"the ONNX checker refuses it ({_short(exc)})") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = _describe(v for v in model.graph.input if v.name not in initializers)
    outputs = _describe(model.graph.output)
    seen = prove_it_runs(data, inputs, width)
    for spec, shape in zip(outputs, seen, strict=False):
        spec["seen"] = shape
    return {
        "inputs": inputs,
        "outputs": outputs,
        "opset": [{"domain": o.domain, "version": int(o.version)} for o in model.opset_import],
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "ir_version": int(model.ir_version),
        "class_labels": _class_labels(model),
    }


# --------------------------------------------------------------------------- main


def main() -> int:
    # imported before the envelope is read (an import reads the installation, which the
    # sandbox still allows; it would not read the file before start() confines it)
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    try:
        started = child.start()
    except OSError as exc:
        reason = f"the model sandbox could not be applied ({exc.strerror or exc})"
        child.answer({"ok": False, "reason": reason, "unavailable": True})
        return 0
    request = started.request
    try:
        width = request.get("width")
        graph = check(str(request["path"]), int(width) if width else None)
    except Refused as exc:
        child.answer({"ok": False, "reason": str(exc)})
        return 0
    except MemoryError:
        child.answer({"ok": False, "reason": "it needed more memory than allowed"})
        return 0
    except RecursionError:
        child.answer({"ok": False, "reason": "its graph is nested too deeply"})
        return 0
    except Exception:  # a bug or an unforeseen input: the parent logs the traceback
        import traceback

        traceback.print_exc(file=sys.stderr)
        child.answer({"ok": False, "reason": "an unexpected error", "internal": True})
        return 0
    child.answer(
        {
            "ok": True,
            "graph": graph,
            "peak_rss": child.peak_rss(),
            "sandbox_abi": started.landlock_abi,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
