"""Small real ONNX models for the upload tests, built in the test session (no binary
fixtures in the repository): scikit-learn through skl2onnx, LightGBM through onnxmltools,
and hand-made hostile graphs through ``onnx.helper``."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
ML_OPSET = 3
LIGHTGBM_OPSET = 15  # the newest onnxmltools' LightGBM converter supports
FEATURES = 4
ROWS = 200


@dataclass(frozen=True)
class Built:
    """An ONNX file and the rows it was fitted on (``X``: the float32 matrix)."""

    data: bytes
    X: np.ndarray[Any, Any]


def _rows(seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    X = np.random.default_rng(seed).normal(size=(ROWS, FEATURES)).astype(np.float32)
    return X, X[:, 0] + 0.5 * X[:, 1]


def _skl(model: Any, X: np.ndarray[Any, Any], *, zipmap: bool = False) -> bytes:
    from skl2onnx import to_onnx

    classifier = hasattr(model, "classes_")
    options = {id(model): {"zipmap": False}} if classifier and not zipmap else None
    proto = to_onnx(model, X[:1], options=options, target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
    return bytes(proto.SerializeToString())


def logistic_binary(labels: tuple[Any, Any] | None = None) -> Built:
    from sklearn.linear_model import LogisticRegression

    X, score = _rows()
    y = (score > 0).astype(int)
    if labels is not None:
        y = np.array(labels)[y]
    return Built(_skl(LogisticRegression().fit(X, y), X), X)


def logistic_multiclass() -> Built:
    from sklearn.linear_model import LogisticRegression

    X, score = _rows()
    y = np.digitize(score, [-0.5, 0.5])
    return Built(_skl(LogisticRegression().fit(X, y), X), X)


def logistic_zipmap() -> Built:
    from sklearn.linear_model import LogisticRegression

    X, score = _rows()
    return Built(_skl(LogisticRegression().fit(X, (score > 0).astype(int)), X, zipmap=True), X)


def ridge_regressor() -> Built:
    from sklearn.linear_model import Ridge

    X, score = _rows()
    return Built(_skl(Ridge().fit(X, score), X), X)


def lightgbm_classifier() -> Built:
    import lightgbm
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    X, score = _rows()
    y = np.digitize(score, [-0.5, 0.5])
    model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1).fit(X, y)
    proto = onnxmltools.convert_lightgbm(
        model,
        initial_types=[("input", FloatTensorType([None, FEATURES]))],
        zipmap=False,
        target_opset=LIGHTGBM_OPSET,
    )
    return Built(bytes(proto.SerializeToString()), X)


def column_pipeline() -> tuple[bytes, pd.DataFrame]:
    """A pipeline taking one input per column: ``amount`` (float [N, 1]) and ``colour``
    (string [N, 1], one-hot encoded)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=ROWS).astype(np.float32),
            "colour": rng.choice(["red", "green", "blue"], ROWS),
        }
    )
    y = ((frame["amount"] > 0) ^ (frame["colour"] == "red")).astype(int)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", "passthrough", ["amount"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, y)
    proto = to_onnx(
        pipe,
        initial_types=[
            ("amount", FloatTensorType([None, 1])),
            ("colour", StringTensorType([None, 1])),
        ],
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    return bytes(proto.SerializeToString()), frame


def mlp_of_size(nbytes: int) -> bytes:
    """A ``[N, 4] → [N, 1]`` regressor whose weights take about ``nbytes`` (for timings)."""
    hidden = max(1, nbytes // (4 * (FEATURES + 1)))
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(FEATURES, hidden)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.normal(size=(hidden, 1)).astype(np.float32), "W2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W1"], ["H"]),
            helper.make_node("Relu", ["H"], ["R"]),
            helper.make_node("MatMul", ["R", "W2"], ["Y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        [w1, w2],
    )
    return _model(graph)


# --------------------------------------------------------------------------- hostile files


def _model(graph: onnx.GraphProto, *extra_opsets: tuple[str, int]) -> bytes:
    opsets = [helper.make_opsetid("", OPSET)]
    opsets += [helper.make_opsetid(d, v) for d, v in extra_opsets]
    return bytes(helper.make_model(graph, opset_imports=opsets).SerializeToString())


def _io() -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    return (
        helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, FEATURES]),
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1]),
    )


def custom_domain() -> bytes:
    """A graph whose one node is of the operator domain ``com.evil`` (a native library)."""
    x, y = _io()
    node = helper.make_node("Evil", ["X"], ["Y"], domain="com.evil")
    return _model(helper.make_graph([node], "g", [x], [y]), ("com.evil", 1))


def external_data() -> bytes:
    """A graph whose weight lives in ``../../secret`` (CVE-2022-25882's shape)."""
    x, y = _io()
    weight = numpy_helper.from_array(np.ones((FEATURES, 1), np.float32), "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../secret"), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    node = helper.make_node("MatMul", ["X", "W"], ["Y"])
    return _model(helper.make_graph([node], "g", [x], [y], [weight]))


def memory_bomb() -> bytes:
    """A tiny graph that asks for a 10¹⁰-element tensor when it runs."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])
    shape = numpy_helper.from_array(np.array([100_000, 100_000], np.int64), "S")
    nodes = [
        helper.make_node("ConstantOfShape", ["S"], ["Z"]),
        helper.make_node("ReduceSum", ["Z"], ["T"], keepdims=0),
        helper.make_node("Add", ["X", "T"], ["Y"]),
    ]
    return _model(helper.make_graph(nodes, "g", [x], [y], [shape]))


class _Canary:
    """Unpickling it would create ``path``: proof that someone unpickled the upload."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def evil_pickle(canary: str) -> bytes:
    return pickle.dumps(_Canary(canary))
