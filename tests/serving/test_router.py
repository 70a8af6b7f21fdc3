"""Endpoint management: deploy, list, change traffic, shadow, roll back, delete; checks,
roles and tenant isolation."""

from __future__ import annotations

import pytest

from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem
from tests.registry.conftest import register, saved_model, store  # noqa: F401

API = "/api/v1/endpoints"


@pytest.fixture
def two_versions(tenants, register):  # noqa: F811
    register(tenants.a, "churn")
    register(tenants.a, "churn")


def _deploy(client, headers, **body):
    body = {"name": "churn-ep", "model": "churn", **body}
    return client.post(API, headers=headers, json=body)


def test_deploy_get_list_and_revisions(client, tenants, two_versions):
    h = tenants.a.headers("developer")
    r = _deploy(client, h, version=1, description="first")
    assert r.status_code == 201, r.text
    ep = r.json()
    assert ep["id"].startswith("ep_")
    assert (ep["name"], ep["model"], ep["revision"], ep["description"]) == (
        "churn-ep",
        "churn",
        1,
        "first",
    )
    assert ep["traffic"] == [{"version": 1, "weight": 100}]
    assert (ep["alias"], ep["shadow_version"], ep["unknown_categories"]) == (None, None, "ignore")
    # names compare regardless of case
    assert client.get(f"{API}/CHURN-EP", headers=h).json()["id"] == ep["id"]
    listed = client.get(API, headers=h).json()
    assert [e["id"] for e in listed["items"]] == [ep["id"]]
    assert client.get(f"{API}?model=churn", headers=h).json()["items"][0]["id"] == ep["id"]
    assert client.get(f"{API}?model=other", headers=h).json()["items"] == []
    revs = client.get(f"{API}/churn-ep/revisions", headers=h).json()["items"]
    assert [(x["revision"], x["reason"]) for x in revs] == [(1, "deploy")]


def test_traffic_shadow_rollback_and_revisions(client, tenants, two_versions):
    h = tenants.a.headers("developer")
    assert _deploy(client, h, version=1).status_code == 201
    split = [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]
    r = client.patch(f"{API}/churn-ep", headers=h, json={"traffic": split})
    assert r.status_code == 200, r.text
    assert (r.json()["traffic"], r.json()["revision"]) == (split, 2)
    r = client.patch(f"{API}/churn-ep", headers=h, json={"shadow": {"version": 2}})
    assert (r.json()["shadow_version"], r.json()["traffic"], r.json()["revision"]) == (2, split, 3)
    # a description alone is no new revision
    r = client.patch(f"{API}/churn-ep", headers=h, json={"description": "d"})
    assert (r.json()["description"], r.json()["revision"]) == ("d", 3)
    r = client.patch(f"{API}/churn-ep", headers=h, json={"shadow": None})
    assert (r.json()["shadow_version"], r.json()["revision"]) == (None, 4)
    r = client.post(f"{API}/churn-ep/rollback", headers=h, json={})
    assert r.status_code == 200, r.text
    assert (r.json()["shadow_version"], r.json()["traffic"], r.json()["revision"]) == (2, split, 5)
    r = client.post(f"{API}/churn-ep/rollback", headers=h, json={"revision": 1})
    assert (r.json()["traffic"], r.json()["shadow_version"], r.json()["revision"]) == (
        [{"version": 1, "weight": 100}],
        None,
        6,
    )
    reasons = [
        x["reason"] for x in client.get(f"{API}/churn-ep/revisions", headers=h).json()["items"]
    ]
    assert reasons == ["rollback:1", "rollback:3", "update", "update", "update", "deploy"]
    body = assert_problem(
        client.post(f"{API}/churn-ep/rollback", headers=h, json={"revision": 6}), 409
    )
    assert body["detail"] == "revision 6 is the current revision"
    r = client.post(f"{API}/churn-ep/rollback", headers=h, json={"revision": 99})
    assert assert_problem(r, 404)["detail"] == "endpoint revision 'churn-ep@99' not found"


