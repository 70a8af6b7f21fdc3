"""The Open Inference Protocol routes (``/v2``), driven over real HTTP by NVIDIA's
``tritonclient.http`` (JSON and binary tensors) and by raw requests for the refusals.

The app runs under uvicorn in a thread on a free local port, once per test (each test has
its own database); ``live`` runs it with the serving gateway answering ``infer`` and with
FastAPI's routes answering it. The models: the registry's tiny AutoML classifier (``a``,
``b``: numbers, ``colour``: a category; classes 0 and 1), an all-numeric AutoML regressor
(the ``[N, F]`` form), and two ONNX uploads (one ``[N, 4]`` matrix input with string
classes; one input per column). OIP answers are compared with the same endpoint's
``/predict`` answer.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
import uvicorn
from tritonclient.utils import InferenceServerException

from aiaas.api.app import create_app
from aiaas.api.state import app_state
from aiaas.settings import Settings
from tests.conftest import Tenants
from tests.registry import onnx_factory
from tests.registry.conftest import Register, register, store  # noqa: F401

ROWS = [
    {"a": 1.0, "b": 0.5, "colour": "red"},
    {"a": -1.0, "b": 0.0, "colour": "blue"},
    {"a": 0.25, "b": -2.0, "colour": "green"},
    {"a": 3.0, "b": 1.0, "colour": "mauve"},  # a category the model never saw
]
#: Seconds an HTTP call of a test may take (a loaded machine loads models slowly).
TIMEOUT = 60
MODEL_ROUTES = (
    ("GET", "/v2/models/{n}"),
    ("GET", "/v2/models/{n}/versions/1"),
    ("GET", "/v2/models/{n}/ready"),
    ("GET", "/v2/models/{n}/versions/1/ready"),
    ("POST", "/v2/models/{n}/infer"),
    ("POST", "/v2/models/{n}/versions/1/infer"),
)


@dataclass
class Live:
    """A running server: its base URL, port and app."""

    base: str
    port: int
    app: Any

    def triton(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(url=f"127.0.0.1:{self.port}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(settings: Settings) -> Iterator[Live]:
    app = create_app(settings)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-oip", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn exited"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", port, app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(params=["fast_path", "fastapi"])
def live(
    request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Live]:
    """The app served over HTTP, with the serving gateway on (default) and off."""
    fast = request.param == "fast_path"
    serving = settings.serving.model_copy(update={"fast_path": fast})
    yield from _serve(settings.model_copy(update={"serving": serving}))


@pytest.fixture
def server(settings: Settings) -> Iterator[Live]:
    """The app (default settings) served over HTTP."""
    yield from _serve(settings)


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The registry fixture's classifier (same data, same search), with a budget that only
    guards a loaded machine: ``max_trials`` ends the search (``register`` uses this one)."""
    from aiaas import automl

    rng = np.random.default_rng(0)
    n = 160
    df = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], n),
        }
    )
    df["y"] = (df["a"] + (df["colour"] == "red") + rng.normal(scale=0.5, size=n) > 0.5).astype(int)
    model = automl.fit(df, "y", time_budget=60, families=["linear"], ensemble=False, max_trials=3)
    return model.save(tmp_path_factory.mktemp("saved-oip") / "model")


