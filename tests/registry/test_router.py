"""Registry routes end to end: read, tags, aliases, delete, downloads, hostile input, roles and
tenant isolation. Versions come from ``register`` (register_trained, no training job)."""

from __future__ import annotations

import hashlib

import pytest

from aiaas.registry import service as registry_service
from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem
from tests.registry.conftest import model_files

API = "/api/v1/models"


def test_list_get_and_version_fields(client, tenants, register):
    mv = register(tenants.a, "churn")
    register(tenants.a, "churn")
    register(tenants.a, "fraud")
    h = tenants.a.headers("viewer")
    listed = client.get(API, headers=h).json()
    assert [m["name"] for m in listed["items"]] == ["fraud", "churn"]
    assert listed["next_cursor"] is None
    page = client.get(f"{API}?limit=1", headers=h).json()
    assert [m["name"] for m in page["items"]] == ["fraud"]
    rest = client.get(f"{API}?limit=1&cursor={page['next_cursor']}", headers=h).json()
    assert [m["name"] for m in rest["items"]] == ["churn"]
    prefixed = client.get(f"{API}?name_prefix=CH", headers=h).json()
    assert [m["name"] for m in prefixed["items"]] == ["churn"]
    assert client.get(f"{API}?name_prefix=%25", headers=h).json()["items"] == []

    model = client.get(f"{API}/CHURN", headers=h).json()  # names regardless of case
    assert model["id"] == mv.model_id
    assert model["name"] == "churn"
    assert model["latest_version"] == 2
    assert model["aliases"] == []
    versions = client.get(f"{API}/churn/versions", headers=h).json()
    assert [v["number"] for v in versions["items"]] == [2, 1]

    v1 = client.get(f"{API}/churn/versions/1", headers=h).json()
    assert v1["id"] == mv.id
    assert v1["model_name"] == "churn"
    assert (v1["task"], v1["metric"]) == ("binary", "roc_auc")
    assert set(v1["metrics"]) >= {"cv_score", "cv_score_std", "holdout_score"}
    assert [c["name"] for c in v1["signature"]["inputs"]] == ["a", "b", "colour"]
    assert v1["lineage"]["dataset_id"] == "ds_test"
    assert v1["job_id"] == mv.job_id
    assert v1["has_onnx"] is True
    assert {a["path"] for a in v1["artifacts"]} >= {"manifest.json", "model.onnx", "report.json"}
    assert v1["size_bytes"] == sum(a["size"] for a in v1["artifacts"])
    assert v1["tags"] == {}
    assert v1["aliases"] == []
    assert v1["card"] == mv.card
    assert "storage_prefix" not in v1


def test_tags_and_description_change_nothing_else(client, tenants, register):
    register(tenants.a, "churn")
    h = tenants.a.headers("developer")
    r = client.patch(f"{API}/churn", headers=h, json={"description": "d", "tags": {"team": "x"}})
    assert r.status_code == 200, r.text
    assert (r.json()["description"], r.json()["tags"]) == ("d", {"team": "x"})
    r = client.patch(f"{API}/churn/versions/1", headers=h, json={"tags": {"stage": "qa"}})
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == {"stage": "qa"}
    before = client.get(f"{API}/churn/versions/1", headers=h).json()
    immutable: tuple[dict[str, object], ...] = (
        {"metrics": {"cv_score": 1.0}},
        {"tags": {"stage": "qa"}, "number": 7},
        {"card": "mine"},
        {"artifacts": []},
        {},
    )
    for body in immutable:
        assert_problem(client.patch(f"{API}/churn/versions/1", headers=h, json=body), 422)
    assert_problem(client.patch(f"{API}/churn", headers=h, json={"name": "other"}), 422)
    assert client.get(f"{API}/churn/versions/1", headers=h).json() == before


@pytest.mark.parametrize(
    "tags",
    [
        {"": "x"},
        {"bad key": "x"},
        {"k": "x" * 501},
        {"k": "\u0000"},
        {f"k{i}": "v" for i in range(51)},
        {"k": 1},
        ["k"],
    ],
)
def test_bad_tags_are_422(client, tenants, register, tags):
    register(tenants.a, "churn")
    h = tenants.a.headers("developer")
    r = client.patch(f"{API}/churn/versions/1", headers=h, json={"tags": tags})
    assert_problem(r, 422)
    assert_problem(client.patch(f"{API}/churn", headers=h, json={"tags": tags}), 422)


