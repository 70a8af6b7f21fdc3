"""Export a fitted ensemble to one ONNX graph.

The graph's input ``input`` is the preprocessed float32 feature matrix (the encoding is in the
artifact's ``encoding.json``); its output is ``probabilities`` ``[N, n_classes]`` for
classification (columns in the order of the model's classes) or ``prediction`` ``[N, 1]`` for
regression. Each member is converted on its own (onnxmltools for LightGBM/XGBoost, skl2onnx
for scikit-learn pipelines), prefixed, and the members are combined by their ensemble
weights inside the graph, so one ONNX Runtime session serves the whole model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ONNX_OPSET",
    "ONNX_ML_OPSET",
    "member_to_onnx",
    "ensemble_to_onnx",
    "preload_export",
    "UnsupportedForOnnx",
]

ONNX_OPSET = 15
ONNX_ML_OPSET = 3
# what ``TrainedModel.save`` imports: about 3 s on two cores, most of a first save's time
_EXPORT_MODULES = ("onnx", "onnxmltools", "skl2onnx", "onnxruntime", "skops.io")


def preload_export() -> None:
    """Import the converters and the artifact writer now (``fit`` does it on a background
    thread while the search runs, so that saving right after a timed fit is quick)."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _EXPORT_MODULES:
            try:
                importlib.import_module(name)
            except ImportError:  # pragma: no cover - all are dependencies; save reports it
                return


class UnsupportedForOnnx(Exception):
    """This member cannot be expressed in ONNX (the model then serves natively)."""


def member_to_onnx(est: Any, n_features: int, is_cls: bool) -> Any:
    """One fitted member → ``ModelProto`` with input ``input`` and one output."""
    import onnx

    kind = type(est).__module__.split(".")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if kind in ("lightgbm", "xgboost"):
                import onnxmltools
                from onnxmltools.convert.common.data_types import FloatTensorType

                types = [("input", FloatTensorType([None, n_features]))]
                if kind == "lightgbm":
                    model = onnxmltools.convert_lightgbm(
                        est, initial_types=types, zipmap=False, target_opset=ONNX_OPSET
                    )
                else:
                    model = onnxmltools.convert_xgboost(
                        est, initial_types=types, target_opset=ONNX_OPSET
                    )
            else:
                from skl2onnx import to_onnx
                from skl2onnx.common.data_types import FloatTensorType as SkFloat

                opts = {"zipmap": False} if is_cls else None
                model = to_onnx(
                    est,
                    initial_types=[("input", SkFloat([None, n_features]))],
                    options=opts,
                    target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
                )
        except Exception as exc:
            raise UnsupportedForOnnx(f"{type(est).__name__}: {exc}"[:300]) from exc
    outputs = [o.name for o in model.graph.output]
    wanted = outputs[1] if is_cls else outputs[0]
    if is_cls and len(outputs) < 2:
        raise UnsupportedForOnnx("classifier graph without a probabilities output")
    # keep only the output we combine
    keep = [o for o in model.graph.output if o.name == wanted]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    onnx.checker.check_model(model)
    return model


@dataclass
class _GraphParts:
    """What a graph is assembled from, collected member by member or column by column."""

    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    opsets: dict[str, int] = field(default_factory=dict)  # the highest version per domain
    funcs: list[Any] = field(default_factory=list)


def ensemble_to_onnx(
    members: Sequence[Any],
    weights: Sequence[float],
    n_features: int,
    *,
    is_cls: bool,
    n_classes: int,
    y_mean: float = 0.0,
    y_std: float = 1.0,
) -> Any:
    """Combine member graphs (each from :func:`member_to_onnx`) into one weighted graph."""
    import onnx
    from onnx import TensorProto, helper

    parts = _GraphParts()
    weighted = [
        _add_member(parts, f"m{i}_", m, w, is_cls)
        for i, (m, w) in enumerate(zip(members, weights, strict=True))
    ]
    out_info = _add_combination(parts, weighted, is_cls, n_classes, y_mean, y_std)
    graph = helper.make_graph(
        parts.nodes,
        "aiaas_automl",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [out_info],
        initializer=parts.inits,
    )
    # one version per domain for the whole graph (members were converted for these)
    opsets = parts.opsets
    opsets[""] = max(opsets.get("", 0), ONNX_OPSET)
    opsets["ai.onnx.ml"] = max(opsets.get("ai.onnx.ml", 0), ONNX_ML_OPSET)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
        producer_name="aiaas.automl",
        functions=parts.funcs,
    )
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model


