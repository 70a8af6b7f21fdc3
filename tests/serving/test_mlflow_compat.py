"""``POST /endpoints/{name}/invocations`` answers as MLflow's own scoring server does.

The same fitted models are served twice: by MLflow (``mlflow.sklearn.save_model`` →
``mlflow.pyfunc.load_model`` → ``mlflow.pyfunc.scoring_server.init``: the FastAPI app behind
``mlflow models serve``, driven in process) and by aiaas (converted to ONNX, uploaded to
``POST /models/{name}/versions`` and deployed as an endpoint, over the app's full stack with
the serving gateway on and off: the suite's ``any_client``). Each request body is sent, byte
for byte the same, to both — ``dataframe_split`` (with and without ``index``),
``dataframe_records``, ``instances`` (records) and ``inputs`` (columns, and records) — and
the answers are compared.

Where the bodies can be identical byte for byte, they are required to be: the tree models
whose predictions are exact in float32 (pure leaves: probabilities 0 and 1; leaf values
that are small integers). For LightGBM they cannot be: ONNX Runtime computes the trees and
the sigmoid in float32 (the graph's input and output are ``float``), while MLflow's pyfunc
calls LightGBM in float64, so the probabilities differ in the 8th significant digit
(≈1e-7) and their decimal expansions differ. For those the answers must be the same JSON
layout (the bodies are identical once every number is masked: same keys, nesting,
separators, spacing), the same shape, and every value within 1e-6 of MLflow's.

MLflow (``mlflow-skinny``, which has the scoring server) is a test-only dependency (the
``dev`` extra); without it this module is skipped.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenants
from tests.registry.onnx_factory import LIGHTGBM_OPSET, ML_OPSET, OPSET

# no telemetry thread phoning home from the test run (read when mlflow is imported)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
mlflow = pytest.importorskip(
    "mlflow",
    reason="mlflow is not installed: it is a test-only dependency (the dev extra's "
    "mlflow-skinny); `make install` brings it",
)
with warnings.catch_warnings():
    # importing mlflow.pyfunc warns about MLflow's own type hints (its code, not ours)
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from mlflow.pyfunc import scoring_server

COLUMNS = ["age", "income", "tenure", "score", "visits"]
ROWS = 6  # rows sent per request (the first rows of the training data)
TOLERANCE = 1e-6
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Case:
    """One model: its query rows, MLflow's scoring app and the ONNX aiaas serves."""

    name: str
    rows: pd.DataFrame
    onnx: bytes
    exact: bool  # float32 == float64 for its predictions: the bodies must be identical
    mlflow_app: Any


def _data(seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    # three decimals: every value survives the JSON round trip and float32 exactly enough
    X = pd.DataFrame(rng.normal(size=(300, len(COLUMNS))).round(3), columns=COLUMNS)
    noise = rng.normal(scale=0.7, size=len(X))
    y_class = ((X["age"] + 0.5 * X["income"] - X["tenure"] + noise) > 0).astype(int)
    y_value = (X["age"] - 0.5 * X["score"] + rng.normal(scale=0.2, size=len(X))).round(3)
    return X, y_class, y_value


def _lightgbm_onnx(model: Any) -> bytes:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    proto = onnxmltools.convert_lightgbm(
        model,
        initial_types=[("input", FloatTensorType([None, len(COLUMNS)]))],
        zipmap=False,
        target_opset=LIGHTGBM_OPSET,
    )
    return bytes(proto.SerializeToString())


def _sklearn_onnx(model: Any) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(model): {"zipmap": False}} if hasattr(model, "classes_") else None
    proto = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, len(COLUMNS)]))],
        options=options,
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    return bytes(proto.SerializeToString())


def _mlflow_app(model: Any, X: pd.DataFrame, path: Path) -> Any:
    """MLflow's scoring server for ``model``, saved and loaded the way MLflow serves it."""
    classifier = hasattr(model, "predict_proba")
    out = model.predict_proba(X) if classifier else model.predict(X)
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(X, out),
        pyfunc_predict_fn="predict_proba" if classifier else "predict",
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        pip_requirements=["scikit-learn", "lightgbm"],  # no environment inference (slow)
    )
    return scoring_server.init(mlflow.pyfunc.load_model(str(path)))


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    import lightgbm
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    X, y_class, y_value = _data()
    root = tmp_path_factory.mktemp("mlflow-models")
    params: dict[str, Any] = {"n_estimators": 25, "num_leaves": 8, "random_state": 0, "verbose": -1}
    built: dict[str, Case] = {}
    for name, model, y, to_onnx, exact in (
        ("lgbm-classifier", lightgbm.LGBMClassifier(**params), y_class, _lightgbm_onnx, False),
        ("lgbm-regressor", lightgbm.LGBMRegressor(**params), y_value, _lightgbm_onnx, False),
        # unbounded depth on distinct rows: pure leaves (probabilities 0/1) and, for the
        # integer targets, leaf values that float32 holds exactly
        ("tree-classifier", DecisionTreeClassifier(random_state=0), y_class, _sklearn_onnx,
         True),
        ("tree-regressor", DecisionTreeRegressor(random_state=0), y_value.round(0),
         _sklearn_onnx, True),
    ):  # fmt: skip
        model.fit(X, y)
        app = _mlflow_app(model, X, root / name)
        built[name] = Case(name, X.head(ROWS), to_onnx(model), exact, app)
    return built