def test_aliases_create_move_resolve_delete(client, tenants, register):
    register(tenants.a, "churn")
    register(tenants.a, "churn")
    h = tenants.a.headers("developer")
    r = client.put(f"{API}/churn/aliases/champion", headers=h, json={"version": 1})
    assert r.status_code == 200, r.text
    assert (r.json()["alias"], r.json()["version"]) == ("champion", 1)
    assert client.get(f"{API}/churn/aliases/champion", headers=h).json()["number"] == 1
    assert client.get(f"{API}/churn/versions/1", headers=h).json()["aliases"] == ["champion"]
    r = client.put(f"{API}/churn/aliases/champion", headers=h, json={"version": 2})
    assert r.json()["version"] == 2
    assert client.get(f"{API}/churn/aliases/champion", headers=h).json()["number"] == 2
    assert client.get(f"{API}/churn/versions/1", headers=h).json()["aliases"] == []
    client.put(f"{API}/churn/aliases/challenger", headers=h, json={"version": 1})
    model = client.get(f"{API}/churn", headers=h).json()
    assert [(a["alias"], a["version"]) for a in model["aliases"]] == [
        ("challenger", 1),
        ("champion", 2),
    ]
    assert client.get(f"{API}/churn/aliases/latest", headers=h).json()["number"] == 2
    assert client.delete(f"{API}/churn/aliases/champion", headers=h).status_code == 204
    assert_problem(client.get(f"{API}/churn/aliases/champion", headers=h), 404)
    assert_problem(client.delete(f"{API}/champion/aliases/champion", headers=h), 404)
    assert_problem(client.delete(f"{API}/churn/aliases/champion", headers=h), 404)
    r = client.put(f"{API}/churn/aliases/champion", headers=h, json={"version": 3})
    assert_problem(r, 404)


@pytest.mark.parametrize(
    "alias", ["latest", "Champion", "1st", "_x", "a" * 65, "a.b", "ünï", "a%20b", "a%0A"]
)
def test_bad_alias_names_are_422(client, tenants, register, alias):
    register(tenants.a, "churn")
    h = tenants.a.headers("developer")
    r = client.put(f"{API}/churn/aliases/{alias}", headers=h, json={"version": 1})
    body = assert_problem(r, 422)
    if alias == "latest":
        assert body["detail"] == "'latest' is reserved (it always means the newest version)"
    assert_problem(client.delete(f"{API}/churn/aliases/{alias}", headers=h), 422)


@pytest.mark.parametrize(
    "body", [{}, {"version": 0}, {"version": -1}, {"version": 2**31}, {"version": 1.5}, []]
)
def test_bad_alias_bodies_are_422(client, tenants, register, body):
    register(tenants.a, "churn")
    r = client.put(f"{API}/churn/aliases/champion", headers=tenants.a.headers(), json=body)
    assert_problem(r, 422)


def test_delete_refused_while_aliased_then_purges_every_file(
    client, tenants, register, store, settings
):
    v1 = register(tenants.a, "churn")
    v2 = register(tenants.a, "churn")
    h = tenants.a.headers("developer")
    client.put(f"{API}/churn/aliases/champion", headers=h, json={"version": 1})
    body = assert_problem(client.delete(f"{API}/churn/versions/1", headers=h), 409, "conflict")
    assert body["detail"] == "version 1 of model 'churn' is in use: the alias champion names it"
    assert_problem(client.delete(f"{API}/churn", headers=h), 409)
    client.put(f"{API}/churn/aliases/challenger", headers=h, json={"version": 1})
    body = assert_problem(client.delete(f"{API}/churn/versions/1", headers=h), 409, "conflict")
    assert body["detail"].endswith("is in use: the aliases challenger, champion name it")
    client.delete(f"{API}/churn/aliases/champion", headers=h)
    client.delete(f"{API}/churn/aliases/challenger", headers=h)

    assert client.delete(f"{API}/churn/versions/1", headers=h).status_code == 204
    keys = model_files(store, tenants.a.org_id)
    assert keys == [f"{v2.storage_prefix}/{a['path']}" for a in v2.artifacts]
    assert not any(v1.id in k for k in keys)
    assert_problem(client.get(f"{API}/churn/versions/1", headers=h), 404)
    assert client.get(f"{API}/churn", headers=h).json()["latest_version"] == 2

    assert client.delete(f"{API}/churn/versions/2", headers=h).status_code == 204
    assert client.get(f"{API}/churn", headers=h).json()["latest_version"] == 0
    v3 = register(tenants.a, "churn")
    assert v3.number == 3  # numbers are never reused
    assert client.delete(f"{API}/churn", headers=h).status_code == 204
    assert model_files(store, tenants.a.org_id) == []
    assert_problem(client.get(f"{API}/churn", headers=h), 404)
    assert register(tenants.a, "churn").number == 1  # a new model of the same name


