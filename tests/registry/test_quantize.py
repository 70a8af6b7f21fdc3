"""``POST /models/{name}/versions/{n}/quantize``: a quantized copy of a version, measured.

Every quantization runs the sandboxed child (:mod:`aiaas.registry.quantize_worker`) and the
upload's check child for real; the refusals that need no child (404, 403, columns, target)
are decided before one starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pytest
from onnx import TensorProto, helper, numpy_helper

from aiaas.db import get_session_factory
from aiaas.jobs.models import Job
from aiaas.registry.models import ModelVersion
from aiaas.registry.quantize import NOTHING_TO_QUANTIZE, measured_from_reply
from aiaas.serving import predictor as serving
from aiaas.serving.views import VersionView
from aiaas.storage import get_store
from tests.conftest import make_dataset
from tests.helpers import assert_problem
from tests.registry import onnx_factory as factory

API = "/api/v1/models"
FEATURES = 8
ROWS = 2000
COLUMNS = [f"x{i}" for i in range(FEATURES)]


Rows = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]


def _rows(seed: int) -> Rows:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = ((X[:, 0] + X[:, 1] * X[:, 2] - 0.5 * X[:, 3]) > 0).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def train() -> Rows:
    """The rows the models are fitted on."""
    return _rows(7)


@pytest.fixture(scope="module")
def rows() -> Rows:
    """Other rows of the same population: the reference datasets."""
    return _rows(8)


@pytest.fixture(scope="module")
def mlp(train: Rows) -> bytes:
    """A binary MLPClassifier (two hidden layers: MatMul weights) as ONNX, zipmap off."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    X, y = train
    model = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=300, random_state=0).fit(X, y)
    proto = to_onnx(
        model,
        X[:1],
        options={id(model): {"zipmap": False}},
        target_opset={"": factory.OPSET, "ai.onnx.ml": factory.ML_OPSET},
    )
    return bytes(proto.SerializeToString())