def test_alias_following_endpoint_moves_with_the_alias(client, tenants, two_versions):
    h = tenants.a.headers("developer")
    client.put("/api/v1/models/churn/aliases/champion", headers=h, json={"version": 1})
    r = _deploy(client, h, alias="champion")
    assert r.status_code == 201, r.text
    assert (r.json()["alias"], r.json()["traffic"]) == ("champion", [])
    client.put("/api/v1/models/churn/aliases/champion", headers=h, json={"version": 2})
    ep = client.get(f"{API}/churn-ep", headers=h).json()
    assert ep["revision"] == 2
    revs = client.get(f"{API}/churn-ep/revisions", headers=h).json()["items"]
    assert revs[0]["reason"] == "alias:champion->2"
    # the alias an endpoint follows cannot be deleted
    body = assert_problem(client.delete("/api/v1/models/churn/aliases/champion", headers=h), 409)
    assert (
        body["detail"] == "endpoint 'churn-ep' follows the alias champion; point it elsewhere first"
    )


def test_versions_in_use_cannot_be_deleted(client, tenants, two_versions):
    h = tenants.a.headers("developer")
    _deploy(client, h, version=1, shadow={"version": 2})
    for n in (1, 2):
        body = assert_problem(client.delete(f"/api/v1/models/churn/versions/{n}", headers=h), 409)
        assert "endpoint 'churn-ep' serves it" in body["detail"]
    assert client.delete(f"{API}/churn-ep", headers=h).status_code == 204
    assert client.delete("/api/v1/models/churn/versions/2", headers=h).status_code == 204
    assert_problem(client.get(f"{API}/churn-ep", headers=h), 404)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"version": 3}, "model version 'churn@3' not found"),
        ({"model": "nope", "version": 1}, "model 'nope' not found"),
        ({"alias": "champion"}, "alias 'churn:champion' not found"),
        ({"version": 1, "shadow": {"version": 9}}, "model version 'churn@9' not found"),
    ],
)
def test_deploy_of_what_does_not_exist_is_404(client, tenants, two_versions, body, detail):
    r = _deploy(client, tenants.a.headers("developer"), **body)
    assert assert_problem(r, 404, "not_found")["detail"] == detail


@pytest.mark.parametrize(
    "body",
    [
        {},  # no routing
        {"version": 1, "alias": "champion"},
        {"traffic": [{"version": 1, "weight": 50}]},  # not 100
        {"traffic": [{"version": 1, "weight": 50}, {"version": 1, "weight": 50}]},
        {"traffic": []},
        {"version": 0},
        {"version": 1, "name": "bad name"},
        {"version": 1, "name": "x" * 101},
        {"version": 1, "unknown_categories": "maybe"},
        {"version": 1, "extra": 1},
    ],
)
def test_bad_deploy_bodies_are_422(client, tenants, two_versions, body):
    r = _deploy(client, tenants.a.headers("developer"), **body)
    assert_problem(r, 422)
    assert client.get(API, headers=tenants.a.headers()).json()["items"] == []


def test_names_are_unique_per_org_regardless_of_case(client, tenants, two_versions, register):  # noqa: F811
    h = tenants.a.headers("developer")
    assert _deploy(client, h, version=1).status_code == 201
    r = _deploy(client, h, version=2, name="CHURN-EP")
    assert assert_problem(r, 409)["detail"] == "an endpoint named 'CHURN-EP' exists"
    register(tenants.b, "churn")
    assert _deploy(client, tenants.b.headers("developer"), version=1).status_code == 201


def _version(number, task="binary", classes=(0, 1), **columns):
    from aiaas.registry.models import ModelVersion

    inputs = [{"name": n, "type": t} for n, t in (columns or {"a": "float"}).items()]
    return ModelVersion(
        number=number, task=task, signature={"inputs": inputs, "classes": list(classes)}
    )