def test_delete_refused_by_an_in_use_check(client, tenants, register, monkeypatch):
    monkeypatch.setattr(registry_service, "_IN_USE_CHECKS", list(registry_service._IN_USE_CHECKS))
    register(tenants.a, "churn")
    registry_service.register_in_use_check(lambda session, version: "endpoint 'prod' serves it")
    h = tenants.a.headers("developer")
    body = assert_problem(client.delete(f"{API}/churn/versions/1", headers=h), 409)
    assert body["detail"] == "version 1 of model 'churn' is in use: endpoint 'prod' serves it"
    assert client.get(f"{API}/churn/versions/1", headers=h).status_code == 200


def test_a_failed_commit_keeps_the_files(client, tenants, register, store, monkeypatch):
    mv = register(tenants.a, "churn")
    before = model_files(store, tenants.a.org_id)

    def fail_after_flush(*args, **kwargs):
        raise RuntimeError("the commit never happens")

    real = registry_service._delete_after_commit

    def then_fail(session, *args):
        real(session, *args)
        fail_after_flush()

    monkeypatch.setattr(registry_service, "_delete_after_commit", then_fail)
    r = client.delete(f"{API}/churn/versions/1", headers=tenants.a.headers("developer"))
    assert_problem(r, 500, "internal")  # rolled back: the row stays, and so do its files
    assert model_files(store, tenants.a.org_id) == before
    got = client.get(f"{API}/churn/versions/1", headers=tenants.a.headers())
    assert got.json()["id"] == mv.id


def test_onnx_artifact_and_card_downloads(client, tenants, register, saved_model):
    mv = register(tenants.a, "churn")
    h = tenants.a.headers("viewer")
    r = client.get(f"{API}/churn/versions/1/onnx", headers=h)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == 'attachment; filename="churn-v1-model.onnx"'
    assert r.content == (saved_model / "model.onnx").read_bytes()
    entry = next(a for a in mv.artifacts if a["path"] == "model.onnx")
    assert hashlib.sha256(r.content).hexdigest() == entry["sha256"]
    assert int(r.headers["content-length"]) == entry["size"]

    r = client.get(f"{API}/churn/versions/1/artifacts/report.json", headers=h)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.content == (saved_model / "report.json").read_bytes()

    card = client.get(f"{API}/churn/versions/1/card", headers=h)
    assert card.status_code == 200
    assert card.headers["content-type"] == "text/markdown; charset=utf-8"
    assert card.text == mv.card
    for heading in ("## Task", "## Scores", "## Data", "## Input signature", "## Leaderboard"):
        assert heading in card.text


def test_onnx_download_of_a_model_without_a_graph_is_404(
    client, tenants, register, saved_model_without_onnx
):
    register(tenants.a, "plain", model_dir=saved_model_without_onnx)
    h = tenants.a.headers("viewer")
    assert client.get(f"{API}/plain/versions/1", headers=h).json()["has_onnx"] is False
    body = assert_problem(client.get(f"{API}/plain/versions/1/onnx", headers=h), 404, "not_found")
    assert body["detail"] == "ONNX graph of version 1 of model 'plain' not found"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/churn/versions/0", 422),
        ("/churn/versions/-1", 422),
        ("/churn/versions/2147483648", 422),
        ("/churn/versions/99999999999999999999999999", 422),
        ("/churn/versions/1.5", 422),
        ("/churn/versions/one", 422),
        ("/churn/versions/0/onnx", 422),
        ("/churn/versions/99999999999999999999/card", 422),
        ("/churn/versions/1/nope", 404),
        ("/..%2F..%2Fetc", 404),
        ("/ch%C3%BCrn", 422),
        ("/churn%00", 400),
        ("/churn%0A", 422),
        ("/churn%20", 422),
        ("/" + "a" * 201, 422),
        ("/churn/aliases/" + "a" * 65, 422),
    ],
)
def test_hostile_paths_are_problems(client, tenants, register, path, status):
    register(tenants.a, "churn")
    assert_problem(client.get(API + path, headers=tenants.a.headers()), status)


@pytest.mark.parametrize(
    "artifact", ["..%2Fmanifest.json", "%2E%2E", "missing.bin", "%2Fetc%2Fpasswd", "MODEL.ONNX"]
)
def test_artifact_paths_outside_the_list_are_404(client, tenants, register, artifact):
    register(tenants.a, "churn")
    r = client.get(f"{API}/churn/versions/1/artifacts/{artifact}", headers=tenants.a.headers())
    assert_problem(r, 404)


