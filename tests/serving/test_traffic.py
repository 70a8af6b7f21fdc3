"""What an endpoint serves, and when: traffic splits, shadows, rollbacks, aliases, changes
under load, the registry's guard on served versions, the prediction log and micro-batching.

Two binary classifiers with one signature (``saved_model`` and ``other_binary_model``) are
registered as versions 1 and 2 of one model where an answer must tell which version made
it: their probabilities differ, so every row of every answer is checked against the model
its ``X-Aiaas-Model-Version`` header names (no answer mixes versions).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aiaas.api.state import app_state
from aiaas.serving import cache as serving_cache
from aiaas.serving import core
from aiaas.serving import service as serving_service
from aiaas.settings import Settings
from tests.conftest import Tenants
from tests.helpers import assert_problem
from tests.registry.conftest import Register
from tests.serving.conftest import (
    API,
    TOLERANCE,
    Deploy,
    Live,
    classes,
    deployer,
    logged,
    reference,
    rows,
    serve,
    wait_for,
)

#: A change reaches the answers within this (AIAAS_SERVING__REFRESH_S is 0.25 s).
VISIBLE_S = 1.0
ROWS = rows(5, seed=11)
GOOD = {"instances": ROWS[:1]}

pytestmark = pytest.mark.usefixtures("quiet_logs")


def answer(client: Any, tenants: Tenants, body: Any, endpoint: str = "ep") -> Any:
    return client.post(f"{API}/{endpoint}/predict", json=body, headers=tenants.a.headers("viewer"))


def served_version(r: Any) -> int:
    """The version that answered ``r``: header and body agree, or the test fails."""
    assert r.status_code == 200, r.text
    version = int(r.headers["x-aiaas-model-version"])
    assert r.json()["version"] == version
    return version


def check_rows(body: dict[str, Any], model_dir: Path, data: list[dict[str, Any]]) -> None:
    """Every row of ``body`` is ``model_dir``'s own answer for ``data``."""
    got = np.array([list(p["probabilities"].values()) for p in body["predictions"]])
    np.testing.assert_allclose(got, reference(model_dir, data), rtol=0, atol=TOLERANCE)


@pytest.fixture
def two_versions(
    register: Register, tenants: Tenants, saved_model: Path, other_binary_model: Path
) -> dict[int, Path]:
    """Versions 1 and 2 of model ``m``: version → its model directory."""
    register(tenants.a, "m", model_dir=saved_model)
    register(tenants.a, "m", model_dir=other_binary_model)
    found = {1: saved_model, 2: other_binary_model}
    assert not np.allclose(reference(saved_model, ROWS), reference(other_binary_model, ROWS))
    return found


def create(client: Any, tenants: Tenants, **body: Any) -> dict[str, Any]:
    r = client.post(
        API, json={"name": "ep", "model": "m", **body}, headers=tenants.a.headers("developer")
    )
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


def change(client: Any, tenants: Tenants, method: str, url: str, **body: Any) -> dict[str, Any]:
    r = client.request(method, url, json=body, headers=tenants.a.headers("developer"))
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


# --------------------------------------------------------------------------- traffic


def test_a_canary_split_follows_its_weights(
    app: FastAPI, client: TestClient, tenants: Tenants, two_versions: dict[int, Path]
) -> None:
    """90/10: the answers (by their version header) and the draw itself (on the endpoint's
    served view, many times) land within 5 sigma of the weights (a false alarm in ~2e6)."""
    create(client, tenants, traffic=[{"version": 1, "weight": 90}, {"version": 2, "weight": 10}])
    n = 400
    seen: Counter[int] = Counter()
    for i in range(n):
        data = [ROWS[i % len(ROWS)]]
        r = answer(client, tenants, {"instances": data})
        version = served_version(r)
        seen[version] += 1
        if i % 20 == 0:  # and an answer is the model its header names
            check_rows(r.json(), two_versions[version], data)
    assert set(seen) == {1, 2}
    assert abs(seen[2] - n * 0.1) <= 5 * math.sqrt(n * 0.1 * 0.9), seen
    view = app_state(app).serving.endpoints.get(tenants.a.org_id, "ep")
    assert view is not None
    draws = 100_000
    drawn = Counter(core.choose(view).number for _ in range(draws))
    assert abs(drawn[2] - draws * 0.1) <= 5 * math.sqrt(draws * 0.1 * 0.9), drawn