@pytest.mark.parametrize(
    ("served", "shadow", "detail"),
    [
        (
            [_version(1), _version(2, task="regression")],
            None,
            "version 2 is a regression model, version 1 a binary one",
        ),
        (
            [_version(1), _version(2, classes=("no", "yes"))],
            None,
            "versions 1 and 2 predict different classes",
        ),
        (
            [_version(1, a="float"), _version(2, a="string")],
            None,
            "column 'a' is float in version 1 but string in version 2",
        ),
        (
            [_version(1, a="float")],
            _version(2, a="float", z="float"),
            "the shadow version 2 needs columns the served versions do not take: 'z'",
        ),
    ],
)
def test_incompatible_versions_are_refused(served, shadow, detail):
    from aiaas.errors import InvalidInput
    from aiaas.serving.service import check_compatible

    with pytest.raises(InvalidInput) as info:
        check_compatible(served, shadow)
    assert info.value.detail == detail


def test_compatible_versions_pass():
    from aiaas.serving.service import check_compatible

    check_compatible([_version(1, a="float"), _version(2, a="int")], _version(3, a="double"))


def test_quota_of_endpoints(settings, tenants, two_versions):
    from fastapi.testclient import TestClient

    from aiaas.api.app import create_app

    serving = settings.serving.model_copy(update={"max_endpoints_per_org": 1})
    app = create_app(settings.model_copy(update={"serving": serving}))
    h = tenants.a.headers("developer")
    with TestClient(app) as client:
        assert _deploy(client, h, version=1).status_code == 201
        r = _deploy(client, h, version=1, name="second")
        body = assert_problem(r, 403, "forbidden")
        assert body["detail"] == "an organization may have at most 1 endpoints"
        assert [e["name"] for e in client.get(API, headers=h).json()["items"]] == ["churn-ep"]


def test_roles(client, tenants, two_versions):
    viewer, developer = tenants.a.headers("viewer"), tenants.a.headers("developer")
    assert_problem(_deploy(client, viewer, version=1), 403, "forbidden")
    assert _deploy(client, developer, version=1).status_code == 201
    assert client.get(f"{API}/churn-ep", headers=viewer).status_code == 200
    assert client.get(f"{API}/churn-ep/revisions", headers=viewer).status_code == 200
    for method, url, body in (
        ("PATCH", f"{API}/churn-ep", {"version": 2}),
        ("POST", f"{API}/churn-ep/rollback", {}),
        ("DELETE", f"{API}/churn-ep", None),
    ):
        assert_problem(client.request(method, url, headers=viewer, json=body), 403, "forbidden")
    row = {"instances": [{"a": 1.0, "b": 0.0, "colour": "red"}]}
    assert client.post(f"{API}/churn-ep/predict", headers=viewer, json=row).status_code == 200
    assert_problem(client.post(f"{API}/churn-ep/predict", json=row), 401, "unauthorized")


def test_cross_tenant_isolation(client, tenants, two_versions):
    ha, hb = tenants.a.headers("owner"), tenants.b.headers("owner")
    ep = _deploy(client, ha, version=1).json()
    base = f"{API}/churn-ep"
    assert_cross_tenant_404(client, base, hb, json={"version": 2})
    assert_cross_tenant_404(client, f"{base}/revisions", hb, methods=("GET",))
    row = {"instances": [{"a": 1.0, "b": 0.0, "colour": "red"}]}
    assert_cross_tenant_404(client, f"{base}/rollback", hb, methods=("POST",), json={})
    for url in (f"{base}/predict", f"{base}/invocations"):
        assert_cross_tenant_404(client, url, hb, methods=("POST",), json=row)
    assert_not_listed(client, API, hb, ep["id"])
    assert_not_listed(client, f"{API}?model=churn", hb, ep["id"])
    # B cannot deploy A's model either
    r = client.post(API, headers=hb, json={"name": "steal", "model": "churn", "version": 1})
    assert assert_problem(r, 404)["detail"] == "model 'churn' not found"
    # and A's endpoint is untouched
    assert client.get(base, headers=ha).json()["revision"] == 1


def test_trained_and_uploaded_type_names_agree():
    from aiaas.serving.service import check_compatible

    trained = _version(1, a="float64", n="Int64", c="object", flag="boolean")
    uploaded = _version(2, a="float", n="int64", c="string", flag="bool")
    check_compatible([trained, uploaded], None)