def test_unknown_models_and_versions_are_404(client, tenants, register):
    register(tenants.a, "churn")
    h = tenants.a.headers()
    assert_problem(client.get(f"{API}/nope", headers=h), 404)
    assert_problem(client.get(f"{API}/churn/versions/2", headers=h), 404)
    assert_problem(client.patch(f"{API}/nope", headers=h, json={"description": "x"}), 404)
    assert_problem(client.delete(f"{API}/churn/versions/2", headers=h), 404)
    assert_problem(client.get(f"{API}/nope/aliases/latest", headers=h), 404)


def test_unstorable_text_is_422(client, tenants, register):
    register(tenants.a, "churn")
    h = {**tenants.a.headers("developer"), "Content-Type": "application/json"}
    for body in (b'{"tags": {"k": "\\ud800"}}', b'{"description": "\\ud800"}'):
        assert_problem(client.patch(f"{API}/churn", headers=h, content=body), 422)
    body = b'{"tags": {"k": "\\udfff"}}'
    assert_problem(client.patch(f"{API}/churn/versions/1", headers=h, content=body), 422)
    assert_problem(client.patch(f"{API}/churn", headers=h, content=b"{nope"), 400)
    big = b'{"version": 1' + b"0" * 5000 + b"}"  # more digits than Python parses
    r = client.put(f"{API}/churn/aliases/champion", headers=h, content=big)
    assert_problem(r, 400)


def test_roles(client, tenants, register):
    register(tenants.a, "churn")
    viewer, developer = tenants.a.headers("viewer"), tenants.a.headers("developer")
    for url in (API, f"{API}/churn", f"{API}/churn/versions", f"{API}/churn/versions/1/card"):
        assert client.get(url, headers=viewer).status_code == 200, url
    assert client.get(f"{API}/churn/versions/1/onnx", headers=viewer).status_code == 200
    for method, url, body in (
        ("PATCH", f"{API}/churn", {"description": "x"}),
        ("PATCH", f"{API}/churn/versions/1", {"tags": {"a": "b"}}),
        ("PUT", f"{API}/churn/aliases/champion", {"version": 1}),
        ("DELETE", f"{API}/churn/aliases/champion", None),
        ("DELETE", f"{API}/churn/versions/1", None),
        ("DELETE", f"{API}/churn", None),
    ):
        assert_problem(client.request(method, url, headers=viewer, json=body), 403, "forbidden")
    r = client.put(f"{API}/churn/aliases/champion", headers=developer, json={"version": 1})
    assert r.status_code == 200
    assert client.delete(f"{API}/churn/aliases/champion", headers=developer).status_code == 204
    r = client.patch(f"{API}/churn", headers=developer, json={"description": "x"})
    assert r.status_code == 200
    assert client.delete(f"{API}/churn/versions/1", headers=developer).status_code == 204
    assert client.delete(f"{API}/churn", headers=developer).status_code == 204


def test_cross_tenant_isolation(client, tenants, register, store):
    mv = register(tenants.a, "secret-model")
    ha, hb = tenants.a.headers("owner"), tenants.b.headers("owner")
    client.put(f"{API}/secret-model/aliases/champion", headers=ha, json={"version": 1})
    base = f"{API}/secret-model"
    assert_cross_tenant_404(client, base, hb, json={"description": "x"})
    assert_cross_tenant_404(client, f"{base}/versions/1", hb, json={"tags": {"a": "b"}})
    for url in (
        f"{base}/versions",
        f"{base}/versions/1/card",
        f"{base}/versions/1/onnx",
        f"{base}/versions/1/artifacts/model.skops",
        f"{base}/aliases/champion",
        f"{base}/aliases/latest",
    ):
        assert_cross_tenant_404(client, url, hb, methods=("GET",))
    assert_cross_tenant_404(
        client, f"{base}/aliases/champion", hb, methods=("PUT", "DELETE"), json={"version": 1}
    )
    assert_not_listed(client, API, hb, mv.model_id)
    assert_not_listed(client, f"{API}?name_prefix=secret", hb, mv.model_id)
    # the same name in the other organization is another model; A's is untouched
    other = register(tenants.b, "secret-model")
    assert other.model_id != mv.model_id
    assert client.get(f"{base}/versions/1", headers=ha).json()["id"] == mv.id
    assert client.get(f"{base}/aliases/champion", headers=ha).json()["id"] == mv.id
    assert len(model_files(store, tenants.a.org_id)) == len(mv.artifacts)