@pytest.fixture(scope="module")
def tree(train: Rows) -> bytes:
    """A random forest: a TreeEnsembleClassifier node, no weight to quantize."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    X, y = train
    model = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(X, y)
    proto = to_onnx(
        model,
        X[:1],
        options={id(model): {"zipmap": False}},
        target_opset={"": factory.OPSET, "ai.onnx.ml": factory.ML_OPSET},
    )
    return bytes(proto.SerializeToString())


def gemm_regressor() -> bytes:
    """``[N, 8] → Gemm(transB) → Relu → Gemm → [N, 1]``, as PyTorch exports linear layers."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.normal(size=(32, FEATURES)).astype(np.float32), "W1")
    b1 = numpy_helper.from_array(rng.normal(size=(32,)).astype(np.float32), "B1")
    w2 = numpy_helper.from_array(rng.normal(size=(1, 32)).astype(np.float32) / 8, "W2")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["X", "W1", "B1"], ["H"], transB=1, name="fc1"),
            helper.make_node("Relu", ["H"], ["R"]),
            helper.make_node("Gemm", ["R", "W2"], ["Y"], transB=1, alpha=0.5, name="fc2"),
        ],
        "linear_layers",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        [w1, b1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", factory.OPSET)])
    return bytes(model.SerializeToString())


def upload(client: Any, headers: dict[str, str], data: bytes, name: str, **fields: str) -> Any:
    response = client.post(
        f"{API}/{name}/versions",
        headers=headers,
        files={"file": ("model.onnx", data, "application/octet-stream")},
        data=fields,
    )
    assert response.status_code == 201, response.text
    return response.json()


def quantize(client: Any, headers: dict[str, str], name: str, number: int, **body: Any) -> Any:
    return client.post(f"{API}/{name}/versions/{number}/quantize", headers=headers, json=body)


def reference(settings: Any, tenant: Any, X: Any, y: Any, **extra: Any) -> str:
    """A dataset of the rows (``x0..x7`` and ``y``); its id."""
    columns: dict[str, Any] = {name: X[:, i].astype(np.float64) for i, name in enumerate(COLUMNS)}
    table = pa.table({**columns, "y": y, **extra})
    return make_dataset(settings, tenant, table, name=f"ref-{len(extra)}").id


def stored_view(settings: Any, version_id: str) -> VersionView:
    with get_session_factory(settings.resolved_database_url)() as session:
        v = session.get(ModelVersion, version_id)
        assert v is not None
        return VersionView(
            id=v.id,
            org_id=v.org_id,
            model_name=v.model.name,
            number=v.number,
            task=v.task,
            signature=dict(v.signature),
            artifacts=tuple(str(a["path"]) for a in v.artifacts),
            storage_prefix=v.storage_prefix,
            size_bytes=v.size_bytes,
        )


def served(settings: Any, version_id: str, table: serving.Table) -> np.ndarray[Any, Any]:
    store = get_store(settings.resolved_artifacts_url)
    return serving.load(store, stored_view(settings, version_id), threads=1).predict(
        table, strict_categories=False
    )


def check_side(side: dict[str, Any], score_names: set[str]) -> None:
    assert set(side["scores"]) == score_names
    for key in ("1_row", "64_rows"):
        entry = side["latency_ms"][key]
        assert 0 < entry["median"] <= entry["p99"] < 1000
        assert entry["calls"] >= 10
    assert side["size_bytes"] > 0


# --------------------------------------------------------------------------- quantized


def check_mlp_metrics(m: dict[str, Any], dataset_id: str, source_size: int) -> None:
    """The reference report of the MLP: plausible scores, a smaller file, both timed."""
    assert m["reference"] == {
        "dataset_id": dataset_id,
        "version": 1,
        "target": "y",
        "rows": ROWS,
        "rows_scored": ROWS,
        "max_rows": 20_000,
    }
    check_side(m["source"], {"accuracy", "roc_auc"})
    check_side(m["quantized"], {"accuracy", "roc_auc"})
    assert m["source"]["version"] == 1
    assert m["source"]["size_bytes"] == source_size
    assert m["source"]["scores"]["accuracy"] > 0.9  # the MLP generalises to unseen rows
    assert abs(m["change"]["accuracy"]) <= 0.03
    assert abs(m["change"]["roc_auc"]) <= 0.03
    assert m["quantized"]["size_bytes"] < 0.6 * source_size
    assert m["change"]["size_ratio"] == pytest.approx(m["quantized"]["size_bytes"] / source_size)
    assert m["agreement"] >= 0.97
    assert 0 <= m["max_abs_diff"] < 0.5


def test_mlp_is_quantized_into_the_next_version(client, tenants, settings, rows, mlp, tmp_path):
    X, y = rows
    h = tenants.a.headers("developer")
    source = upload(client, h, mlp, "mlp")
    dataset_id = reference(settings, tenants.a, X, y)

    r = quantize(client, h, "mlp", 1, dataset_id=dataset_id, target="y")

    assert r.status_code == 201, r.text
    v = r.json()
    assert (v["model_name"], v["number"], v["task"]) == ("mlp", 2, "binary")
    assert v["metric"] == "accuracy"
    assert v["lineage"] == {
        "source": "quantized",
        "from_version": 1,
        "reference": {"dataset_id": dataset_id, "version": 1, "rows": ROWS},
    }
    assert v["signature"] == source["signature"]
    check_mlp_metrics(v["metrics"], dataset_id, source["size_bytes"])
    assert [a["path"] for a in v["artifacts"]] == ["model.onnx"]
    assert v["size_bytes"] == v["metrics"]["quantized"]["size_bytes"] == v["artifacts"][0]["size"]
    (tmp_path / "quantize-numbers.json").write_text(json.dumps(v["metrics"], indent=2))

    # the stored graph holds integer MatMuls, and the new version is served
    graph = client.get(f"{API}/mlp/versions/2/onnx", headers=h).content
    ops = {n.op_type for n in onnx.load_model_from_string(graph).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    assert "MatMul" not in ops
    table = serving.Table(50, {c: X[:50, i].tolist() for i, c in enumerate(COLUMNS)})
    before, after = served(settings, source["id"], table), served(settings, v["id"], table)
    assert after.shape == (50, 2)
    assert np.mean(np.argmax(before, 1) == np.argmax(after, 1)) >= 0.95

    card = client.get(f"{API}/mlp/versions/2/card", headers=h).text
    assert "- Quantized from version 1: dynamic quantization, 8-bit integer weights" in card
    assert f"dataset `{dataset_id}` version 1, 2000 rows" in card
    assert "| accuracy |" in card
    assert "| file size (bytes) |" in card
    assert "## Scores" not in card


def test_gemm_layers_are_rewritten_and_quantized(client, tenants, settings, rows):
    """PyTorch's linear layers are Gemm nodes, which ORT's dynamic quantization skips:
    they become MatMul (+ Add) first. A regression model is measured by RMSE and MAE."""
    X, _ = rows
    h = tenants.a.headers("developer")
    data = gemm_regressor()
    upload(client, h, data, "torchish")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    truth = np.asarray(session.run(["Y"], {"X": X})[0]).reshape(-1)
    dataset_id = reference(settings, tenants.a, X, truth.astype(np.float64))

    r = quantize(client, h, "torchish", 1, dataset_id=dataset_id, target="y")

    assert r.status_code == 201, r.text
    m = r.json()["metrics"]
    check_side(m["source"], {"rmse", "mae"})
    check_side(m["quantized"], {"rmse", "mae"})
    assert m["source"]["scores"]["rmse"] < 1e-5  # the target is the source's own output
    assert 0 < m["quantized"]["scores"]["rmse"] < 0.1 * float(np.std(truth))
    assert m["agreement"] is None
    graph = client.get(f"{API}/torchish/versions/2/onnx", headers=h).content
    ops = [n.op_type for n in onnx.load_model_from_string(graph).graph.node]
    assert ops.count("MatMulInteger") == 2
    assert "Gemm" not in ops


def training_job(settings: Any, tenant: Any, target: str) -> str:
    """A finished training job's row (what records a trained version's target); its id."""
    with get_session_factory(settings.resolved_database_url)() as session, session.begin():
        job = Job(
            org_id=tenant.org_id,
            kind="training.run",
            spec={"dataset_id": "ds_x", "dataset_version": 1, "target": target},
            status="succeeded",
            max_attempts=1,
        )
        session.add(job)
        session.flush()
        return job.id


def test_trained_version_gets_the_encoded_matrix(
    client, tenants, settings, register, mlp_saved_model
):
    """A trained version's graph takes the encoded matrix (a category becomes its code):
    the child loads it with the serving predictor, so both graphs see what serving feeds.
    The target defaults to the training job's; a quantized version's to its reference's."""
    model_dir, frame = mlp_saved_model
    h = tenants.a.headers("developer")
    register(
        tenants.a, "trained", model_dir=model_dir, job_id=training_job(settings, tenants.a, "y")
    )
    dataset_id = make_dataset(settings, tenants.a, pa.Table.from_pandas(frame), name="t").id

    r = quantize(client, h, "trained", 1, dataset_id=dataset_id)  # the training job's target

    assert r.status_code == 201, r.text
    v = r.json()
    assert sorted(a["path"] for a in v["artifacts"]) == ["encoding.json", "model.onnx"]
    assert v["metrics"]["reference"]["target"] == "y"
    assert abs(v["metrics"]["change"]["accuracy"]) <= 0.05
    table = serving.Table(len(frame), {c: frame[c].tolist() for c in frame.columns if c != "y"})
    assert served(settings, v["id"], table).shape == (len(frame), 2)
    # its integer MatMuls are no weights to quantize again; the target was found
    r = quantize(client, h, "trained", 2, dataset_id=dataset_id)
    assert assert_problem(r, 422)["detail"] == NOTHING_TO_QUANTIZE


def test_a_version_without_an_onnx_graph(
    client, tenants, settings, register, saved_model_without_onnx, rows
):
    X, y = rows
    register(tenants.a, "native", model_dir=saved_model_without_onnx)
    dataset_id = reference(settings, tenants.a, X, y)
    r = quantize(client, tenants.a.headers("developer"), "native", 1, dataset_id=dataset_id)
    detail = "version 1 of model 'native' has no ONNX graph to quantize"
    assert assert_problem(r, 422)["detail"] == detail


@pytest.fixture(scope="module")
def mlp_saved_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A model trained by the platform's AutoML (the MLP family), with a category column."""
    import pandas as pd

    from aiaas import automl

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], n),
        }
    )
    frame["y"] = ((frame["a"] + (frame["colour"] == "red")) > 0.5).astype(int)
    model = automl.fit(frame, "y", time_budget=30, families=["mlp"], ensemble=False, max_trials=1)
    return model.save(tmp_path_factory.mktemp("mlp") / "model"), frame