def test_a_shadow_is_never_answered_and_its_answers_are_logged(
    app: FastAPI, client: TestClient, tenants: Tenants, two_versions: dict[int, Path]
) -> None:
    create(client, tenants, version=1, shadow={"version": 2})
    answered: dict[str, list[float]] = {}
    sent: dict[str, dict[str, Any]] = {}
    for i in range(20):
        data = rows(3, seed=100 + i)
        r = answer(client, tenants, {"instances": data})
        assert served_version(r) == 1
        assert r.headers["x-aiaas-endpoint-revision"] == "1"
        assert not [k for k in r.headers if "shadow" in k.lower()]
        check_rows(r.json(), two_versions[1], data)
        for p, row in zip(r.json()["predictions"], data, strict=True):
            answered[p["id"]] = list(p["probabilities"].values())
            sent[p["id"]] = row
    serving = app_state(app).serving
    wait_for(lambda: serving.shadow.done >= len(answered), 10, "the shadow predicted")
    log = logged(app, tenants.a.org_id)
    primary, shadow = log[log["role"] == "primary"], log[log["role"] == "shadow"]
    assert sorted(primary["prediction_id"]) == sorted(shadow["prediction_id"]) == sorted(answered)
    assert set(primary["version"]) == {1}
    assert set(shadow["version"]) == {2}
    shadow = shadow.set_index("prediction_id").loc[list(answered)]
    data = [sent[i] for i in shadow.index]
    want = reference(two_versions[2], data)
    np.testing.assert_allclose(shadow[["p.0", "p.1"]].to_numpy(), want, rtol=0, atol=TOLERANCE)
    assert shadow["in.colour"].tolist() == [r["colour"] for r in data]
    assert shadow["in.a"].tolist() == [r["a"] for r in data]
    # what the shadow said differs from what callers got (it was never answered)
    assert not np.allclose(shadow[["p.0", "p.1"]].to_numpy(), [answered[i] for i in shadow.index])


def test_rollback_restores_the_previous_revisions_traffic(
    client: TestClient, tenants: Tenants, two_versions: dict[int, Path]
) -> None:
    url = f"{API}/ep"
    assert create(client, tenants, version=1)["revision"] == 1
    r = client.post(f"{url}/rollback", json={}, headers=tenants.a.headers("developer"))
    assert assert_problem(r, 409, "conflict")["detail"] == (
        "the endpoint has no earlier revision to roll back to"
    )
    split = [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]
    assert change(client, tenants, "PATCH", url, traffic=split)["revision"] == 2
    assert change(client, tenants, "PATCH", url, version=2)["revision"] == 3
    wait_for(lambda: served_version(answer(client, tenants, GOOD)) == 2, VISIBLE_S, "v2")

    back = change(client, tenants, "POST", f"{url}/rollback")
    assert (back["revision"], back["traffic"]) == (4, split)
    back = change(client, tenants, "POST", f"{url}/rollback")  # to revision 3: version 2
    assert (back["revision"], back["traffic"]) == (5, [{"version": 2, "weight": 100}])
    back = change(client, tenants, "POST", f"{url}/rollback", revision=1)
    assert (back["revision"], back["traffic"]) == (6, [{"version": 1, "weight": 100}])
    took = wait_for(
        lambda: answer(client, tenants, GOOD).headers["x-aiaas-endpoint-revision"] == "6",
        VISIBLE_S,
        "revision 6 served",
    )
    assert took <= VISIBLE_S
    for _ in range(20):
        assert served_version(answer(client, tenants, GOOD)) == 1

    for target, status, detail in (
        (6, 409, "revision 6 is the current revision"),
        (99, 404, "endpoint revision 'ep@99' not found"),
    ):
        r = client.post(
            f"{url}/rollback", json={"revision": target}, headers=tenants.a.headers("developer")
        )
        assert assert_problem(r, status)["detail"] == detail
    revisions = client.get(f"{url}/revisions", headers=tenants.a.headers("viewer")).json()
    assert [(x["revision"], x["reason"]) for x in revisions["items"]] == [
        (6, "rollback:1"),
        (5, "rollback:3"),
        (4, "rollback:2"),
        (3, "update"),
        (2, "update"),
        (1, "deploy"),
    ]
    assert revisions["items"][2]["spec"]["traffic"] == split


