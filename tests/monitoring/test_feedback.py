"""Feedback (``POST /endpoints/{name}/feedback``) and live quality (``GET …/monitoring``).

Predictions are made over the API, their answers kept; feedback is sent for some of them;
the live metrics must then equal what scikit-learn computes from the very probabilities
the callers received and the actuals sent — exactly, per version and role, and per bucket.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import log_loss, roc_auc_score

from aiaas.api.state import app_state
from aiaas.monitoring import service as monitoring_service
from tests.conftest import Tenant, Tenants
from tests.helpers import assert_problem
from tests.serving.conftest import API, MULTICLASS, Deploy, rows

pytestmark = pytest.mark.usefixtures("quiet_logs")


def predict(
    client: TestClient, tenant: Tenant, data: list[dict[str, Any]], ep: str = "ep"
) -> list[dict[str, Any]]:
    r = client.post(
        f"{API}/{ep}/predict", json={"instances": data}, headers=tenant.headers("viewer")
    )
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["predictions"]
    return found


def feedback(
    client: TestClient, tenant: Tenant, items: list[dict[str, Any]], ep: str = "ep"
) -> Any:
    return client.post(
        f"{API}/{ep}/feedback", json={"items": items}, headers=tenant.headers("viewer")
    )


def monitoring(client: TestClient, tenant: Tenant, ep: str = "ep", **params: str) -> dict[str, Any]:
    client.app.state.aiaas.serving.predictions.flush()  # type: ignore[attr-defined]
    r = client.get(f"{API}/{ep}/monitoring", params=params, headers=tenant.headers("viewer"))
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def test_live_classification_metrics_are_exact_and_repeats_replace(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    deploy(tenants.a, saved_model)
    answers = predict(client, tenants.a, rows(25, seed=1)) + predict(
        client, tenants.a, rows(15, seed=2)
    )
    rng = np.random.default_rng(3)
    labelled = answers[:30]
    actual = [int(x) for x in rng.integers(0, 2, size=len(labelled))]
    r = feedback(
        client,
        tenants.a,
        [{"prediction_id": p["id"], "actual": a} for p, a in zip(labelled, actual, strict=True)],
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 30, "new": 30, "replaced": 0}

    def expected(actual: list[int]) -> dict[str, float]:
        probs = np.array([[p["probabilities"]["0"], p["probabilities"]["1"]] for p in labelled])
        return {
            "accuracy": float(np.mean(np.argmax(probs, axis=1) == actual)),
            "roc_auc": float(roc_auc_score(actual, probs[:, 1])),
            # as served (float32, summing to 1 within 1e-7), renormalized
            "log_loss": float(log_loss(actual, probs / probs.sum(1, keepdims=True), labels=[0, 1])),
        }

    found = monitoring(client, tenants.a)
    (primary,) = found["versions"]
    assert (primary["version"], primary["role"], primary["predictions"], primary["labelled"]) == (
        1,
        "primary",
        40,
        30,
    )
    for name, value in expected(actual).items():
        assert primary["metrics"][name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    version = client.get("/api/v1/models/m/versions/1", headers=tenants.a.headers("viewer")).json()
    assert set(primary["training_metrics"]) >= {version["metric"]}  # beside the live ones
    for point in primary["series"]:  # hourly buckets on the hour
        assert datetime.fromisoformat(point["start"]).timestamp() % 3600 == 0
    assert sum(p["predictions"] for p in primary["series"]) == 40
    assert sum(p["labelled"] for p in primary["series"]) == 30
    assert found["feedback_received"] == 30

    # the same predictions again, five of them with another outcome: the latest counts
    flipped = [1 - a if i < 5 else a for i, a in enumerate(actual)]
    r = feedback(
        client,
        tenants.a,
        [{"prediction_id": p["id"], "actual": a} for p, a in zip(labelled, flipped, strict=True)],
    )
    assert r.json() == {"received": 30, "new": 0, "replaced": 30}
    again = monitoring(client, tenants.a)["versions"][0]
    assert again["labelled"] == 30
    for name, value in expected(flipped).items():
        assert again["metrics"][name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_live_regression_and_multiclass_metrics(
    client: TestClient,
    tenants: Tenants,
    deploy: Deploy,
    regression_model: Path,
    multiclass_model: Path,
) -> None:
    deploy(tenants.a, regression_model, model="r", endpoint="reg")
    values = predict(client, tenants.a, rows(12), ep="reg")
    truth = [float(i) for i in range(12)]
    items = [{"prediction_id": p["id"], "actual": t} for p, t in zip(values, truth, strict=True)]
    assert feedback(client, tenants.a, items, ep="reg").status_code == 200
    for bad in ("x", True, None):
        r = feedback(
            client, tenants.a, [{"prediction_id": values[0]["id"], "actual": bad}], ep="reg"
        )
        assert_problem(r, 422, "invalid_input")
    got = monitoring(client, tenants.a, ep="reg")["versions"][0]["metrics"]
    errors = np.array([p["value"] for p in values]) - np.array(truth)
    assert got["rmse"] == pytest.approx(float(np.sqrt(np.mean(errors**2))), rel=1e-12)
    assert got["mae"] == pytest.approx(float(np.mean(np.abs(errors))), rel=1e-12)

    deploy(tenants.a, multiclass_model, model="mc", endpoint="mc")
    answers = predict(client, tenants.a, rows(30, seed=5), ep="mc")
    actual = [MULTICLASS[i % 3] for i in range(30)]
    items = [{"prediction_id": p["id"], "actual": a} for p, a in zip(answers, actual, strict=True)]
    assert feedback(client, tenants.a, items, ep="mc").status_code == 200
    got = monitoring(client, tenants.a, ep="mc")["versions"][0]["metrics"]
    probs = np.array([[p["probabilities"][c] for c in MULTICLASS] for p in answers])
    index = [MULTICLASS.index(a) for a in actual]
    assert got["accuracy"] == pytest.approx(float(np.mean(np.argmax(probs, axis=1) == index)))
    assert got["roc_auc"] == pytest.approx(
        float(roc_auc_score(index, probs, multi_class="ovr")), rel=1e-9
    )


def test_no_feedback_yet_and_one_class_only_are_nulls_not_errors(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    deploy(tenants.a, saved_model)
    answers = predict(client, tenants.a, rows(4))
    (primary,) = monitoring(client, tenants.a)["versions"]
    assert primary["labelled"] == 0
    assert primary["metrics"] == {"accuracy": None, "roc_auc": None, "log_loss": None}
    feedback(client, tenants.a, [{"prediction_id": p["id"], "actual": 1} for p in answers])
    metrics = monitoring(client, tenants.a)["versions"][0]["metrics"]
    assert metrics["roc_auc"] is None  # one class among the actuals: undefined
    assert metrics["accuracy"] is not None


def test_a_shadow_version_is_monitored_beside_the_primary(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    deploy(tenants.a, saved_model, versions=2, version=1, shadow={"version": 2})
    answers = predict(client, tenants.a, rows(10))
    serving = app_state(client.app).serving
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while serving.shadow.done < 10 and datetime.now(UTC) < deadline:
        pass
    feedback(client, tenants.a, [{"prediction_id": p["id"], "actual": 1} for p in answers])
    found = monitoring(client, tenants.a)["versions"]
    assert [(v["version"], v["role"], v["labelled"]) for v in found] == [
        (1, "primary", 10),
        (2, "shadow", 10),
    ]


def test_old_predictions_fall_out_of_the_window(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    deploy(tenants.a, saved_model)
    predict(client, tenants.a, rows(3))
    client.app.state.aiaas.serving.predictions.flush()  # type: ignore[attr-defined]
    state = app_state(client.app)
    with state.session_factory() as session:
        from aiaas.auth.principal import Principal  # noqa: F401

        principal = _principal(client, tenants.a)
        later = datetime.now(UTC) + timedelta(hours=2)
        found = monitoring_service.endpoint_monitoring(
            session, principal, state.store, "ep", window="1h", bucket=None, now=later
        )
        assert found.versions == []
        whole = monitoring_service.endpoint_monitoring(
            session, principal, state.store, "ep", window="3h", bucket="30m", now=later
        )
        assert [v.predictions for v in whole.versions] == [3]
        assert whole.bucket_s == 1800


def _principal(client: TestClient, tenant: Tenant) -> Any:
    from aiaas.auth import service as auth_service

    state = app_state(client.app)
    token = tenant.headers("viewer")["Authorization"].split(" ", 1)[1]
    return auth_service.authenticate(
        state.session_factory, token, key=state.secret_key, cache=state.api_key_cache
    )


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("items", "status", "detail"),
    [
        (
            [{"prediction_id": "pr_0123456789abcdef", "actual": 7}],
            422,
            "items[0].actual: '7' is not one of the model's classes (0, 1)",
        ),
        (
            [{"prediction_id": "pr_0123456789abcdef", "actual": "yes"}],
            422,
            "items[0].actual: 'yes' is not one of the model's classes (0, 1)",
        ),
        (
            [
                {"prediction_id": "pr_0123456789abcdef", "actual": 1},
                {"prediction_id": "pr_0123456789abcdef", "actual": [1]},
            ],
            422,
            None,
        ),
        ([{"prediction_id": "x", "actual": 1}], 422, None),
        (
            [{"prediction_id": "pr_0123456789abcdef'; drop table feedback; --", "actual": 1}],
            422,
            None,
        ),
        ([{"prediction_id": "pr_0123456789abcdef", "actual": 1, "extra": 1}], 422, None),
        ([], 422, None),
        ([{"prediction_id": "pr_0123456789abcdef", "actual": "x" * 201}], 422, None),
    ],
)
def test_bad_feedback_is_a_422_and_stores_nothing(
    client: TestClient,
    tenants: Tenants,
    deploy: Deploy,
    saved_model: Path,
    items: Any,
    status: int,
    detail: str | None,
) -> None:
    deploy(tenants.a, saved_model)
    body = assert_problem(
        feedback(client, tenants.a, items),
        status,
        "invalid_input",
    )
    if detail:
        assert body["detail"] == detail
    assert monitoring(client, tenants.a)["feedback_received"] == 0


def test_oversized_and_malformed_feedback(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    deploy(tenants.a, saved_model)
    many = [{"prediction_id": f"pr_{i:016x}", "actual": 1} for i in range(10_001)]
    assert_problem(feedback(client, tenants.a, many), 422, "invalid_input")
    headers = {**tenants.a.headers("viewer"), "Content-Type": "application/json"}
    for raw, status in (
        (b"{", 400),
        (b'{"items": [{"prediction_id": "pr_0123456789abcdef", "actual": NaN}]}', 422),
        (b"[]", 422),
        (b"null", 422),
        (b'{"items": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 400),
    ):
        assert_problem(client.post(f"{API}/ep/feedback", content=raw, headers=headers), status)
    assert monitoring(client, tenants.a)["feedback_received"] == 0


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"window": "0m"}, "window must be between 1m and 90d, not 0m"),
        ({"window": "91d"}, "window must be between 1m and 90d, not 91d"),
        (
            {"window": "90d", "bucket": "1h"},
            "a 90d window has at most 1000 buckets (and each ≥ 1m)",
        ),
        ({"window": "1h", "bucket": "0m"}, "a 1h window has at most 1000 buckets (and each ≥ 1m)"),
    ],
)
def test_bad_windows_are_422(
    client: TestClient,
    tenants: Tenants,
    deploy: Deploy,
    saved_model: Path,
    params: dict[str, str],
    detail: str,
) -> None:
    deploy(tenants.a, saved_model)
    r = client.get(f"{API}/ep/monitoring", params=params, headers=tenants.a.headers("viewer"))
    assert assert_problem(r, 422, "invalid_input")["detail"] == detail
    for bad in ("1w", "24", "-1h", "1e3h", "h"):
        r = client.get(
            f"{API}/ep/monitoring", params={"window": bad}, headers=tenants.a.headers("viewer")
        )
        assert_problem(r, 422, "invalid_input")


def test_another_organization_can_neither_send_nor_read(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    deploy(tenants.a, saved_model)
    answers = predict(client, tenants.a, rows(5))
    items = [{"prediction_id": p["id"], "actual": 1} for p in answers]
    other = tenants.b.headers("owner")
    assert_problem(
        client.post(f"{API}/ep/feedback", json={"items": items}, headers=other), 404, "not_found"
    )
    assert_problem(client.get(f"{API}/ep/monitoring", headers=other), 404, "not_found")
    # org B's own endpoint of the same name: A's prediction ids do not reach A's figures
    deploy(tenants.b, saved_model)
    assert (
        client.post(f"{API}/ep/feedback", json={"items": items}, headers=other).status_code == 200
    )
    mine = monitoring(client, tenants.a)
    assert mine["feedback_received"] == 0
    assert mine["versions"][0]["labelled"] == 0
    theirs = monitoring(client, tenants.b)
    assert theirs["versions"] == []  # B predicted nothing: its feedback joins no prediction
    assert theirs["feedback_received"] == 5


@pytest.mark.parametrize(
    ("metrics", "want"),
    [
        (
            {"scores": {"roc_auc": 0.9, "accuracy": 0.8}, "holdout_score": 0.9},
            {"roc_auc": 0.9, "accuracy": 0.8},
        ),
        ({"cv_score": 0.95, "holdout_score": 0.93}, {"roc_auc": 0.93}),
        ({"cv_score": 0.95, "holdout_score": None}, {"roc_auc": 0.95}),
        ({"scores": {"accuracy": float("nan")}, "cv_score": None}, {}),
        ({}, {}),
    ],
)
def test_training_metrics_beside_the_live_ones(
    metrics: dict[str, Any], want: dict[str, float]
) -> None:
    from aiaas.registry.models import ModelVersion

    assert (
        monitoring_service.training_metrics(ModelVersion(metric="roc_auc", metrics=metrics)) == want
    )


def test_labels_are_those_of_the_served_version_not_the_newest(
    client: TestClient,
    tenants: Tenants,
    deploy: Deploy,
    register: Any,
    saved_model: Path,
    multiclass_model: Path,
) -> None:
    deploy(tenants.a, saved_model)  # serves version 1: classes 0 and 1
    register(tenants.a, "m", model_dir=multiclass_model)  # version 2 (high/low/mid), not served
    (answer,) = predict(client, tenants.a, rows(1))
    r = feedback(client, tenants.a, [{"prediction_id": answer["id"], "actual": 1}])
    assert r.status_code == 200, r.text
    r = feedback(client, tenants.a, [{"prediction_id": answer["id"], "actual": "high"}])
    assert assert_problem(r, 422, "invalid_input")["detail"] == (
        "items[0].actual: 'high' is not one of the model's classes (0, 1)"
    )