# --------------------------------------------------------------------------- refused


def test_tree_model_has_nothing_to_quantize(client, tenants, settings, rows, tree):
    X, y = rows
    h = tenants.a.headers("developer")
    upload(client, h, tree, "forest")
    dataset_id = reference(settings, tenants.a, X, y)

    r = quantize(client, h, "forest", 1, dataset_id=dataset_id, target="y")

    assert assert_problem(r, 422)["detail"] == NOTHING_TO_QUANTIZE
    assert client.get(f"{API}/forest", headers=h).json()["latest_version"] == 1


def test_reference_without_a_model_column_or_the_target(client, tenants, settings, rows, mlp):
    X, y = rows
    h = tenants.a.headers("developer")
    upload(client, h, mlp, "mlp")
    table = pa.table({name: X[:, i].astype(np.float64) for i, name in enumerate(COLUMNS[:-1])})
    no_x7 = make_dataset(settings, tenants.a, table.append_column("y", pa.array(y)), name="a").id
    with_x7 = table.append_column("x7", pa.array(X[:, 7].astype(np.float64)))
    no_target = make_dataset(settings, tenants.a, with_x7, name="b").id

    r = quantize(client, h, "mlp", 1, dataset_id=no_x7, target="y")
    assert assert_problem(r, 422)["detail"] == (
        f"the reference dataset {no_x7!r} (version 1) has no column 'x7', which the model takes"
    )
    r = quantize(client, h, "mlp", 1, dataset_id=no_target, target="y")
    assert assert_problem(r, 422)["detail"] == (
        f"the reference dataset {no_target!r} (version 1) has no column 'y' (the target)"
    )
    r = quantize(client, h, "mlp", 1, dataset_id=no_target)  # an upload records no target
    assert assert_problem(r, 422)["detail"] == (
        "name the target: the reference dataset's column with the true label or value "
        "(version 1 has no recorded target)"
    )
    assert client.get(f"{API}/mlp", headers=h).json()["latest_version"] == 1


