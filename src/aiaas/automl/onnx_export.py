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
from typing import Any

import numpy as np

__all__ = [
    "ONNX_OPSET",
    "ONNX_ML_OPSET",
    "member_to_onnx",
    "ensemble_to_onnx",
    "UnsupportedForOnnx",
]

ONNX_OPSET = 15
ONNX_ML_OPSET = 3


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
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    opsets: dict[str, int] = {}
    funcs: list[Any] = []
    weighted: list[str] = []
    for i, (m, w) in enumerate(zip(members, weights, strict=True)):
        pre = f"m{i}_"
        m = onnx.compose.add_prefix(m, prefix=pre)
        for op in m.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
        nodes.append(helper.make_node("Identity", ["input"], [f"{pre}input"], name=f"{pre}feed"))
        nodes.extend(m.graph.node)
        inits.extend(m.graph.initializer)
        funcs.extend(m.functions)
        out = m.graph.output[0].name
        if is_cls:
            src = out
        else:
            src = f"{pre}flat"
            shape = numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), f"{pre}shape")
            inits.append(shape)
            nodes.append(helper.make_node("Reshape", [out, shape.name], [src]))
        wname = f"{pre}weight"
        inits.append(numpy_helper.from_array(np.array(w, dtype=np.float32), wname))
        nodes.append(helper.make_node("Mul", [src, wname], [f"{pre}weighted"]))
        weighted.append(f"{pre}weighted")
    if is_cls:
        nodes.append(helper.make_node("Sum", weighted, ["probabilities"]))
        out_info = helper.make_tensor_value_info(
            "probabilities", TensorProto.FLOAT, [None, n_classes]
        )
    else:
        inits.append(numpy_helper.from_array(np.array(y_std, dtype=np.float32), "y_std"))
        inits.append(numpy_helper.from_array(np.array(y_mean, dtype=np.float32), "y_mean"))
        nodes.append(helper.make_node("Sum", weighted, ["scaled"]))
        nodes.append(helper.make_node("Mul", ["scaled", "y_std"], ["unscaled"]))
        nodes.append(helper.make_node("Add", ["unscaled", "y_mean"], ["prediction"]))
        out_info = helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph(
        nodes,
        "aiaas_automl",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [out_info],
        initializer=inits,
    )
    # one version per domain for the whole graph (members were converted for these)
    opsets[""] = max(opsets.get("", 0), ONNX_OPSET)
    opsets["ai.onnx.ml"] = max(opsets.get("ai.onnx.ml", 0), ONNX_ML_OPSET)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
        producer_name="aiaas.automl",
        functions=funcs,
    )
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model


def raw_input_head(specs: Sequence[dict[str, Any]], core: Any) -> Any | None:
    """Prefix ``core`` (input ``input``) with the column encoding, taking raw columns.

    One graph input per used column, shape ``[N, 1]``: ``float`` for numeric columns (NaN or
    ±inf = missing), ``string`` for categorical ones (``""`` = missing). Category codes come
    from an ``ai.onnx.ml`` LabelEncoder with the fitted levels. Returns ``None`` when a column
    kind cannot be expressed (datetime parts).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    inputs: list[Any] = []
    encoded: list[str] = []
    for i, spec in enumerate(specs):
        kind = spec["kind"]
        if kind == "dropped":
            continue
        if kind == "datetime":
            return None
        name = spec["name"]
        col = f"col{i}"
        if kind == "numeric":
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 1]))
            nodes.append(helper.make_node("IsInf", [name], [f"{col}_inf"]))
            if not any(x.name == "nan_const" for x in inits):
                inits.append(
                    numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "nan_const")
                )
            nodes.append(
                helper.make_node("Where", [f"{col}_inf", "nan_const", name], [f"{col}_enc"])
            )
        else:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.STRING, [None, 1]))
            levels = [str(v) for v in spec["levels"]]
            other = float(len(levels)) if spec["other"] else -1.0
            keys = list(levels)
            values = [float(j) for j in range(len(levels))]
            if "" not in keys:  # missing arrives as the empty string
                keys.append("")
                values.append(-1.0)
            nodes.append(
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
        encoded.append(f"{col}_enc")
    nodes.append(helper.make_node("Concat", encoded, ["input"], axis=1))
    head = helper.make_graph(
        nodes,
        "aiaas_encode",
        inputs,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, len(encoded)])],
        initializer=inits,
    )
    head_model = helper.make_model(
        head,
        opset_imports=[helper.make_opsetid(o.domain, o.version) for o in core.opset_import],
    )
    head_model.ir_version = core.ir_version
    merged = onnx.compose.merge_models(head_model, core, io_map=[("input", "input")])
    onnx.checker.check_model(merged)
    return merged