# --------------------------------------------------------------------------- under load


@dataclass
class Shot:
    sent: float
    received: float
    status: int
    version: int | None = None
    text: str = ""
    rows: list[list[float]] = field(default_factory=list)


def _fire(
    live: Live, tenants: Tenants, stop: threading.Event, shots: list[Shot], errors: list[str]
) -> None:
    try:
        with live.client() as http:
            while not stop.is_set():
                sent = time.monotonic()
                r = http.post(
                    f"{API}/ep/predict",
                    json={"instances": ROWS},
                    headers=tenants.a.headers("viewer"),
                )
                shot = Shot(sent, time.monotonic(), r.status_code)
                if r.status_code == 200:
                    shot.version = served_version(r)
                    shot.rows = [list(p["probabilities"].values()) for p in r.json()["predictions"]]
                else:
                    shot.text = r.text
                shots.append(shot)
                time.sleep(0.005)  # steady traffic, with CPU left for the server's own threads
    except BaseException as exc:  # reported by the test, not lost with the thread
        errors.append(repr(exc))


def test_changes_under_load_never_mix_nor_fail(
    live: Live, tenants: Tenants, two_versions: dict[int, Path], register: Register
) -> None:
    """Three clients predict back to back while the traffic moves to version 2 and the
    endpoint is then deleted: no 5xx, every answer wholly one version's, the change served
    within VISIBLE_S and for good, then only 404s."""
    with live.client() as admin:
        create(admin, tenants, version=1)
        stop = threading.Event()
        shots: list[list[Shot]] = [[] for _ in range(3)]
        errors: list[str] = []
        threads = [
            threading.Thread(target=_fire, args=(live, tenants, stop, s, errors), daemon=True)
            for s in shots
        ]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: all(len(s) >= 3 for s in shots), 10, "the clients started")
            patching = time.monotonic()
            moved = change(admin, tenants, "PATCH", f"{API}/ep", version=2)
            assert moved["revision"] == 2
            patched = time.monotonic()
            wait_for(lambda: any(x.version == 2 for s in shots for x in s), 5, "version 2")
            wait_for(lambda: all(s[-1].version == 2 for s in shots), 5, "version 2 everywhere")
            deleting = time.monotonic()
            r = admin.delete(f"{API}/ep", headers=tenants.a.headers("developer"))
            assert r.status_code == 204, r.text
            deleted = time.monotonic()
            wait_for(lambda: all(s[-1].status == 404 for s in shots), 5, "404 everywhere")
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
    assert errors == []
    want = {v: reference(d, ROWS) for v, d in two_versions.items()}
    everything = [x for s in shots for x in s]
    assert {x.status for x in everything} == {200, 404}  # no 5xx, nothing else
    for x in everything:
        if x.status == 200:
            assert x.version is not None
            np.testing.assert_allclose(x.rows, want[x.version], rtol=0, atol=TOLERANCE)
        else:
            assert x.sent > deleting, x
            assert json.loads(x.text)["detail"] == "endpoint 'ep' not found"
    first_v2 = min(x.received for x in everything if x.version == 2)
    first_404 = min(x.received for x in everything if x.status == 404)
    assert first_v2 - patched <= VISIBLE_S
    assert first_404 - deleted <= VISIBLE_S
    for x in everything:
        if x.received < patching:
            assert x.version == 1, x  # answered before the change was asked for
        if first_v2 < x.sent < deleting:
            assert x.version == 2, x  # once served, the change stays
        if x.sent > first_404:
            assert x.status == 404, x  # once gone, gone
    assert sum(x.version == 1 for x in everything) >= 3


# --------------------------------------------------------------------------- the registry


def test_a_served_or_shadowed_version_cannot_be_deleted(
    client: TestClient, tenants: Tenants, two_versions: dict[int, Path], register: Register
) -> None:
    register(tenants.a, "m", model_dir=two_versions[1])  # version 3: not in use
    create(client, tenants, version=1, shadow={"version": 2})
    h = tenants.a.headers("owner")
    for number in (1, 2):
        r = client.delete(f"/api/v1/models/m/versions/{number}", headers=h)
        assert assert_problem(r, 409, "conflict")["detail"] == (
            f"version {number} of model 'm' is in use: endpoint 'ep' serves it"
        )
    assert client.delete("/api/v1/models/m/versions/3", headers=h).status_code == 204
    r = client.delete("/api/v1/models/m", headers=h)
    assert assert_problem(r, 409, "conflict")["detail"] == (
        "version 1 of model 'm' is in use: endpoint 'ep' serves it (delete or move what uses "
        "it first)"
    )
    change(client, tenants, "PATCH", f"{API}/ep", shadow=None)
    assert client.delete("/api/v1/models/m/versions/2", headers=h).status_code == 204
    assert served_version(answer(client, tenants, GOOD)) == 1