def test_null_cells_are_refused_naming_row_and_column(client, tenants, settings, rows, mlp):
    X, y = rows
    h = tenants.a.headers("developer")
    upload(client, h, mlp, "mlp")
    x3 = pa.array([None if i == 5 else float(v) for i, v in enumerate(X[:, 3])])
    table = pa.table({c: X[:, i].astype(np.float64) for i, c in enumerate(COLUMNS)})
    table = table.set_column(3, "x3", x3).append_column("y", pa.array(y))
    dataset_id = make_dataset(settings, tenants.a, table, name="holes").id

    r = quantize(client, h, "mlp", 1, dataset_id=dataset_id, target="y")

    assert assert_problem(r, 422)["detail"] == (
        "row 5, column 'x3': a finite number is required (rows of the reference dataset "
        "count from 0)"
    )


def test_unknown_dataset_version_and_model(client, tenants, settings, rows, mlp):
    X, y = rows
    h = tenants.a.headers("developer")
    upload(client, h, mlp, "mlp")
    dataset_id = reference(settings, tenants.a, X, y)
    body = {"dataset_id": dataset_id, "target": "y"}
    assert_problem(quantize(client, h, "mlp", 1, dataset_id="ds_nope", target="y"), 404)
    assert_problem(quantize(client, h, "mlp", 1, **body, dataset_version=2), 404)
    assert_problem(quantize(client, h, "mlp", 9, **body), 404)
    assert_problem(quantize(client, h, "nope", 1, **body), 404)
    assert_problem(quantize(client, h, "mlp", 1, **body, extra=1), 422)