@pytest.fixture(scope="session")
def numeric_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved regressor of two numeric columns (x0, x1); ``max_trials`` ends the search."""
    from aiaas import automl

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x0": rng.normal(size=120), "x1": rng.normal(size=120)})
    df["y"] = 2 * df["x0"] - df["x1"] + rng.normal(scale=0.1, size=120)
    model = automl.fit(df, "y", time_budget=60, families=["linear"], ensemble=False, max_trials=2)
    return model.save(tmp_path_factory.mktemp("saved-numeric") / "model")


def deploy(live: Live, tenants: Tenants, register: Register, name: str = "churn-ep") -> None:  # noqa: F811
    register(tenants.a, "churn")
    response = httpx.post(
        f"{live.base}/api/v1/endpoints",
        json={"name": name, "model": "churn", "version": 1},
        headers=tenants.a.headers("developer"),
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text


def predict(live: Live, tenants: Tenants, name: str, rows: list[dict[str, Any]]) -> Any:
    response = httpx.post(
        f"{live.base}/api/v1/endpoints/{name}/predict",
        json={"instances": rows},
        headers=tenants.a.headers("viewer"),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def column_inputs(rows: list[dict[str, Any]], binary: bool) -> list[triton.InferInput]:
    a = np.array([r["a"] for r in rows], dtype=np.float64)
    b = np.array([r["b"] for r in rows], dtype=np.float32).reshape(-1, 1)  # [N, 1] works too
    colour = np.array([r["colour"].encode() for r in rows], dtype=np.object_)
    inputs = [
        triton.InferInput("a", [len(rows)], "FP64"),
        triton.InferInput("b", [len(rows), 1], "FP32"),
        triton.InferInput("colour", [len(rows)], "BYTES"),
    ]
    for tensor, data in zip(inputs, (a, b, colour), strict=True):
        tensor.set_data_from_numpy(data, binary_data=binary)
    return inputs


def oip_error(response: httpx.Response, status: int) -> str:
    """The protocol's error body with ``status``: returns its message."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])


# --------------------------------------------------------------------------- server


def test_server_health_and_metadata_are_public(server):
    client = server.triton()
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "aiaas"
    assert "binary_tensor_data" in meta["extensions"]
    assert httpx.get(f"{server.base}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.base}/v2/health/ready").json() == {"ready": True}


# --------------------------------------------------------------------------- model metadata


def test_model_metadata_and_readiness(server, tenants, register):  # noqa: F811
    deploy(server, tenants, register)
    client, headers = server.triton(), tenants.a.headers("viewer")
    meta = client.get_model_metadata("churn-ep", headers=headers)
    assert meta == {
        "name": "churn-ep",
        "versions": ["1"],
        "platform": "onnx_onnxv1",
        "inputs": [
            {"name": "a", "datatype": "FP64", "shape": [-1]},
            {"name": "b", "datatype": "FP64", "shape": [-1]},
            {"name": "colour", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
    }
    assert client.get_model_metadata("churn-ep", "1", headers=headers) == meta
    assert client.is_model_ready("churn-ep", headers=headers)
    assert client.is_model_ready("churn-ep", "1", headers=headers)
    assert not client.is_model_ready("churn-ep", "2", headers=headers)
    assert not client.is_model_ready("nope", headers=headers)
    with pytest.raises(InferenceServerException, match="'churn-ep/2' not found"):
        client.get_model_metadata("churn-ep", "2", headers=headers)
    with pytest.raises(InferenceServerException, match="endpoint 'nope' not found"):
        client.get_model_metadata("nope", headers=headers)
    ready = httpx.get(f"{server.base}/v2/models/churn-ep/ready", headers=headers, timeout=TIMEOUT)
    assert ready.json() == {"name": "churn-ep", "ready": True}
    oip_error(httpx.get(f"{server.base}/v2/models/churn-ep/versions/x", headers=headers), 404)


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, True), (True, False)])
def test_infer_matches_predict(live, tenants, register, binary_in, binary_out):  # noqa: F811
    deploy(live, tenants, register)
    expected = predict(live, tenants, "churn-ep", ROWS)
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary_out),
        triton.InferRequestedOutput("label", binary_data=binary_out),
    ]
    result = live.triton().infer(
        "churn-ep",
        column_inputs(ROWS, binary_in),
        outputs=outputs,
        request_id="req-42",
        headers=tenants.a.headers("viewer"),
    )
    answer = result.get_response()
    assert answer["id"] == "req-42"
    assert (answer["model_name"], answer["model_version"]) == ("churn-ep", "1")
    assert answer["parameters"]["prediction_id_prefix"].startswith("pr_")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (len(ROWS), 2)
    want = np.array([[p["probabilities"]["0"], p["probabilities"]["1"]] for p in expected])
    np.testing.assert_allclose(probabilities, want, rtol=1e-6)
    labels = result.as_numpy("label")
    assert labels.dtype == np.int64
    assert labels.tolist() == [p["label"] for p in expected]