@pytest.fixture(scope="session")
def mlflow_clients(cases: dict[str, Case]) -> Iterator[dict[str, TestClient]]:
    clients = {name: TestClient(case.mlflow_app) for name, case in cases.items()}
    yield clients
    for c in clients.values():
        c.close()


def bodies(rows: pd.DataFrame) -> dict[str, bytes]:
    """Every JSON request format both servers take, for the same rows."""
    records = rows.to_dict(orient="records")
    split = {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}
    formats: dict[str, Any] = {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_split+index": {"dataframe_split": split | {"index": list(range(len(rows)))}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs(columns)": {"inputs": rows.to_dict(orient="list")},
        "inputs(records)": {"inputs": records},
        "one row": {"dataframe_split": split | {"data": split["data"][:1]}},
    }
    return {name: json.dumps(body).encode() for name, body in formats.items()}


def upload_and_deploy(client: TestClient, headers: dict[str, str], case: Case) -> str:
    """The case's ONNX as version 1 of a model of its name, behind an endpoint of that name."""
    r = client.post(
        f"/api/v1/models/{case.name}/versions",
        headers=headers,
        files={"file": ("model.onnx", case.onnx, "application/octet-stream")},
        data={"signature": json.dumps({"columns": COLUMNS})},
    )
    assert r.status_code == 201, r.text
    body = {"name": case.name, "model": case.name, "version": r.json()["number"]}
    r = client.post("/api/v1/endpoints", headers=headers, json=body)
    assert r.status_code == 201, r.text
    return f"/api/v1/endpoints/{case.name}/invocations"


def _values(obj: Any) -> list[float]:
    if isinstance(obj, list):
        return [v for item in obj for v in _values(item)]
    return [float(obj)]


def _shape(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(v) for v in obj]
    return type(obj).__name__


@pytest.mark.parametrize(
    "name", ["lgbm-classifier", "lgbm-regressor", "tree-classifier", "tree-regressor"]
)
def test_invocations_answer_as_mlflow_does(
    name: str,
    cases: dict[str, Case],
    mlflow_clients: dict[str, TestClient],
    any_client: TestClient,
    tenants: Tenants,
) -> None:
    """(``any_client``: the serving gateway on, and off so that the FastAPI routes answer.)"""
    client = any_client
    case = cases[name]
    headers = tenants.a.headers("developer")
    url = upload_and_deploy(client, headers, case)
    for fmt, body in bodies(case.rows).items():
        json_type = {"Content-Type": "application/json"}
        theirs = mlflow_clients[name].post("/invocations", content=body, headers=json_type)
        ours = client.post(url, content=body, headers=headers | json_type)
        where = f"{name}, {fmt}: MLflow {theirs.content[:200]!r} aiaas {ours.content[:200]!r}"
        assert (ours.status_code, theirs.status_code) == (200, 200), where
        assert ours.headers["content-type"] == theirs.headers["content-type"], where
        if case.exact:
            assert ours.content == theirs.content, where
            continue
        # float32 against float64: the same bytes once the numbers are masked, the same
        # nesting, and every value within TOLERANCE
        assert NUMBER.sub(b"0", ours.content) == NUMBER.sub(b"0", theirs.content), where
        mine, ref = ours.json(), theirs.json()
        assert _shape(mine) == _shape(ref), where
        got, want = _values(mine["predictions"]), _values(ref["predictions"])
        assert len(got) == len(want), where
        worst = max(abs(a - b) for a, b in zip(got, want, strict=True))
        assert worst <= TOLERANCE, f"{where}: max |difference| {worst:.2e}"


def test_the_exact_cases_really_are_exact(cases: dict[str, Case]) -> None:
    """The byte-identity cases are not vacuous: ONNX Runtime's float32 answers equal the
    float64 ones the models give in Python, and the LightGBM ones do not (which is why
    their bodies are compared by value)."""
    import onnxruntime as ort

    for case in cases.values():
        session = ort.InferenceSession(case.onnx, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in session.get_outputs()]
        want = "probabilities" if "probabilities" in outputs else outputs[0]
        (out,) = session.run([want], {"input": case.rows.to_numpy(dtype=np.float32)})
        model = case.mlflow_app  # the served model's own float64 answer, through MLflow
        body = json.dumps({"dataframe_split": case.rows.to_dict(orient="split")}).encode()
        ref = TestClient(model).post(
            "/invocations", content=body, headers={"Content-Type": "application/json"}
        )
        expected = np.asarray(ref.json()["predictions"], dtype=np.float64)
        same = json.dumps(out.reshape(expected.shape).tolist()) == json.dumps(expected.tolist())
        assert same is case.exact, case.name
