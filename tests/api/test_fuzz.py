"""Property-based fuzzing of every documented operation (Schemathesis): never a 5xx.

Each operation is called with generated inputs, each input with the API key of every role of
one organization (owner, admin, developer, viewer); every answer must be below 500 and every
error a problem body.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from aiaas.api.app import create_app
from aiaas.db.migrate import upgrade
from tests.conftest import ROLES, _fast_settings, make_tenant

_DIR = Path(tempfile.mkdtemp(prefix="aiaas-fuzz-"))
_SETTINGS = _fast_settings(_DIR)
upgrade(_SETTINGS.resolved_database_url)
_TENANT = make_tenant(_SETTINGS, "fuzz")
APP = create_app(_SETTINGS)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=10,  # x 4 roles: each input is sent with every role's key
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case):
    for role in ROLES:
        response = case.call(headers={"Authorization": f"Bearer {_TENANT.keys[role]}"})
        assert response.status_code < 500, (role, case.method, case.path, response.text[:500])
        if response.status_code >= 400:
            content_type = response.headers.get("content-type") or [""]
            if isinstance(content_type, list):
                content_type = content_type[0]
            assert content_type.startswith("application/problem+json"), (case.path, content_type)
            body = json.loads(response.text)
            assert body["status"] == response.status_code
