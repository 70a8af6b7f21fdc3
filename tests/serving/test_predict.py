"""``POST /endpoints/{name}/predict`` and ``…/invocations``: every accepted body, every task,
one row and a batch, against the model's own predictions; then every refusal a row can earn.

The answers are compared with :mod:`aiaas.automl`'s own ``predict_proba`` / ``predict`` of
the same saved model (native float64 against the served ONNX float32: within 1e-5).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from aiaas.api.app import create_app
from aiaas.settings import Settings
from tests.conftest import Tenants
from tests.helpers import assert_problem
from tests.registry.conftest import Register
from tests.serving.conftest import (
    API,
    COLUMNS,
    MULTICLASS,
    TOLERANCE,
    Deploy,
    classes,
    deployer,
    reference,
    rows,
    wait_for,
)

SIZES = (1, 50)
PREDICTION_ID = re.compile(r"pr_[0-9a-f]{16}")
#: The signature's column order (rows sent as lists follow it).
ORDER = list(COLUMNS)

pytestmark = pytest.mark.usefixtures("quiet_logs")


def bodies(data: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every accepted body for ``data``: objects (keys in any order), lists in the
    signature's order, MLflow's split (columns in another order, with an index) and records,
    and ``inputs`` as a column mapping and as rows."""
    lists = [[r[c] for c in ORDER] for r in data]
    shuffled = ["colour", "a", "b"]
    return {
        "instances/objects": {"instances": data},
        "instances/lists": {"instances": lists},
        "dataframe_split": {
            "dataframe_split": {
                "columns": shuffled,
                "index": list(range(len(data))),
                "data": [[r[c] for c in shuffled] for r in data],
            }
        },
        "dataframe_records": {"dataframe_records": [dict(reversed(r.items())) for r in data]},
        "inputs/columns": {"inputs": {c: [r[c] for r in data] for c in ORDER}},
        "inputs/rows": {"inputs": lists},
    }


def predict(
    client: Any, tenants: Tenants, body: Any, *, endpoint: str = "ep", path: str = "predict"
) -> Any:
    return client.post(
        f"{API}/{endpoint}/{path}", json=body, headers=tenants.a.headers("developer")
    )


def check_predict_answer(
    answer: dict[str, Any], model_dir: Path, data: list[dict[str, Any]], *, model: str
) -> None:
    """``answer`` is exactly the ``/predict`` contract, and the model's own prediction."""
    assert set(answer) == {"predictions", "model", "version"}, answer.keys()
    assert (answer["model"], answer["version"]) == (model, 1)
    found = answer["predictions"]
    assert len(found) == len(data)
    ids = [p["id"] for p in found]
    if len(ids) == 1:  # one row: pr_<16 hex>; many: one base, numbered in row order
        assert PREDICTION_ID.fullmatch(ids[0]), ids
    else:
        base = ids[0].rsplit("-", 1)[0]
        assert PREDICTION_ID.fullmatch(base), ids[:3]
        assert ids == [f"{base}-{i}" for i in range(len(ids))]
    want = reference(model_dir, data)
    if want.ndim == 1:
        assert all(set(p) == {"id", "value"} for p in found)
        assert all(type(p["value"]) is float for p in found)
        np.testing.assert_allclose([p["value"] for p in found], want, rtol=0, atol=TOLERANCE)
        return
    labels = classes(model_dir)
    keys = [str(c) for c in labels]
    for p, w in zip(found, want, strict=True):
        assert set(p) == {"id", "label", "probabilities"}
        assert list(p["probabilities"]) == keys  # every class, in the model's order
        got = np.array(list(p["probabilities"].values()))
        np.testing.assert_allclose(got, w, rtol=0, atol=TOLERANCE)
        assert p["label"] == labels[int(np.argmax(got))] == labels[int(np.argmax(w))]
        assert type(p["label"]) is type(labels[0])  # 0/1 stay numbers, names stay text