def test_an_endpoint_following_an_alias_serves_its_new_target(
    client: TestClient, tenants: Tenants, two_versions: dict[int, Path]
) -> None:
    h = tenants.a.headers("developer")
    alias = "/api/v1/models/m/aliases/champion"
    assert client.put(alias, json={"version": 1}, headers=h).status_code == 200
    created = create(client, tenants, alias="champion")
    assert (created["alias"], created["traffic"], created["revision"]) == ("champion", [], 1)
    r = answer(client, tenants, {"instances": ROWS})
    assert served_version(r) == 1
    check_rows(r.json(), two_versions[1], ROWS)

    assert client.put(alias, json={"version": 2}, headers=h).status_code == 200
    endpoint = client.get(f"{API}/ep", headers=h).json()
    assert (endpoint["alias"], endpoint["revision"]) == ("champion", 2)
    took = wait_for(
        lambda: served_version(answer(client, tenants, GOOD)) == 2, VISIBLE_S, "the new target"
    )
    assert took <= VISIBLE_S
    r = answer(client, tenants, {"instances": ROWS})
    assert (served_version(r), r.headers["x-aiaas-endpoint-revision"]) == (2, "2")
    check_rows(r.json(), two_versions[2], ROWS)
    revisions = client.get(f"{API}/ep/revisions", headers=h).json()["items"]
    assert [(x["revision"], x["reason"]) for x in revisions] == [
        (2, "alias:champion->2"),
        (1, "deploy"),
    ]
    # what the alias names is in use; the alias itself cannot go while followed
    r = client.delete("/api/v1/models/m/versions/2", headers=tenants.a.headers("owner"))
    assert assert_problem(r, 409)["detail"] == (
        "version 2 of model 'm' is in use: the alias champion names it; endpoint 'ep' serves it"
    )
    r = client.delete(alias, headers=h)
    assert assert_problem(r, 409)["detail"] == (
        "endpoint 'ep' follows the alias champion; point it elsewhere first"
    )
    assert client.delete("/api/v1/models/m/versions/1", headers=h).status_code == 204


# --------------------------------------------------------------------------- the log


def test_the_log_holds_what_callers_received(
    app: FastAPI, client: TestClient, tenants: Tenants, deploy: Deploy, models: dict[str, Path]
) -> None:
    for task, model_dir in models.items():
        deploy(tenants.a, model_dir, model=task, endpoint=task)
    received: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {}
    for task in models:
        for i, data in enumerate((rows(1, seed=31), rows(7, seed=32), _with_nulls())):
            fmt = ("instances", "dataframe_records", "instances")[i]
            r = answer(client, tenants, {fmt: data}, endpoint=task)
            assert r.status_code == 200, r.text
            for p, row in zip(r.json()["predictions"], data, strict=True):
                received[p["id"]] = (task, row, p, r.headers["x-request-id"])
        # /invocations answers are logged too (with ids the caller never sees)
        m = client.post(
            f"{API}/{task}/invocations",
            json={"instances": rows(2, seed=33)},
            headers=tenants.a.headers("viewer"),
        )
        assert m.status_code == 200, m.text
    log = logged(app, tenants.a.org_id)
    assert len(log) == len(received) + 2 * len(models)
    assert set(log["role"]) == {"primary"}
    log = log.set_index("prediction_id")
    for pid, (task, row, p, request_id) in received.items():
        entry = log.loc[pid]
        assert (entry["endpoint"], entry["model"], entry["version"]) == (task, task, 1)
        assert entry["request_id"] == request_id
        for column in ("a", "b", "colour"):
            sent, kept = row[column], entry[f"in.{column}"]
            assert pd.isna(kept) if sent is None else kept == sent, (column, sent, kept)
        if task == "regression":
            assert entry["value"] == p["value"]
        else:
            assert entry["label"] == str(p["label"])
            keys = [str(c) for c in classes(models[task])]
            assert [entry[f"p.{k}"] for k in keys] == list(p["probabilities"].values())