def _add_member(parts: _GraphParts, pre: str, m: Any, w: float, is_cls: bool) -> str:
    """Add one member, names prefixed with ``pre``; returns its weighted output's name."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.compose.add_prefix(m, prefix=pre)
    for op in m.opset_import:
        parts.opsets[op.domain] = max(parts.opsets.get(op.domain, 0), op.version)
    parts.nodes.append(helper.make_node("Identity", ["input"], [f"{pre}input"], name=f"{pre}feed"))
    parts.nodes.extend(m.graph.node)
    parts.inits.extend(m.graph.initializer)
    parts.funcs.extend(m.functions)
    out = m.graph.output[0].name
    if is_cls:
        src = out
    else:
        src = f"{pre}flat"
        shape = numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), f"{pre}shape")
        parts.inits.append(shape)
        parts.nodes.append(helper.make_node("Reshape", [out, shape.name], [src]))
    wname = f"{pre}weight"
    parts.inits.append(numpy_helper.from_array(np.array(w, dtype=np.float32), wname))
    parts.nodes.append(helper.make_node("Mul", [src, wname], [f"{pre}weighted"]))
    return f"{pre}weighted"


def _add_combination(
    parts: _GraphParts,
    weighted: list[str],
    is_cls: bool,
    n_classes: int,
    y_mean: float,
    y_std: float,
) -> Any:
    """Sum the weighted members (and undo the target's scaling); returns the output's info."""
    from onnx import TensorProto, helper, numpy_helper

    if is_cls:
        parts.nodes.append(helper.make_node("Sum", weighted, ["probabilities"]))
        return helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, n_classes])
    parts.inits.append(numpy_helper.from_array(np.array(y_std, dtype=np.float32), "y_std"))
    parts.inits.append(numpy_helper.from_array(np.array(y_mean, dtype=np.float32), "y_mean"))
    parts.nodes.append(helper.make_node("Sum", weighted, ["scaled"]))
    parts.nodes.append(helper.make_node("Mul", ["scaled", "y_std"], ["unscaled"]))
    parts.nodes.append(helper.make_node("Add", ["unscaled", "y_mean"], ["prediction"]))
    return helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])


def raw_input_head(specs: Sequence[dict[str, Any]], core: Any) -> Any | None:
    """Prefix ``core`` (input ``input``) with the column encoding, taking raw columns.

    One graph input per used column, shape ``[N, 1]``: ``float`` for numeric columns (NaN or
    ±inf = missing), ``string`` for categorical ones (``""`` = missing). Category codes come
    from an ``ai.onnx.ml`` LabelEncoder with the fitted levels. Returns ``None`` when a column
    kind cannot be expressed (datetime parts).
    """
    import onnx
    from onnx import TensorProto, helper

    parts = _GraphParts()
    inputs: list[Any] = []
    encoded: list[str] = []
    for i, spec in enumerate(specs):
        kind = spec["kind"]
        if kind == "dropped":
            continue
        if kind == "datetime":
            return None
        col = f"col{i}"
        if kind == "numeric":
            inputs.append(_add_numeric_column(parts, spec["name"], col))
        else:
            inputs.append(_add_categorical_column(parts, spec, col))
        encoded.append(f"{col}_enc")
    parts.nodes.append(helper.make_node("Concat", encoded, ["input"], axis=1))
    head = helper.make_graph(
        parts.nodes,
        "aiaas_encode",
        inputs,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, len(encoded)])],
        initializer=parts.inits,
    )
    head_model = helper.make_model(
        head,
        opset_imports=[helper.make_opsetid(o.domain, o.version) for o in core.opset_import],
    )
    head_model.ir_version = core.ir_version
    merged = onnx.compose.merge_models(head_model, core, io_map=[("input", "input")])
    onnx.checker.check_model(merged)
    return merged


def _add_numeric_column(parts: _GraphParts, name: str, col: str) -> Any:
    """A float input whose ±inf become NaN (missing) in ``<col>_enc``; returns the input."""
    from onnx import TensorProto, helper, numpy_helper

    parts.nodes.append(helper.make_node("IsInf", [name], [f"{col}_inf"]))
    if not any(x.name == "nan_const" for x in parts.inits):
        parts.inits.append(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "nan_const"))
    parts.nodes.append(helper.make_node("Where", [f"{col}_inf", "nan_const", name], [f"{col}_enc"]))
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 1])


def _add_categorical_column(parts: _GraphParts, spec: dict[str, Any], col: str) -> Any:
    """A string input coded as the preprocessor does in ``<col>_enc``; returns the input."""
    from onnx import TensorProto, helper

    name = spec["name"]
    levels = [str(v) for v in spec["levels"]]
    other = float(len(levels)) if spec["other"] else -1.0
    keys = list(levels)
    values = [float(j) for j in range(len(levels))]
    if "" not in keys:  # missing arrives as the empty string
        keys.append("")
        values.append(-1.0)
    parts.nodes.append(
        helper.make_node(
            "LabelEncoder",
            [name],
            [f"{col}_enc"],
            domain="ai.onnx.ml",
            keys_strings=keys,
            values_floats=values,
            default_float=other,
        )
    )
    return helper.make_tensor_value_info(name, TensorProto.STRING, [None, 1])