def test_infer_binary_by_default_one_row_and_versioned(server, tenants, register):  # noqa: F811
    """Without ``outputs`` tritonclient asks for every output in binary (request-level
    ``binary_data_output``); a versioned path answers from that version."""
    deploy(server, tenants, register)
    expected = predict(server, tenants, "churn-ep", ROWS[:1])
    result = server.triton().infer(
        "churn-ep",
        column_inputs(ROWS[:1], binary=True),
        model_version="1",
        headers=tenants.a.headers("viewer"),
    )
    answer = result.get_response()
    assert [o["name"] for o in answer["outputs"]] == ["probabilities", "label"]
    assert all("binary_data_size" in o["parameters"] for o in answer["outputs"])
    assert answer["parameters"]["prediction_id"].startswith("pr_")
    assert "id" not in answer
    assert result.as_numpy("label").tolist() == [expected[0]["label"]]
    probability = float(result.as_numpy("probabilities")[0, 1])
    assert probability == pytest.approx(expected[0]["probabilities"]["1"], rel=1e-6)


def test_infer_only_the_requested_outputs(server, tenants, register):  # noqa: F811
    deploy(server, tenants, register)
    result = server.triton().infer(
        "churn-ep",
        column_inputs(ROWS, binary=False),
        outputs=[triton.InferRequestedOutput("label", binary_data=False)],
        headers=tenants.a.headers("viewer"),
    )
    assert result.as_numpy("probabilities") is None
    assert len(result.as_numpy("label")) == len(ROWS)


def test_infer_a_matrix_for_numeric_inputs(server, tenants, register, numeric_model):  # noqa: F811
    register(tenants.a, "prices", model_dir=numeric_model)
    created = httpx.post(
        f"{server.base}/api/v1/endpoints",
        json={"name": "prices-ep", "model": "prices", "version": 1},
        headers=tenants.a.headers("developer"),
        timeout=TIMEOUT,
    )
    assert created.status_code == 201, created.text
    rows = [{"x0": 0.5, "x1": -1.0}, {"x0": -2.0, "x1": 0.25}, {"x0": 1.0, "x1": 1.0}]
    expected = [p["value"] for p in predict(server, tenants, "prices-ep", rows)]
    client, headers = server.triton(), tenants.a.headers("viewer")
    meta = client.get_model_metadata("prices-ep", headers=headers)
    assert meta["outputs"] == [{"name": "value", "datatype": "FP32", "shape": [-1]}]
    matrix = np.array([[r["x0"], r["x1"]] for r in rows], dtype=np.float32)
    for binary in (True, False):
        tensor = triton.InferInput("input-0", list(matrix.shape), "FP32")
        tensor.set_data_from_numpy(matrix, binary_data=binary)
        # a fresh dict each call: tritonclient writes its binary header into the one given
        result = client.infer("prices-ep", [tensor], headers=dict(headers))
        np.testing.assert_allclose(result.as_numpy("value"), expected, rtol=1e-5)


def upload_and_deploy(live: Live, tenants: Tenants, data: bytes, name: str) -> None:
    """An ONNX upload (checked in the registry's sandbox) deployed as ``<name>-ep``."""
    headers = tenants.a.headers("developer")
    files = {"file": ("model.onnx", data, "application/octet-stream")}
    url = f"{live.base}/api/v1/models/{name}/versions"
    uploaded = httpx.post(url, headers=headers, files=files, timeout=2 * TIMEOUT)
    assert uploaded.status_code == 201, uploaded.text
    created = httpx.post(
        f"{live.base}/api/v1/endpoints",
        json={"name": f"{name}-ep", "model": name, "version": 1},
        headers=headers,
        timeout=TIMEOUT,
    )
    assert created.status_code == 201, created.text


