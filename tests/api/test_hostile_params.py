"""Every path parameter and every top-level body field of every route, with hostile values.

Issue 8, item 12: integers above 64 bits, lone surrogates and friends gave 500s. This walks
the route table (so a new route is covered the day it is added) and asserts the class is
gone: always a 4xx problem (or a success), never a 5xx.
"""

from __future__ import annotations

import re

import pytest

from aiaas.api.app import PUBLIC_ROUTES
from aiaas.api.route_table import route_policies
from aiaas.api.state import app_state

#: Raw JSON texts, spliced into bodies as they are (NaN and 1e400 are not valid JSON).
HOSTILE_JSON = [
    "18446744073709551616",  # 2**64
    "-9223372036854775809",  # below int64
    "1" + "0" * 400,
    "1e400",
    "NaN",
    "-Infinity",
    '"\\ud800"',  # a lone surrogate
    '"a\\udfffb"',
    '"\\u0000"',
    '"' + "x" * 20_000 + '"',
    "[]",
    "{}",
    "null",
    "true",
    "-1",
    "0",
    '"../../etc/passwd"',
]
HOSTILE_PATH = [
    "99999999999999999999",
    "-9223372036854775809",
    "-1",
    "0",
    "%ED%A0%80",  # the UTF-8 bytes of a surrogate
    "%F0%9F%92%A9",
    "a" * 3000,
    "%2e%2e",
    "1e400",
    "NaN",
]


def _operations(app):
    """(method, path template, body field names) of every route taking parameters."""
    spec = app.openapi()
    policies = route_policies(
        app,
        public=PUBLIC_ROUTES,
        max_body=app_state(app).settings.limits.max_body_bytes,
        max_upload=app_state(app).settings.limits.max_upload_bytes,
    )
    found = []
    for matcher, policy in policies:
        path = getattr(matcher, "path_format", getattr(matcher, "path", ""))
        if not path.startswith("/api/"):
            continue
        for method in sorted(getattr(matcher, "methods", None) or ()):
            operation = spec["paths"].get(path, {}).get(method.lower(), {})
            fields: list[str] = []
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            if "$ref" in schema:
                name = schema["$ref"].rsplit("/", 1)[1]
                fields = list(spec["components"]["schemas"][name].get("properties", {}))
            found.append((method, path, policy, fields))
    return found


def _check(response, what):
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), what


@pytest.fixture
def dataset_id(client, tenants):
    response = client.post(
        "/api/v1/datasets",
        headers=tenants.a.headers("owner"),
        files={"file": ("h.csv", b"a,b\n1,x\n2,y\n", "text/csv")},
        data={"name": "hostile"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_hostile_path_parameters_never_5xx(app, client, tenants, dataset_id):
    headers = tenants.a.headers("owner")
    checked = 0
    for method, path, _policy, _fields in _operations(app):
        names = re.findall(r"\{([^}]+)\}", path)
        for name in names:
            for value in HOSTILE_PATH:
                concrete = path
                for other in names:
                    real = dataset_id if other == "dataset_id" else "1"
                    concrete = concrete.replace("{" + other + "}", value if other == name else real)
                body = b"{}" if method in ("POST", "PATCH", "PUT") else None
                response = client.request(
                    method,
                    concrete,
                    content=body,
                    headers={**headers, "Content-Type": "application/json"},
                )
                _check(response, (method, concrete[:120]))
                checked += 1
    assert checked > 100


def test_hostile_json_fields_never_5xx(app, client, tenants, dataset_id):
    headers = {**tenants.a.headers("owner"), "Content-Type": "application/json"}
    checked = 0
    for method, path, _policy, fields in _operations(app):
        concrete = path.replace("{dataset_id}", dataset_id).replace("{number}", "1")
        concrete = re.sub(r"\{[^}]+\}", "1", concrete)
        for field in fields:
            for raw in HOSTILE_JSON:
                body = '{"' + field + '": ' + raw + "}"
                response = client.request(method, concrete, content=body.encode(), headers=headers)
                _check(response, (method, concrete, field, raw[:30]))
                checked += 1
    assert checked > 200


@pytest.mark.parametrize("raw", ['"\\ud800"', '"a\\udfffb"', "NaN", "-Infinity", "1e400"])
def test_unstorable_record_values_are_refused(client, tenants, dataset_id, raw):
    # ``records`` values are free-form (Any): only the JSON parser stands in the way here.
    response = client.post(
        f"/api/v1/datasets/{dataset_id}/rows",
        content=('{"records": [{"a": 1, "b": ' + raw + "}]}").encode(),
        headers={**tenants.a.headers("admin"), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text  # naming record and column
    assert (
        client.get(f"/api/v1/datasets/{dataset_id}", headers=tenants.a.headers("admin")).json()[
            "version"
        ]["number"]
        == 1
    )  # nothing was appended
