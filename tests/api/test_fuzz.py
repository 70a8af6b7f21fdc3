"""Property-based fuzzing of every documented operation (Schemathesis): never a 5xx.

Each operation is called with generated inputs, each input with the API key of every role of
one organization (owner, admin, developer, viewer); every answer must be below 500 and every
error a problem body.

Nothing is built at import: the schema comes from the ``api_schema`` fixture (schemathesis'
lazy loading), so the app, its migrated database and the tenant are made only when the test
runs, in pytest's temporary directory, like every other test's.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from aiaas.settings import Settings
from tests.conftest import ROLES, Tenant, make_tenant


@pytest.fixture
def api_schema(app: FastAPI, request: pytest.FixtureRequest) -> schemathesis.schemas.BaseSchema:
    # schemathesis 4.32's lazy loader reads and rewrites ``node._nodeid``, which pytest 9
    # no longer has (its node id is ``_id``): give it one. Remove once schemathesis reads
    # ``node.nodeid``.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture
def fuzz_tenant(settings: Settings) -> Tenant:
    """One organization with a key per role (the app above uses the same database)."""
    return make_tenant(settings, "fuzz")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=10,  # x 4 roles: each input is sent with every role's key
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case, fuzz_tenant):
    for role in ROLES:
        response = case.call(headers={"Authorization": f"Bearer {fuzz_tenant.keys[role]}"})
        assert response.status_code < 500, (role, case.method, case.path, response.text[:500])
        if response.status_code >= 400 and case.path.startswith("/v2"):
            # the Open Inference Protocol's own error body (PROTOCOLS.md)
            assert set(json.loads(response.text)) <= {"error", "name", "ready"}, case.path
        elif response.status_code >= 400:
            content_type = response.headers.get("content-type") or [""]
            if isinstance(content_type, list):
                content_type = content_type[0]
            assert content_type.startswith("application/problem+json"), (case.path, content_type)
            body = json.loads(response.text)
            assert body["status"] == response.status_code