def test_an_uploaded_matrix_model(server, tenants):
    """An uploaded ``[N, 4]`` classifier with string classes: its metadata offers the graph's
    own input; the matrix and the per-column forms answer as ``/predict`` does."""
    built = onnx_factory.logistic_binary(labels=("no", "yes"))
    upload_and_deploy(server, tenants, built.data, "lr")
    client, headers = server.triton(), tenants.a.headers("viewer")
    meta = client.get_model_metadata("lr-ep", headers=dict(headers))
    (graph_input,) = meta["inputs"]
    assert graph_input["datatype"] == "FP32"
    assert graph_input["shape"] == [-1, 4]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    X = built.X[:5]
    rows = [{f"x{j}": float(v) for j, v in enumerate(row)} for row in X]
    expected = predict(server, tenants, "lr-ep", rows)
    matrix = triton.InferInput(graph_input["name"], [5, 4], "FP32")
    matrix.set_data_from_numpy(X, binary_data=True)
    columns = []
    for j in range(4):
        column = triton.InferInput(f"x{j}", [5], "FP32")
        column.set_data_from_numpy(np.ascontiguousarray(X[:, j]), binary_data=False)
        columns.append(column)
    for inputs in ([matrix], columns):
        result = client.infer("lr-ep", inputs, headers=dict(headers))
        assert [v.decode() for v in result.as_numpy("label")] == [p["label"] for p in expected]
        want = [p["probabilities"]["yes"] for p in expected]
        np.testing.assert_allclose(result.as_numpy("probabilities")[:, 1], want, rtol=1e-6)


def test_an_uploaded_model_of_one_input_per_column(server, tenants):
    data, frame = onnx_factory.column_pipeline()
    upload_and_deploy(server, tenants, data, "colours")
    client, headers = server.triton(), tenants.a.headers("viewer")
    meta = client.get_model_metadata("colours-ep", headers=dict(headers))
    assert meta["inputs"] == [
        {"name": "amount", "datatype": "FP32", "shape": [-1]},
        {"name": "colour", "datatype": "BYTES", "shape": [-1]},
    ]
    rows = frame.head(6)
    expected = predict(server, tenants, "colours-ep", rows.to_dict("records"))
    amount = triton.InferInput("amount", [6, 1], "FP32")
    amount.set_data_from_numpy(rows["amount"].to_numpy().reshape(-1, 1), binary_data=True)
    colour = triton.InferInput("colour", [6], "BYTES")
    colour.set_data_from_numpy(rows["colour"].to_numpy(dtype=np.object_), binary_data=True)
    result = client.infer("colours-ep", [amount, colour], headers=dict(headers))
    assert result.as_numpy("label").tolist() == [p["label"] for p in expected]
    want = [[p["probabilities"]["0"], p["probabilities"]["1"]] for p in expected]
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-6)


def test_a_matrix_is_refused_for_a_categorical_input(server, tenants, register):  # noqa: F811
    deploy(server, tenants, register)
    tensor = triton.InferInput("input-0", [1, 3], "FP64")
    tensor.set_data_from_numpy(np.array([[1.0, 2.0, 3.0]]), binary_data=False)
    with pytest.raises(InferenceServerException, match="'colour' is categorical"):
        server.triton().infer("churn-ep", [tensor], headers=tenants.a.headers("viewer"))