def check_invocations_answer(
    answer: dict[str, Any], model_dir: Path, data: list[dict[str, Any]]
) -> None:
    """MLflow's answer: ``{"predictions": [[p0, p1, …], …]}`` or ``[v, …]``, nothing else."""
    assert set(answer) == {"predictions"}
    want = reference(model_dir, data)
    got = np.array(answer["predictions"], dtype=np.float64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_format_answers_the_contract(
    client: TestClient, tenants: Tenants, deploy: Deploy, models: dict[str, Path], task: str
) -> None:
    """6 body formats × 1 and 50 rows, on /predict and /invocations (one deploy per task)."""
    model_dir = models[task]
    deploy(tenants.a, model_dir, model=task)
    ids: set[str] = set()
    labels: set[Any] = set()
    for n in SIZES:
        data = rows(n, seed=n)
        for fmt, body in bodies(data).items():
            r = predict(client, tenants, body)
            assert r.status_code == 200, (fmt, n, r.text[:300])
            assert r.headers["content-type"] == "application/json", fmt
            assert r.headers["x-aiaas-model-version"] == "1"
            assert "x-ignored-columns" not in r.headers, fmt
            check_predict_answer(r.json(), model_dir, data, model=task)
            found = r.json()["predictions"]
            assert not ids & {p["id"] for p in found}  # never an id given before
            ids |= {p["id"] for p in found}
            labels |= {p.get("label") for p in found}

            m = predict(client, tenants, body, path="invocations")
            assert m.status_code == 200, (fmt, n, m.text[:300])
            assert m.headers["content-type"] == "application/json", fmt
            check_invocations_answer(m.json(), model_dir, data)
            # the same numbers in both protocols (MLflow's bytes: json.dumps, ", " separators)
            served = [
                p["value"] if task == "regression" else list(p["probabilities"].values())
                for p in r.json()["predictions"]
            ]
            assert m.content == json.dumps({"predictions": served}).encode(), fmt
    if task == "multiclass":
        assert classes(model_dir) == MULTICLASS
    if task != "regression":  # the rows span the classes (the checks would be weak otherwise)
        assert len(labels) >= 2
        assert labels <= set(classes(model_dir))


def test_the_fastapi_routes_answer_the_same_contract(
    settings: Settings, tenants: Tenants, register: Register, models: dict[str, Path]
) -> None:
    """With the serving gateway off (AIAAS_SERVING__FAST_PATH=false) FastAPI's routes
    answer: the same bodies, headers and numbers."""
    serving = settings.serving.model_copy(update={"fast_path": False})
    app = create_app(settings.model_copy(update={"serving": serving}))
    with TestClient(app) as client:
        deploy = deployer(client, register)
        for task in ("binary", "regression"):
            deploy(tenants.a, models[task], model=task, endpoint=task)
        data = rows(50, seed=3)
        for task in ("binary", "regression"):
            for fmt, body in bodies(data).items():
                r = predict(client, tenants, body, endpoint=task)
                assert r.status_code == 200, (fmt, r.text[:300])
                assert r.headers["content-type"] == "application/json"
                assert r.headers["x-aiaas-model-version"] == "1"
                check_predict_answer(r.json(), models[task], data, model=task)
                m = predict(client, tenants, body, endpoint=task, path="invocations")
                assert m.status_code == 200, (fmt, m.text[:300])
                check_invocations_answer(m.json(), models[task], data)
            extra = [{**r, "zeta": 1} for r in data[:2]]
            r = predict(client, tenants, {"instances": extra}, endpoint=task)
            assert r.headers["x-ignored-columns"] == "zeta"


def test_a_datetime_column(
    client: TestClient, tenants: Tenants, deploy: Deploy, datetime_model: Path
) -> None:
    """Dates as ISO-8601 text (date, date-time, with an offset), null and text that is no
    date (both missing, as in training), the model's own answer for each."""
    deploy(tenants.a, datetime_model)
    data: list[dict[str, Any]] = [
        {"a": 0.1, "when": "2023-02-01"},
        {"a": -0.5, "when": "2024-11-30T10:15:00"},
        {"a": 1.5, "when": "2024-06-01T23:30:00+02:00"},
        {"a": 0.0, "when": None},
        {"a": 2.0, "when": "yesterday"},
    ]
    formats: list[dict[str, Any]] = [
        {"instances": data},
        {
            "dataframe_split": {
                "columns": ["when", "a"],
                "data": [[r["when"], r["a"]] for r in data],
            }
        },
    ]
    for body in formats:
        r = predict(client, tenants, body)
        assert r.status_code == 200, r.text
        check_predict_answer(r.json(), datetime_model, data, model="m")
    r = predict(client, tenants, {"instances": [{"a": 0.1, "when": {"y": 2024}}]})
    problem = assert_problem(r, 422, "invalid_input")
    assert problem["detail"] == "row 0, column 'when': expected a date, got an object"


# --------------------------------------------------------------------------- columns


def test_extra_columns_are_ignored_and_reported(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    deploy(tenants.a, saved_model)
    data = rows(4)
    plain = predict(client, tenants, {"instances": data})
    extra = [{**r, "zeta": 1, "note": "x", "é": True} for r in data]
    for body in (
        {"instances": extra},
        {"dataframe_records": extra},
        {"inputs": {c: [r[c] for r in extra] for c in extra[0]}},
        {"dataframe_split": {"columns": list(extra[0]), "data": [list(r.values()) for r in extra]}},
    ):
        r = predict(client, tenants, body)
        assert r.status_code == 200, r.text
        assert r.headers["x-ignored-columns"] == "zeta, note, \\xe9"
        got = [p["probabilities"] for p in r.json()["predictions"]]
        assert got == [p["probabilities"] for p in plain.json()["predictions"]]
        check_predict_answer(r.json(), saved_model, data, model="m")


# --------------------------------------------------------------------------- refusals


#: (what, body, the 422's detail): every case on /predict and /invocations.
#: (what, body, the 422's detail): every case on /predict and /invocations.
BAD_CELLS: list[tuple[str, dict[str, Any], str]] = [
    (
        "missing-column-all-rows",
        {"instances": [{"a": 1.0, "b": 2.0}] * 2},
        "column 'colour' is missing",
    ),
    (
        "missing-column-inputs",
        {"inputs": {"a": [1.0], "colour": ["red"]}},
        "column 'b' is missing",
    ),
    (
        "missing-in-one-row",
        {"instances": [{"a": 1.0, "b": 2.0, "colour": "red"}, {"a": 1.0, "colour": "red"}]},
        "row 1, column 'b': the column is missing from this row",
    ),
    (
        "missing-in-one-row-same-width",
        {"instances": [{"a": 1.0, "b": 2.0, "colour": "red"}, {"a": 1.0, "b": 2.0, "z": 1}]},
        "row 1, column 'colour': the column is missing from this row",
    ),
    (
        "missing-in-first-row-same-width",
        {"instances": [{"a": 1.0, "b": 2.0, "z": 1}, {"a": 1.0, "b": 2.0, "colour": "red"}]},
        "row 0, column 'colour': the column is missing from this row",
    ),
    (
        "string-in-numeric",
        {"instances": [[1.0, 2.0, "red"], [1.0, "2.5", "red"]]},
        "row 1, column 'b': expected a number, got a string",
    ),
    (
        "boolean-in-numeric",
        {
            "dataframe_records": [{"a": 1.0, "b": 2.0, "colour": "red"}] * 3
            + [{"a": True, "b": 2.0, "colour": "red"}]
        },
        "row 3, column 'a': expected a number, got a boolean",
    ),
    (
        "array-in-numeric",
        {"instances": [{"a": [1.0], "b": 2.0, "colour": "red"}]},
        "row 0, column 'a': expected a number, got an array",
    ),
    (
        "object-in-numeric",
        {"inputs": {"a": [1.0, 2.0], "b": [{"v": 1}, 2.0], "colour": ["red", "red"]}},
        "row 0, column 'b': expected a number, got an object",
    ),
    (
        "object-in-category",
        {
            "instances": [
                {"a": 1.0, "b": 2.0, "colour": "red"},
                {"a": 1.0, "b": 2.0, "colour": {"c": "red"}},
            ]
        },
        "row 1, column 'colour': expected a category, got an object",
    ),
    (
        "array-in-category",
        {"dataframe_split": {"columns": ORDER, "data": [[1.0, 2.0, ["red"]]]}},
        "row 0, column 'colour': expected a category, got an array",
    ),
    (
        "beyond-float32",
        {"instances": [{"a": 1e300, "b": 2.0, "colour": "red"}]},
        "row 0, column 'a': 1e+300 is out of the model's range (float32: at most 3.4e+38 "
        "in magnitude)",
    ),
]


def test_a_bad_cell_is_a_422_naming_row_and_column(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    deploy(tenants.a, saved_model)
    for what, body, detail in BAD_CELLS:
        for path in ("predict", "invocations"):
            r = predict(client, tenants, body, path=path)
            assert assert_problem(r, 422, "invalid_input")["detail"] == detail, (what, path)


def test_trained_numbers_are_encoded_as_in_training() -> None:
    """The all-numeric fast path too: ±inf (from a binary tensor) is missing, as
    TabularPreprocessor makes it; a finite value beyond float32 is refused by its cell."""
    from aiaas.errors import InvalidInput
    from aiaas.serving.predictor import Column, Table, _encoder

    encode = _encoder([Column("x", "numeric", True), Column("y", "numeric", True)])
    X = encode(Table(2, {"x": np.array([np.inf, 1.0]), "y": np.array([2.0, -np.inf])}), False)
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, np.array([[np.nan, 2.0], [1.0, np.nan]], np.float32))
    with pytest.raises(InvalidInput) as refused:
        encode(Table(2, {"x": [1.0, 2.0], "y": [3.0, -4e38]}), False)
    assert refused.value.detail == (
        "row 1, column 'y': -4e+38 is out of the model's range (float32: at most 3.4e+38 "
        "in magnitude)"
    )


def test_null_is_missing_where_the_model_takes_missing_values(
    client: TestClient, tenants: Tenants, deploy: Deploy, models: dict[str, Path]
) -> None:
    """A trained model imputes: null in any column is a missing value, as in training."""
    data: list[dict[str, Any]] = [
        {"a": None, "b": 0.5, "colour": "red"},
        {"a": 0.3, "b": None, "colour": "blue"},
        {"a": 0.3, "b": 0.5, "colour": None},
        {"a": None, "b": None, "colour": None},
    ]
    for task, model_dir in models.items():
        deploy(tenants.a, model_dir, model=task, endpoint=task)
    for task, model_dir in models.items():
        for body in bodies(data).values():
            r = predict(client, tenants, body, endpoint=task)
            assert r.status_code == 200, (task, r.text)
            check_predict_answer(r.json(), model_dir, data, model=task)


def test_null_is_refused_where_the_model_needs_a_value(
    client: TestClient, tenants: Tenants
) -> None:
    """An uploaded ONNX model's columns are required: null is a 422 naming the cell (and
    so is a number its float32 input cannot hold)."""
    from tests.registry import onnx_factory

    built = onnx_factory.ridge_regressor()
    uploaded = client.post(
        "/api/v1/models/ridge/versions",
        headers=tenants.a.headers("developer"),
        files={"file": ("model.onnx", built.data, "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.text
    created = client.post(
        API,
        json={"name": "ridge", "model": "ridge", "version": 1},
        headers=tenants.a.headers("developer"),
    )
    assert created.status_code == 201, created.text
    good = [{f"x{i}": float(v) for i, v in enumerate(row)} for row in built.X[:2]]
    assert predict(client, tenants, {"instances": good}, endpoint="ridge").status_code == 200
    for bad, detail in (
        ({**good[1], "x2": None}, "row 1, column 'x2': a value is required, got null"),
        (
            {**good[1], "x3": -1e39},
            "row 1, column 'x3': -1e+39 is out of the model's range (float32: at most "
            "3.4e+38 in magnitude)",
        ),
    ):
        for path in ("predict", "invocations"):
            r = predict(client, tenants, {"instances": [good[0], bad]}, endpoint="ridge", path=path)
            assert assert_problem(r, 422, "invalid_input")["detail"] == detail, path


#: What Python's json.dumps writes for non-finite floats, and orjson's reason to refuse it.
NON_JSON_NUMBERS = [
    ("NaN", "unexpected character, expected a JSON value: line 1 column 22 (char 21)"),
    ("Infinity", "unexpected character, expected a JSON value: line 1 column 22 (char 21)"),
    ("-Infinity", "no digit after sign: line 1 column 23 (char 22)"),
    ("1e999", "number is infinity when parsed as double: line 1 column 22 (char 21)"),
]


def test_nan_and_infinity_are_not_json(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    """NaN, Infinity (what Python's json.dumps writes for them) and a literal that
    overflows a double are not JSON: a 422 that says to send null for a missing value."""
    deploy(tenants.a, saved_model)
    headers = {**tenants.a.headers("developer"), "Content-Type": "application/json"}
    for text, reason in NON_JSON_NUMBERS:
        raw = '{"instances": [{"a": ' + text + ', "b": 1.0, "colour": "red"}]}'
        for path in ("predict", "invocations"):
            r = client.post(f"{API}/ep/{path}", content=raw.encode(), headers=headers)
            body = assert_problem(r, 422, "invalid_input")
            assert body["detail"] == (
                f"the request body is not valid JSON: {reason} (NaN and Infinity are not "
                "JSON: send null for a missing value)"
            ), (text, path)
    # null is the missing value
    r = predict(client, tenants, {"instances": [{"a": None, "b": 1.0, "colour": "red"}]})
    assert r.status_code == 200, r.text


def test_unknown_categories_by_the_endpoint_policy(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    data = [{"a": 0.5, "b": 0.5, "colour": "red"}, {"a": 0.5, "b": 0.5, "colour": "mauve"}]
    deploy(tenants.a, saved_model, endpoint="lenient")  # default: ignore
    strict = client.post(
        API,
        json={"name": "strict", "model": "m", "version": 1, "unknown_categories": "error"},
        headers=tenants.a.headers("developer"),
    )
    assert strict.status_code == 201, strict.text
    r = predict(client, tenants, {"instances": data}, endpoint="lenient")
    assert r.status_code == 200, r.text
    check_predict_answer(r.json(), saved_model, data, model="m")
    for path in ("predict", "invocations"):
        r = predict(client, tenants, {"instances": data}, endpoint="strict", path=path)
        body = assert_problem(r, 422, "invalid_input")
        assert body["detail"] == (
            "row 1, column 'colour': unknown category 'mauve' (this endpoint refuses "
            "categories the model never saw)"
        )
    # a number where a category is expected is its text: 7 is a category never seen
    r = predict(
        client, tenants, {"instances": [{"a": 0.5, "b": 0.5, "colour": 7}]}, endpoint="strict"
    )
    assert assert_problem(r, 422)["detail"].startswith(
        "row 0, column 'colour': unknown category '7'"
    )
    # the policy is the endpoint's: switching it to ignore answers
    patched = client.patch(
        f"{API}/strict",
        json={"unknown_categories": "ignore"},
        headers=tenants.a.headers("developer"),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["unknown_categories"] == "ignore"
    wait_for(
        lambda: predict(client, tenants, {"instances": data}, endpoint="strict").status_code == 200,
        2.0,
        "the ignore policy served",
    )
