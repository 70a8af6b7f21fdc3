"""Bring your own model: ``POST /models/{name}/versions`` with an ONNX file.

Real models are built in the test session (``onnx_factory``); every upload runs the
sandboxed check child for real. Hostile files end as a 4xx problem naming what is wrong,
with nothing stored, no model created, no scratch left and the server still answering.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from aiaas.data.scratch import scratch_root
from aiaas.db import get_session_factory
from aiaas.registry.models import ModelVersion
from aiaas.serving import predictor as serving
from aiaas.serving.views import VersionView
from aiaas.storage import ArtifactStore, get_store
from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem
from tests.registry import onnx_factory as factory
from tests.registry.conftest import model_files

API = "/api/v1/models"
NOT_LOADED = "the ONNX file could not be loaded"
MATRIX_COLUMNS = ["x0", "x1", "x2", "x3"]


@pytest.fixture(scope="module")
def binary() -> factory.Built:
    return factory.logistic_binary()


@pytest.fixture(scope="module")
def multiclass() -> factory.Built:
    return factory.logistic_multiclass()


@pytest.fixture(scope="module")
def regressor() -> factory.Built:
    return factory.ridge_regressor()


@pytest.fixture(scope="module")
def lightgbm() -> factory.Built:
    return factory.lightgbm_classifier()


def upload(
    client: Any,
    headers: dict[str, str],
    data: bytes,
    name: str = "churn",
    *,
    filename: str = "model.onnx",
    **fields: str,
) -> Any:
    return client.post(
        f"{API}/{name}/versions",
        headers=headers,
        files={"file": (filename, data, "application/octet-stream")},
        data=fields,
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def matrix_inputs(names: list[str] = MATRIX_COLUMNS) -> list[dict[str, Any]]:
    return [
        {"name": n, "type": "float", "used": True, "required": True, "kind": "numeric"}
        for n in names
    ]


def stored_version(settings: Any, version_id: str) -> VersionView:
    """The serving view of a committed version, read from the database."""
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


def stored_store(settings: Any) -> ArtifactStore:
    return get_store(settings.resolved_artifacts_url)


def ort_run(data: bytes, output: str, feed: dict[str, Any]) -> np.ndarray[Any, Any]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([output], feed)[0])


def matrix_table(X: np.ndarray[Any, Any], names: list[str] = MATRIX_COLUMNS) -> serving.Table:
    return serving.Table(len(X), {n: X[:, i].tolist() for i, n in enumerate(names)})


# --------------------------------------------------------------------------- models that fit


def test_binary_classifier_becomes_version_1_of_a_new_model(client, tenants, binary, settings):
    h = tenants.a.headers("developer")
    r = upload(client, h, binary.data, filename="../dir/churn model.onnx", description="v1 lr")
    assert r.status_code == 201, r.text
    v = r.json()
    assert (v["model_name"], v["number"], v["task"], v["metric"]) == ("churn", 1, "binary", "none")
    assert v["metrics"] == {}
    assert v["signature"] == {
        "inputs": matrix_inputs(),
        "output": {"type": "label", "classes": [0, 1]},
        "classes": [0, 1],
        "onnx": {
            "file": "model.onnx",
            "layout": "matrix",
            "input": "X",
            "dtype": "float32",
            "probabilities": "probabilities",
            "label": "label",
            "value": None,
        },
    }
    digest = sha(binary.data)
    assert v["lineage"] == {
        "source": "upload",
        "filename": "churn_model.onnx",
        "sha256": digest,
        "description": "v1 lr",
    }
    assert v["artifacts"] == [{"path": "model.onnx", "size": len(binary.data), "sha256": digest}]
    assert (v["size_bytes"], v["has_onnx"], v["job_id"]) == (len(binary.data), True, None)
    assert (v["feature_importance"], v["tags"], v["aliases"]) == (None, {}, [])
    assert v["created_by"] == tenants.a.key_ids["developer"]
    assert "storage_prefix" not in v

    # it reads back like any version; the model was created with it
    hv = tenants.a.headers("viewer")
    assert client.get(f"{API}/churn/versions/1", headers=hv).json() == v
    model = client.get(f"{API}/churn", headers=hv).json()
    assert (model["id"], model["latest_version"]) == (v["model_id"], 1)
    onnx = client.get(f"{API}/churn/versions/1/onnx", headers=hv)
    assert onnx.status_code == 200
    assert onnx.content == binary.data
    assert onnx.headers["etag"] == f'"{digest}"'
    assert len(model_files(stored_store(settings), tenants.a.org_id)) == 1
    assert list(scratch_root(settings).iterdir()) == []


def test_the_card_of_an_uploaded_version(client, tenants, binary):
    h = tenants.a.headers("developer")
    assert upload(client, h, binary.data).status_code == 201
    r = client.get(f"{API}/churn/versions/1/card", headers=h)
    assert r.status_code == 200
    card = r.text
    assert card.startswith("# churn — version 1\n")
    assert "- Task: **binary**" in card
    assert "- How the task was chosen: inferred from the graph's outputs" in card
    assert "- Model: uploaded ONNX graph \\(skl2onnx " in card
    assert "| x0 | float | yes |" in card
    assert "## Data" not in card  # no dataset, no training job
    assert "the platform neither trained nor scored it" in card
    assert upload(client, h, binary.data, task="binary").status_code == 201
    card = client.get(f"{API}/churn/versions/2/card", headers=h).text
    assert "- How the task was chosen: given with the upload" in card


def test_multiclass_and_regression_are_inferred(client, tenants, multiclass, regressor):
    h = tenants.a.headers("developer")
    r = upload(client, h, multiclass.data, "iris")
    assert r.status_code == 201, r.text
    v = r.json()
    assert (v["task"], v["signature"]["classes"]) == ("multiclass", [0, 1, 2])
    assert v["signature"]["output"] == {"type": "label", "classes": [0, 1, 2]}

    r = upload(client, h, regressor.data, "price")
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["task"] == "regression"
    assert v["signature"]["inputs"] == matrix_inputs()
    assert (v["signature"]["output"], v["signature"]["classes"]) == ({"type": "number"}, None)
    assert v["signature"]["onnx"] == {
        "file": "model.onnx",
        "layout": "matrix",
        "input": "X",
        "dtype": "float32",
        "probabilities": None,
        "label": None,
        "value": "variable",
    }


def test_lightgbm_classifier_through_onnxmltools(client, tenants, lightgbm):
    h = tenants.a.headers("developer")
    r = upload(client, h, lightgbm.data, "gbm")
    assert r.status_code == 201, r.text
    v = r.json()
    assert (v["task"], v["signature"]["classes"]) == ("multiclass", [0, 1, 2])
    assert v["signature"]["onnx"] == {
        "file": "model.onnx",
        "layout": "matrix",
        "input": "input",
        "dtype": "float32",
        "probabilities": "probabilities",
        "label": "label",
        "value": None,
    }


@pytest.mark.parametrize(
    ("labels", "classes"), [(("stay", "leave"), ["leave", "stay"]), ((7, 3), [3, 7])]
)
def test_the_graphs_own_labels_are_the_classes(client, tenants, labels, classes):
    built = factory.logistic_binary(labels=labels)
    h = tenants.a.headers("developer")
    r = upload(client, h, built.data)
    assert r.status_code == 201, r.text
    assert r.json()["signature"]["classes"] == classes  # in the graph's own order
    assert r.json()["signature"]["output"] == {"type": "label", "classes": classes}


def test_a_signature_names_the_columns(client, tenants, binary):
    h = tenants.a.headers("developer")
    names = ["age", "income", "score", "tenure"]
    r = upload(client, h, binary.data, signature=json.dumps({"columns": names}))
    assert r.status_code == 201, r.text
    assert r.json()["signature"]["inputs"] == matrix_inputs(names)

    typed = {"inputs": [{"name": n, "type": "float"} for n in names], "classes": [0, 1]}
    r = upload(client, h, binary.data, signature=json.dumps(typed), task="binary")
    assert r.status_code == 201, r.text
    assert r.json()["number"] == 2
    assert [c["name"] for c in r.json()["signature"]["inputs"]] == names


def test_columns_layout_with_a_string_column_is_served(client, tenants, settings):
    data, frame = factory.column_pipeline()
    h = tenants.a.headers("developer")
    r = upload(client, h, data, "colours")
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["task"] == "binary"
    assert v["signature"]["inputs"] == [
        {"name": "amount", "type": "float", "used": True, "required": True, "kind": "numeric"},
        {"name": "colour", "type": "string", "used": True, "required": True, "kind": "categorical"},
    ]
    assert v["signature"]["onnx"] == {
        "file": "model.onnx",
        "layout": "columns",
        "probabilities": "probabilities",
        "label": "label",
        "value": None,
    }
    predictor = serving.load(stored_store(settings), stored_version(settings, v["id"]), threads=1)
    rows = frame.head(25)
    got = predictor.predict(
        serving.Table(
            len(rows),
            {"amount": rows["amount"].tolist(), "colour": rows["colour"].tolist()},
        ),
        strict_categories=False,
    )
    feed = {
        "amount": rows[["amount"]].to_numpy(np.float32),
        "colour": rows[["colour"]].to_numpy(object),
    }
    np.testing.assert_array_equal(got, ort_run(data, "probabilities", feed))


@pytest.mark.parametrize("kind", ["binary", "multiclass", "lightgbm", "regressor"])
def test_serving_loads_an_uploaded_version_and_matches_onnxruntime(
    client, tenants, settings, request, kind
):
    built: factory.Built = request.getfixturevalue(kind)
    h = tenants.a.headers("developer")
    r = upload(client, h, built.data, kind)
    assert r.status_code == 201, r.text
    v = r.json()
    view = stored_version(settings, v["id"])
    predictor = serving.load(stored_store(settings), view, threads=1)
    rows = built.X[:50]
    got = predictor.predict(matrix_table(rows), strict_categories=False)
    onnx = v["signature"]["onnx"]
    want = ort_run(built.data, onnx["value"] or onnx["probabilities"], {onnx["input"]: rows})
    if kind == "regressor":
        want = want.reshape(-1)
        assert got.shape == (50,)
    else:
        assert got.shape == (50, len(v["signature"]["classes"]))
        assert predictor.classes == v["signature"]["classes"]
    np.testing.assert_array_equal(got, want)


def test_a_new_version_of_a_trained_model(client, tenants, binary, register):
    trained = register(tenants.a, "churn")
    h = tenants.a.headers("developer")
    r = upload(client, h, binary.data, "CHURN")  # names regardless of case
    assert r.status_code == 201, r.text
    v = r.json()
    assert (v["model_id"], v["model_name"], v["number"]) == (trained.model_id, "churn", 2)
    listed = client.get(f"{API}/churn/versions", headers=h).json()["items"]
    assert [(x["number"], x["metric"]) for x in listed] == [(2, "none"), (1, "roc_auc")]


# --------------------------------------------------------------------------- refused


def assert_refused(
    client: Any, tenants: Any, settings: Any, response: Any, status: int, detail: str
) -> None:
    """``response`` is the problem named, and the refusal left nothing behind."""
    body = assert_problem(response, status)
    assert body["detail"] == detail
    h = tenants.a.headers("viewer")
    assert client.get(API, headers=h).json()["items"] == []  # the server answers; no model
    assert model_files(stored_store(settings), tenants.a.org_id) == []
    root = scratch_root(settings)
    assert not root.exists() or list(root.iterdir()) == []


def _signature_text(names: list[str]) -> str:
    return json.dumps({"columns": names})


HOSTILE_FILES = {
    "empty": (lambda: b"", f"{NOT_LOADED}: the file is empty"),
    "a PNG": (
        lambda: b"\x89PNG\r\n\x1a\n" + bytes(100),
        f"{NOT_LOADED}: it is not an ONNX (protobuf) file",
    ),
    # starts like a model (ir_version's tag), so it is parsed in the sandbox
    "random bytes": (
        lambda: b"\x08" + np.random.default_rng(1).bytes(4096),
        f"{NOT_LOADED}: it is not an ONNX model (Error parsing message with type "
        "'onnx.ModelProto': Wire format was corrupt)",
    ),
    "custom op domain": (
        factory.custom_domain,
        f"{NOT_LOADED}: it uses operators of the non-standard domain 'com.evil'; only the "
        "standard domains ('', 'ai.onnx', 'ai.onnx.ml') are allowed",
    ),
    "external data": (
        factory.external_data,
        f"{NOT_LOADED}: tensor 'W' keeps its data in an external file; upload a "
        "self-contained model (no external data)",
    ),
    "memory bomb": (
        factory.memory_bomb,
        f"{NOT_LOADED}: it does not run on 2 rows of zeros (it needed more memory than allowed)",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_hostile_files_are_refused(client, tenants, settings, case):
    build, detail = HOSTILE_FILES[case]
    r = upload(client, tenants.a.headers("developer"), build())
    assert_refused(client, tenants, settings, r, 422, detail)


def test_a_truncated_model_is_refused(client, tenants, settings, binary):
    r = upload(client, tenants.a.headers("developer"), binary.data[: len(binary.data) // 2])
    detail = (
        f"{NOT_LOADED}: it is not an ONNX model (Error parsing message with type "
        "'onnx.ModelProto': Wire format was corrupt)"
    )
    assert_refused(client, tenants, settings, r, 422, detail)


def test_a_pickle_named_model_onnx_is_never_unpickled(client, tenants, settings, tmp_path):
    canary = tmp_path / "canary"
    r = upload(client, tenants.a.headers("developer"), factory.evil_pickle(str(canary)))
    detail = f"{NOT_LOADED}: it is not an ONNX (protobuf) file"
    assert_refused(client, tenants, settings, r, 422, detail)
    assert not canary.exists()


def test_a_zipmap_classifier_is_refused(client, tenants, settings):
    r = upload(client, tenants.a.headers("developer"), factory.logistic_zipmap().data)
    detail = (
        "the graph's output 'output_probability' is a ZipMap (a sequence of maps); convert "
        "the classifier with zipmap=False (skl2onnx: options={'zipmap': False}; onnxmltools: "
        "zipmap=False)"
    )
    assert_refused(client, tenants, settings, r, 422, detail)


def test_a_file_over_the_limit_is_413(client, tenants, settings, binary):
    settings.registry.max_onnx_bytes = len(binary.data) - 1
    r = upload(client, tenants.a.headers("developer"), binary.data)
    detail = f"the file exceeds the limit of {len(binary.data) - 1} bytes"
    assert_refused(client, tenants, settings, r, 413, detail)
    settings.registry.max_onnx_bytes = len(binary.data)
    assert upload(client, tenants.a.headers("developer"), binary.data).status_code == 201


BAD_FORMS: dict[str, tuple[dict[str, str], str]] = {
    "signature not JSON": (
        {"signature": "{columns: [a]}"},
        "invalid signature: it is not valid JSON",
    ),
    "signature unknown key": (
        {"signature": '{"cols": ["a"]}'},
        "invalid signature: cols: Extra inputs are not permitted",
    ),
    "signature both lists": (
        {"signature": '{"columns": ["a"], "inputs": [{"name": "a"}]}'},
        "invalid signature: give the columns either as 'inputs' or as 'columns', not both",
    ),
    "signature twice a column": (
        {"signature": '{"columns": ["a", "A"]}'},
        "invalid signature: the signature names a column twice (regardless of case)",
    ),
    "unknown field": (
        {"format": "onnx"},
        "unknown form field 'format' (the fields are file, signature, task, description)",
    ),
    "unknown task": (
        {"task": "ranking"},
        "invalid task: it is one of binary, multiclass, regression",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FORMS))
def test_bad_form_fields_are_422_before_the_check(client, tenants, settings, binary, case):
    fields, detail = BAD_FORMS[case]
    r = upload(client, tenants.a.headers("developer"), binary.data, **fields)
    assert_refused(client, tenants, settings, r, 422, detail)


WRONG_SIGNATURES: dict[str, tuple[dict[str, str], str]] = {
    "task regression for a classifier": (
        {"task": "regression"},
        "task regression needs one float output of shape [N] or [N, 1]",
    ),
    "task multiclass for two classes": (
        {"task": "multiclass"},
        "task multiclass needs 3 or more classes; a 2-class model is binary",
    ),
    "too few columns": (
        {"signature": _signature_text(["a", "b", "c"])},
        "the signature names 3 columns; the graph's input 'X' takes 4",
    ),
    "a wrong column type": (
        {"signature": json.dumps({"inputs": [{"name": c, "type": "double"} for c in "abcd"]})},
        "the signature says column 'a' is double; the graph takes float",
    ),
    "other classes": (
        {"signature": json.dumps({"classes": ["no", "yes"]})},
        "the signature's classes ['no', 'yes'] differ from the graph's own [0, 1]",
    ),
}


@pytest.mark.parametrize("case", list(WRONG_SIGNATURES))
def test_a_signature_or_task_that_does_not_fit_is_422(client, tenants, settings, binary, case):
    fields, detail = WRONG_SIGNATURES[case]
    r = upload(client, tenants.a.headers("developer"), binary.data, **fields)
    assert_refused(client, tenants, settings, r, 422, detail)


def test_classes_of_a_regressor_and_binary_for_three_classes(
    client, tenants, settings, multiclass, regressor
):
    h = tenants.a.headers("developer")
    r = upload(client, h, regressor.data, signature=json.dumps({"classes": [0, 1]}))
    detail = "a regression model has no classes (the signature names some)"
    assert_refused(client, tenants, settings, r, 422, detail)
    r = upload(client, h, multiclass.data, task="binary")
    detail = "task binary needs 2 probability columns; the graph gives 3"
    assert_refused(client, tenants, settings, r, 422, detail)


def test_malformed_requests(client, tenants, settings, binary):
    h = tenants.a.headers("developer")
    r = client.post(f"{API}/churn/versions", headers=h, files={"other": ("m.txt", b"hi")})
    assert_refused(client, tenants, settings, r, 422, "the multipart body has no 'file' part")
    r = client.post(f"{API}/churn/versions", headers=h, json={"file": "x"})
    detail = "this route takes multipart/form-data, not application/json"
    assert_refused(client, tenants, settings, r, 415, detail)
    r = upload(client, h, binary.data, "bad name!")
    assert_refused(client, tenants, settings, r, 422, "the request did not validate")
    assert assert_problem(r, 422)["errors"][0]["loc"] == ["path", "name"]


# --------------------------------------------------------------------------- roles, tenants


def test_viewer_may_not_upload(client, tenants, settings, binary):
    r = upload(client, tenants.a.headers("viewer"), binary.data)
    assert_refused(client, tenants, settings, r, 403, "role 'viewer' may not model:write")
    r = upload(client, tenants.a.headers("developer"), binary.data)
    assert r.status_code == 201, r.text


def test_an_org_cannot_add_to_or_see_another_orgs_model(client, tenants, binary, regressor):
    a = upload(client, tenants.a.headers("developer"), binary.data, "fraud")
    assert a.status_code == 201, a.text
    mine = a.json()
    hb = tenants.b.headers("owner")
    for url in (f"{API}/fraud", f"{API}/fraud/versions/1"):
        assert_cross_tenant_404(client, url, hb, json={"tags": {}})
    assert_cross_tenant_404(client, f"{API}/fraud/versions/1/onnx", hb, methods=("GET",))
    assert_not_listed(client, API, hb, mine["model_id"])

    # the same name in B is B's own model: version 1, not version 2 of A's
    b = upload(client, hb, regressor.data, "fraud")
    assert b.status_code == 201, b.text
    theirs = b.json()
    assert theirs["number"] == 1
    assert theirs["model_id"] != mine["model_id"]
    ha = tenants.a.headers("viewer")
    again = client.get(f"{API}/fraud", headers=ha).json()
    assert (again["id"], again["latest_version"]) == (mine["model_id"], 1)
    assert client.get(f"{API}/fraud/versions/1", headers=ha).json() == mine
    assert client.get(f"{API}/fraud/versions/1/onnx", headers=ha).content == binary.data


def test_the_upload_is_documented_as_multipart(app):
    operation = app.openapi()["paths"]["/api/v1/models/{name}/versions"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"]
    assert set(schema["properties"]) == {"file", "signature", "task", "description"}