def test_predictions_are_logged_and_metered(server, tenants, register):  # noqa: F811
    deploy(server, tenants, register)
    server.triton().infer(
        "churn-ep", column_inputs(ROWS, binary=True), headers=tenants.a.headers("viewer")
    )
    serving = app_state(server.app).serving
    view = serving.endpoints.get(tenants.a.org_id, "churn-ep")
    assert view is not None
    assert serving.metrics.usage()[(tenants.a.org_id, "churn-ep")] == (1, len(ROWS))
    assert serving.predictions.flush() == len(ROWS)
    logged = app_state(server.app).store.list(tenants.a.org_id, f"predictions/{view.id}")
    assert list(logged)
    refused = httpx.post(
        f"{server.base}/v2/models/churn-ep/infer",
        content=_request(_good_inputs()[:2]),
        headers=tenants.a.headers("viewer"),
        timeout=TIMEOUT,
    )
    oip_error(refused, 400)
    assert serving.metrics.refusals[(tenants.a.org_id, "churn-ep", 400)] == 1
    assert serving.metrics.usage()[(tenants.a.org_id, "churn-ep")] == (1, len(ROWS))


# --------------------------------------------------------------------------- refusals


def _request(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def _good_inputs(n: int = 1) -> list[dict[str, Any]]:
    return [
        {"name": "a", "shape": [n], "datatype": "FP64", "data": [1.0] * n},
        {"name": "b", "shape": [n], "datatype": "FP64", "data": [0.5] * n},
        {"name": "colour", "shape": [n], "datatype": "BYTES", "data": ["red"] * n},
    ]


def _replace(index: int, **change: Any) -> list[dict[str, Any]]:
    inputs = _good_inputs()
    inputs[index] = {**inputs[index], **change}
    return inputs


def _binary_too_short() -> tuple[bytes, dict[str, str]]:
    a = {"name": "a", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}
    head = _request([a, *_good_inputs()[1:]])
    return head + b"\x00" * 7, {"Inference-Header-Content-Length": str(len(head))}


REFUSED: list[tuple[str, bytes, dict[str, str], str]] = [
    ("bad json", b'{"inputs": [', {}, "not valid JSON"),
    ("empty body", b"", {}, "empty"),
    ("not an object", b"[1, 2]", {}, "JSON object"),
    ("no inputs", _request([]), {}, "non-empty list"),
    ("shape/data mismatch", _request(_replace(0, shape=[2])), {}, "holds 2 elements, its data 1"),
    ("unknown datatype", _request(_replace(0, datatype="FP99")), {}, "unsupported datatype"),
    ("bad data", _request(_replace(0, data=["x"])), {}, "does not fit FP64"),
    ("bytes not strings", _request(_replace(2, data=[1])), {}, "must be strings"),
    ("bytes for a number", _request(_replace(0, datatype="BYTES", data=["1"])), {}, "numeric"),
    ("missing input", _request(_good_inputs()[:2]), {}, "missing input 'colour'"),
    ("wrong input name", _request(_replace(2, name="color")), {}, "unknown input 'color'"),
    ("twice", _request([*_good_inputs(), _good_inputs()[0]]), {}, "given twice"),
    ("huge shape", _request(_replace(0, shape=[10**12])), {}, "holds 1000000000000 elements"),
    ("negative shape", _request(_replace(0, shape=[-1])), {}, "non-negative integers"),
    ("deep shape", _request(_replace(0, shape=[1] * 9)), {}, "1 to 8"),
    ("rows differ", _request(_replace(0, shape=[2], data=[1.0, 2.0])), {}, "differ in rows"),
    ("wide column", _request(_replace(0, shape=[1, 2], data=[1.0, 2.0])), {}, "[N] or [N, 1]"),
    ("no rows", _request([{**i, "shape": [0], "data": []} for i in _good_inputs()]), {}, "no rows"),
    ("unknown output", _request(_good_inputs(), outputs=[{"name": "proba"}]), {}, "unknown output"),
    (
        "header past body",
        _request(_good_inputs()),
        {"Inference-Header-Content-Length": "99999"},
        "longer than the body",
    ),
    ("bad header", _request(_good_inputs()), {"Inference-Header-Content-Length": "x"}, "number"),
    ("binary past body", *_binary_too_short(), "runs past the end"),
    (
        "trailing bytes",
        _request(_good_inputs()) + b"xx",
        {"Inference-Header-Content-Length": str(len(_request(_good_inputs())))},
        "2 bytes after",
    ),
    ("gzip", _request(_good_inputs()), {"Content-Encoding": "gzip"}, "compressed"),
]


def test_malformed_requests_get_the_protocol_error_and_the_server_lives(server, tenants, register):  # noqa: F811
    deploy(server, tenants, register)
    headers = tenants.a.headers("viewer")
    with httpx.Client(base_url=server.base, headers=headers, timeout=TIMEOUT) as http:
        for what, body, extra, message in REFUSED:
            response = http.post("/v2/models/churn-ep/infer", content=body, headers=extra)
            assert message in oip_error(response, 400), what
        big = {
            "name": "a",
            "shape": [10**12],
            "datatype": "FP64",
            "parameters": {"binary_data_size": 8},
        }
        head = _request([big, *_good_inputs()[1:]])
        response = http.post(
            "/v2/models/churn-ep/infer",
            content=head + struct.pack("<d", 1.0),
            headers={"Inference-Header-Content-Length": str(len(head))},
        )
        assert "1000000000000 FP64 elements" in oip_error(response, 400)
    client = server.triton()
    assert client.is_server_live()
    with pytest.raises(InferenceServerException, match="missing input 'colour'"):
        client.infer("churn-ep", column_inputs(ROWS, binary=True)[:2], headers=dict(headers))
    assert client.infer("churn-ep", column_inputs(ROWS, binary=True), headers=dict(headers))


def test_binary_bytes_elements_are_checked(server, tenants, register):  # noqa: F811
    deploy(server, tenants, register)
    colour = {
        "name": "colour",
        "shape": [1],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": 4 + 3},
    }
    head = _request([*_good_inputs()[:2], colour])
    url = f"{server.base}/v2/models/churn-ep/infer"
    for raw, message in [
        (struct.pack("<I", 99) + b"red", "runs past"),
        (struct.pack("<I", 2) + b"\xff\xfe\xfd", "malformed BYTES"),
        (struct.pack("<I", 3) + b"red", None),
    ]:
        response = httpx.post(
            url,
            content=head + raw,
            headers={**tenants.a.headers(), "Inference-Header-Content-Length": str(len(head))},
            timeout=TIMEOUT,
        )
        if message is None:
            assert response.status_code == 200, response.text
        else:
            assert message in oip_error(response, 400)


# --------------------------------------------------------------------------- auth


def test_credentials_are_required_and_refused_in_the_protocol_shape(server, tenants, register):  # noqa: F811
    deploy(server, tenants, register)
    with httpx.Client(base_url=server.base, timeout=TIMEOUT) as http:
        for method, path in MODEL_ROUTES:
            url = path.format(n="churn-ep")
            body = _request(_good_inputs()) if method == "POST" else None
            oip_error(http.request(method, url, content=body), 401)
            bad = {"Authorization": "Bearer nope"}
            oip_error(http.request(method, url, content=body, headers=bad), 401)
        oip_error(http.get("/v2/nothing-here"), 404)
    with pytest.raises(InferenceServerException, match="Authorization"):
        server.triton().get_model_metadata("churn-ep")


def test_another_organizations_endpoint_is_a_404_on_every_route(server, tenants, register):  # noqa: F811
    deploy(server, tenants, register)
    other = tenants.b.headers("owner")
    with httpx.Client(base_url=server.base, headers=other, timeout=TIMEOUT) as http:
        for method, path in MODEL_ROUTES:
            body = _request(_good_inputs()) if method == "POST" else None
            response = http.request(method, path.format(n="churn-ep"), content=body)
            assert "not found" in oip_error(response, 404), (method, path)
    client = server.triton()
    assert not client.is_model_ready("churn-ep", headers=other)
    with pytest.raises(InferenceServerException, match="not found"):
        client.infer("churn-ep", column_inputs(ROWS, binary=True), headers=other)