def test_roles_and_tenants(client, tenants, settings, rows, mlp):
    X, y = rows
    upload(client, tenants.a.headers("developer"), mlp, "mlp")
    dataset_a = reference(settings, tenants.a, X, y)
    dataset_b = reference(settings, tenants.b, X, y)
    body = {"dataset_id": dataset_a, "target": "y"}

    assert_problem(quantize(client, tenants.a.headers("viewer"), "mlp", 1, **body), 403)
    # another organization's model, and another organization's dataset: not found
    assert_problem(quantize(client, tenants.b.headers("owner"), "mlp", 1, **body), 404)
    other = {"dataset_id": dataset_b, "target": "y"}
    r = quantize(client, tenants.a.headers("owner"), "mlp", 1, **other)
    assert assert_problem(r, 404)["detail"].startswith("dataset")


GOOD_SIDE: dict[str, Any] = {
    "scores": {"accuracy": 0.9, "roc_auc": 0.95},
    "latency_ms": {
        "1_row": {"median": 0.1, "p99": 0.3, "calls": 300},
        "64_rows": {"median": 0.2, "p99": 0.5, "calls": 100},
    },
}
GOOD_REPLY: dict[str, Any] = {
    "ok": True,
    "rows": 100,
    "rows_scored": 90,
    "weights": 3,
    "integer_ops": 3,
    "gemm_rewritten": 0,
    "source": GOOD_SIDE,
    "quantized": GOOD_SIDE,
    "agreement": 0.99,
    "max_abs_diff": 0.01,
}
BAD_REPLIES: dict[str, dict[str, Any]] = {
    "more rows than asked": {"rows": 10**6},
    "more scored than read": {"rows_scored": 101},
    "a NaN accuracy": {"source": {**GOOD_SIDE, "scores": {"accuracy": float("nan")}}},
    "an accuracy above 1": {"quantized": {**GOOD_SIDE, "scores": {"accuracy": 1.5}}},
    "no accuracy": {"quantized": {**GOOD_SIDE, "scores": {"roc_auc": 0.5}}},
    "a regression score": {"source": {**GOOD_SIDE, "scores": {"accuracy": 0.9, "rmse": 1}}},
    "a negative latency": {
        "source": {**GOOD_SIDE, "latency_ms": {"1_row": {"median": -1, "p99": 1, "calls": 1}}}
    },
    "a string count": {"weights": "3"},
    "a boolean count": {"integer_ops": True},
    "no agreement": {"agreement": None},
    "no latency": {"source": {"scores": {"accuracy": 0.9}}},
}


@pytest.mark.parametrize("case", list(BAD_REPLIES))
def test_the_childs_answer_is_checked_field_by_field(case):
    """The child parsed a user's graph: a number out of range or of the wrong type is no
    answer (the route says "the quantizing process gave no usable answer")."""
    assert measured_from_reply(GOOD_REPLY, max_rows=100, task="binary").rows_scored == 90
    with pytest.raises((KeyError, TypeError, ValueError)):
        measured_from_reply({**GOOD_REPLY, **BAD_REPLIES[case]}, max_rows=100, task="binary")