def _with_nulls() -> list[dict[str, Any]]:
    return [
        {"a": None, "b": 0.5, "colour": "red"},
        {"a": 0.25, "b": None, "colour": None},
        {"a": -1.0, "b": 2.0, "colour": "mauve"},
    ]


# --------------------------------------------------------------------------- batching


def test_micro_batching_gives_the_same_answers_as_without(
    settings: Settings,
    client: TestClient,
    tenants: Tenants,
    register: Register,
    saved_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four clients at once against a server that batches (waiting up to 20 ms for
    company): every answer is the unbatched one, bad requests fail alone."""
    merged: list[int] = []
    real_merge = core.merge_tables

    def counting(tables: list[Any], columns: tuple[str, ...]) -> Any:
        merged.append(len(tables))
        return real_merge(tables, columns)

    monkeypatch.setattr(core, "merge_tables", counting)
    batching = settings.serving.model_copy(update={"batching": True, "batch_wait_ms": 20.0})
    requests = [rows(1 + i % 7, seed=200 + i) for i in range(32)]
    bad = {"instances": [{"a": "x", "b": 1.0, "colour": "red"}]}
    with serve(settings.model_copy(update={"serving": batching})) as live:
        with live.client() as http:
            deployer(http, register)(tenants.a, saved_model)
        results: dict[int, Any] = {}
        errors: list[str] = []

        def run(part: int) -> None:
            try:
                with live.client() as http:
                    for i in range(part, len(requests), 4):
                        results[i] = answer(http, tenants, {"instances": requests[i]})
                        if i % 8 == part:
                            results[-1 - i] = answer(http, tenants, bad)
            except BaseException as exc:  # reported by the test, not lost with the thread
                errors.append(repr(exc))

        threads = [threading.Thread(target=run, args=(p,)) for p in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert sum(n > 1 for n in merged) >= 1, merged  # some requests were predicted together
    for i, data in enumerate(requests):
        batched = results[i]
        assert batched.status_code == 200, batched.text
        unbatched = answer(client, tenants, {"instances": data})
        assert unbatched.status_code == 200, unbatched.text
        got = [list(p["probabilities"].values()) for p in batched.json()["predictions"]]
        want = [list(p["probabilities"].values()) for p in unbatched.json()["predictions"]]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        check_rows(batched.json(), saved_model, data)
    ids = [p["id"] for i in range(len(requests)) for p in results[i].json()["predictions"]]
    assert len(set(ids)) == len(ids)
    for key in (k for k in results if k < 0):
        problem = assert_problem(results[key], 422, "invalid_input")
        assert problem["detail"] == "row 0, column 'a': expected a number, got a string"


# --------------------------------------------------------------------------- found bugs


def test_a_deploy_is_servable_at_once_after_a_refresh_that_missed_it(
    app: FastAPI,
    client: TestClient,
    tenants: Tenants,
    deploy: Deploy,
    saved_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A background refresh reads the revisions, the deploy commits, the refresh ends: the
    first request for the new endpoint must still find it (the cache promises a deploy
    "servable at once"). Seen for real: a predict right after its deploy answered 404."""
    deploy(tenants.a, saved_model, endpoint="first")
    assert answer(client, tenants, GOOD, endpoint="first").status_code == 200
    endpoints = app_state(app).serving.endpoints
    endpoints.stop()  # no background refresh from here on: the order below is the test's
    real = serving_service.revisions
    read, committed = threading.Event(), threading.Event()

    def stale(session: Any) -> dict[str, int]:
        found = real(session)
        read.set()
        assert committed.wait(10)
        return found

    monkeypatch.setattr(serving_cache, "revisions", stale)
    refresh = threading.Thread(target=endpoints.refresh)
    refresh.start()
    assert read.wait(10)
    monkeypatch.setattr(serving_cache, "revisions", real)
    created = client.post(
        API,
        json={"name": "second", "model": "m", "version": 1},
        headers=tenants.a.headers("developer"),
    )
    assert created.status_code == 201, created.text
    committed.set()
    refresh.join(10)
    assert anyio.run(endpoints.lookup, tenants.a.org_id, "second") is not None
