"""``GET /endpoints/{name}/drift``: the answered inputs of a window against the training
data of the served version (its lineage's dataset version), frozen on first use."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from aiaas.api.state import app_state
from aiaas.settings import Settings
from tests.conftest import Tenant, Tenants, make_dataset
from tests.helpers import assert_problem
from tests.registry.conftest import Register
from tests.registry.onnx_factory import logistic_binary
from tests.serving.conftest import API, rows, training_frame

pytestmark = pytest.mark.usefixtures("quiet_logs")


def deploy_with_training_data(
    settings: Settings, client: TestClient, tenant: Tenant, register: Register, saved_model: Any
) -> str:
    """The registry's binary model, its lineage pointing at a real dataset version (the
    distribution the request rows come from), deployed as ``ep``; returns the version id."""
    frame = training_frame(600, seed=11)
    dataset = make_dataset(settings, tenant, frame.to_dict("records"), name="train")
    version = register(
        tenant, "m", model_dir=saved_model, lineage={"dataset_id": dataset.id, "dataset_version": 1}
    )
    r = client.post(API, json={"name": "ep", "model": "m", "version": version.number},
                    headers=tenant.headers("developer"))  # fmt: skip
    assert r.status_code == 201, r.text
    return version.id


def predict(client: TestClient, tenant: Tenant, data: list[dict[str, Any]]) -> None:
    for at in range(0, len(data), 50):
        body = {"instances": data[at : at + 50]}
        r = client.post(f"{API}/ep/predict", json=body, headers=tenant.headers("viewer"))
        assert r.status_code == 200, r.text


def get_drift(client: TestClient, tenant: Tenant, **params: str) -> Any:
    client.app.state.aiaas.serving.predictions.flush()  # type: ignore[attr-defined]
    return client.get(f"{API}/ep/drift", params=params, headers=tenant.headers("viewer"))


def test_a_shifted_input_drifts_and_the_same_distribution_does_not(
    settings: Settings, client: TestClient, tenants: Tenants, register: Register, saved_model: Any
) -> None:
    version_id = deploy_with_training_data(settings, client, tenants.a, register, saved_model)
    predict(client, tenants.a, rows(400, seed=12))
    r = get_drift(client, tenants.a)
    assert r.status_code == 200, r.text
    same = r.json()
    assert (same["version"], same["rows"], same["drifted"]) == (1, 400, False)
    by_name = {c["name"]: c for c in same["columns"]}
    assert set(by_name) == {"a", "b", "colour"}
    assert [c["name"] for c in same["columns"] if c["drifted"]] == []
    assert (by_name["a"]["test"], by_name["colour"]["test"]) == ("ks", "chi2")  # 600 rows
    assert by_name["a"]["n_reference"] == 600
    store = app_state(client.app).store
    assert store.exists(tenants.a.org_id, f"drift/reference/{version_id}.json")  # frozen

    shifted = [{**r, "a": r["a"] + 2.0, "colour": "red"} for r in rows(400, seed=13)]
    predict(client, tenants.a, shifted)
    moved = get_drift(client, tenants.a).json()
    assert moved["rows"] == 800
    drifted = sorted(c["name"] for c in moved["columns"] if c["drifted"])
    assert drifted == ["a", "colour"]
    assert moved["drifted"] is True  # 2 of 3 columns
    psi = {c["name"]: c["psi"] for c in moved["columns"]}
    assert psi["a"] > 0.2 > psi["b"]


def test_an_empty_window_and_refusals(
    settings: Settings, client: TestClient, tenants: Tenants, register: Register, saved_model: Any
) -> None:
    deploy_with_training_data(settings, client, tenants.a, register, saved_model)
    empty = get_drift(client, tenants.a).json()
    assert empty["rows"] == 0
    assert empty["drifted"] is False
    assert all(c["n_current"] == 0 for c in empty["columns"])
    for bad in ("0m", "91d"):
        assert_problem(get_drift(client, tenants.a, window=bad), 422, "invalid_input")
    assert_problem(get_drift(client, tenants.a, window="1w"), 422, "invalid_input")
    other = client.get(f"{API}/ep/drift", headers=tenants.b.headers("owner"))
    assert_problem(other, 404, "not_found")


def test_an_uploaded_model_has_no_training_data(client: TestClient, tenants: Tenants) -> None:
    built = logistic_binary()
    headers = tenants.a.headers("developer")
    r = client.post(
        "/api/v1/models/up/versions",
        files={"file": ("m.onnx", built.data, "application/octet-stream")},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    r = client.post(API, json={"name": "ep", "model": "up", "version": 1}, headers=headers)
    assert r.status_code == 201, r.text
    body = assert_problem(get_drift(client, tenants.a), 409, "conflict")
    assert body["detail"] == (
        "version 1 has no training data to compare with (an uploaded model, or its dataset "
        "version was deleted)"
    )
