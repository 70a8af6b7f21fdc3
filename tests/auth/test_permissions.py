"""The permission matrix, and a route inventory that keeps every route behind a policy."""

from __future__ import annotations

import pytest

from aiaas.api.app import PUBLIC_ROUTES
from aiaas.api.route_table import iter_routes
from aiaas.auth.permissions import PERMISSIONS, Action, Role
from tests.helpers import assert_problem

ROLES = ["owner", "admin", "developer", "viewer"]

# (method, path, action) of every identity route; {other} is another member's user id.
MANAGEMENT_ROUTES = [
    ("GET", "/api/v1/me", Action.ME_READ),
    ("GET", "/api/v1/members", Action.MEMBER_READ),
    ("POST", "/api/v1/members", Action.MEMBER_MANAGE),
    ("PATCH", "/api/v1/members/{other}", Action.MEMBER_MANAGE),
    ("DELETE", "/api/v1/members/{other}", Action.MEMBER_MANAGE),
    ("GET", "/api/v1/api-keys", Action.APIKEY_READ),
    ("POST", "/api/v1/api-keys", Action.APIKEY_MANAGE),
    ("GET", "/api/v1/api-keys/{key}", Action.APIKEY_READ),
    ("DELETE", "/api/v1/api-keys/{key}", Action.APIKEY_MANAGE),
    ("POST", "/api/v1/api-keys/{key}/transfer", Action.APIKEY_MANAGE),
    ("GET", "/api/v1/audit-events", Action.AUDIT_READ),
]

# The committed expectation, independent of the code's table: who may do what.
EXPECTED = {
    Action.ME_READ: {"owner", "admin", "developer", "viewer"},
    Action.MEMBER_READ: {"owner", "admin"},
    Action.MEMBER_MANAGE: {"owner", "admin"},
    Action.APIKEY_READ: {"owner", "admin"},
    Action.APIKEY_MANAGE: {"owner", "admin"},
    Action.AUDIT_READ: {"owner", "admin"},
    Action.DATASET_READ: {"owner", "admin", "developer", "viewer"},
    Action.DATASET_WRITE: {"owner", "admin", "developer"},
    Action.DATASET_DELETE: {"owner", "admin", "developer"},
    Action.DATASET_IMPORT: {"owner", "admin"},
    Action.SQL_QUERY: {"owner", "admin", "developer", "viewer"},
    Action.TRAINING_READ: {"owner", "admin", "developer", "viewer"},
    Action.TRAINING_WRITE: {"owner", "admin", "developer"},
    Action.MODEL_READ: {"owner", "admin", "developer", "viewer"},
    Action.MODEL_WRITE: {"owner", "admin", "developer"},
    Action.MODEL_DELETE: {"owner", "admin", "developer"},
    Action.ENDPOINT_READ: {"owner", "admin", "developer", "viewer"},
    Action.ENDPOINT_WRITE: {"owner", "admin", "developer"},
    Action.ENDPOINT_DELETE: {"owner", "admin", "developer"},
    Action.PREDICT: {"owner", "admin", "developer", "viewer"},
    Action.BATCH_READ: {"owner", "admin", "developer", "viewer"},
    Action.BATCH_WRITE: {"owner", "admin", "developer"},
}


def test_matrix_matches_the_committed_expectation():
    assert set(EXPECTED) == set(Action), "every action needs an expected row here"
    for action, roles in EXPECTED.items():
        granted = {role.value for role in Role if action in PERMISSIONS[role]}
        assert granted == roles, action


def _body(method, path, tenants, role):
    if method == "POST" and path.endswith("/members"):
        return {
            "email": f"new-{role}@org-a.example",
            "role": "viewer",
            "password": "x" * 8 + "Yz1!abcd",
        }
    if method == "POST" and path.endswith("/api-keys"):
        return {"name": f"made by {role}", "role": "viewer"}
    if method == "PATCH":
        return {"role": "developer"}
    if path.endswith("/transfer"):
        return {"owner_user_id": tenants.a.users["viewer"]}
    return None


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path", "action"), MANAGEMENT_ROUTES)
def test_role_route_matrix(client, tenants, role, method, path, action):
    # Targets are the viewer's membership and key, so an allowed call also succeeds.
    url = path.format(other=tenants.a.users["viewer"], key=tenants.a.key_ids["viewer"])
    response = client.request(
        method, url, headers=tenants.a.headers(role), json=_body(method, path, tenants, role)
    )
    if role in EXPECTED[action]:
        assert response.status_code in (200, 201, 204), (role, method, url, response.text)
    else:
        assert_problem(response, 403, "forbidden")


def _actions(dependant):
    """Actions required anywhere in a route's dependency tree."""
    found = []
    stack = [dependant]
    while stack:
        dep = stack.pop()
        action = getattr(dep.call, "__aiaas_action__", None)
        if action is not None:
            found.append(action)
        stack.extend(dep.dependencies)
    return found


def test_every_route_is_public_or_requires_an_action(app):
    missing: list[tuple[str, list[str]]] = []
    checked: set[tuple[str, str]] = set()
    for info in iter_routes(app):
        if info.path in PUBLIC_ROUTES:
            continue
        checked.update((m, info.path) for m in info.methods)
        if info.dependant is None or not _actions(info.dependant):
            missing.append((info.path, sorted(info.methods)))
    assert not missing, f"routes without require(Action...): {missing}"
    assert {(m, p) for m, p, _ in MANAGEMENT_ROUTES} <= {
        (m, p.replace("{user_id}", "{other}").replace("{key_id}", "{key}")) for m, p in checked
    }


def test_every_non_public_route_answers_401_without_credentials(app, client):
    for info in iter_routes(app):
        if info.path in PUBLIC_ROUTES:
            continue
        url = info.path.replace("{", "").replace("}", "")  # any value will do
        for method in info.methods - {"HEAD", "OPTIONS"}:
            response = client.request(method, url)
            assert response.status_code == 401, (method, url, response.status_code)


def test_public_routes_answer_without_credentials(client):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path
