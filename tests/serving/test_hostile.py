"""Hostile prediction requests: each one is a 4xx RFC 9457 problem with an exact detail, and
the server answers the next good request (200).

Bodies that break the JSON, the shape or the limits; the wrong content type; no, bad and
least-privileged credentials; another organization's endpoint on every route; and (over
real HTTP, where the server checks the response headers) column names built to break the
``X-Ignored-Columns`` header.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenants
from tests.helpers import assert_cross_tenant_404, assert_not_listed, assert_problem
from tests.registry.conftest import Register
from tests.serving.conftest import API, Deploy, Live, deployer

FORMATS = "instances, dataframe_split, dataframe_records, inputs"
MAX_BODY = 10 * 1024 * 1024
GOOD = {"instances": [{"a": 0.5, "b": -0.5, "colour": "red"}]}
DEEP = 100_000

pytestmark = pytest.mark.usefixtures("quiet_logs")


def _rows_of(row: bytes, n: int) -> bytes:
    return b",".join([row] * n)


def hostile() -> list[tuple[str, bytes, int, str]]:
    """(what, body bytes, status, detail); built when used (the large ones are ~30 MB)."""
    return [
        (
            "empty body",
            b"",
            422,
            'the request body is empty; send a JSON object such as {"instances": '
            '[{"column": value, ...}]}',
        ),
        (
            "not JSON",
            b"a,b,colour\n1,2,red\n",
            422,
            "the request body is not valid JSON: unexpected character, expected a JSON value: "
            "line 1 column 1 (char 0)",
        ),
        (
            "truncated JSON",
            b'{"instances": [{"a": 1',
            422,
            "the request body is not valid JSON: unexpected end of data: line 1 column 23 "
            "(char 22)",
        ),
        (
            "not UTF-8",
            b'{"instances": [{"colour": "\xff"}]}',
            422,
            "the request body is not valid JSON: str is not valid UTF-8: surrogates not allowed: "
            "line 1 column 1 (char 0)",
        ),
        (
            "top-level list",
            b'[{"a": 1, "b": 2, "colour": "red"}]',
            422,
            f"the body must be a JSON object with one of: {FORMATS}",
        ),
        (
            "top-level string",
            b'"instances"',
            422,
            f"the body must be a JSON object with one of: {FORMATS}",
        ),
        (
            "two formats",
            b'{"instances": [[1, 2, "red"]], "inputs": [[1, 2, "red"]]}',
            422,
            f"give exactly one of: {FORMATS}",
        ),
        ("params alone", b'{"params": {}}', 422, f"give exactly one of: {FORMATS}"),
        (
            "unknown top-level key",
            b'{"instances": [[1, 2, "red"]], "columns": ["a"]}',
            422,
            f"unknown top-level field 'columns'; use one of: {FORMATS}",
        ),
        (
            "TF-Serving signature_name",
            b'{"signature_name": "serving_default", "instances": [[1, 2, "red"]]}',
            422,
            f"unknown top-level field 'signature_name'; use one of: {FORMATS}",
        ),
        ("no rows", b'{"instances": []}', 422, "the request has no rows"),
        ("rows not a list", b'{"instances": {"a": 1}}', 422, "'instances' must be a list of rows"),
        (
            "null rows",
            b'{"dataframe_records": null}',
            422,
            "'dataframe_records' must be a list of rows",
        ),
        (
            "one flat instance",
            b'{"instances": [1.0, 2.0, "red"]}',
            422,
            "the rows of 'instances' must be objects (column → value) or lists",
        ),
        (
            "objects then a list",
            b'{"instances": [{"a": 1, "b": 2, "colour": "red"}, [1, 2, "red"]]}',
            422,
            "row 1 of 'instances' is not an object",
        ),
        (
            "ragged instances",
            b'{"instances": [[1, 2, "red"], [1, 2]]}',
            422,
            "row 1 of 'instances' must be a list of 3 values, in the order of the model's "
            "columns (or send objects by column name)",
        ),
        (
            "ragged inputs rows",
            b'{"inputs": [[1, 2, "red"], [1, 2, "red", 4]]}',
            422,
            "row 1 of 'inputs' must be a list of 3 values, in the order of the model's "
            "columns (or send objects by column name)",
        ),
        (
            "ragged inputs columns",
            b'{"inputs": {"a": [1, 2], "b": [1], "colour": ["red", "red"]}}',
            422,
            'the columns of "inputs" must all have the same length',
        ),
        (
            "ragged dataframe_split",
            b'{"dataframe_split": {"columns": ["a", "b", "colour"], "data": [[1, 2, "red"], [1]]}}',
            422,
            "row 1 of dataframe_split.data must be a list of 3 values",
        ),
        (
            "dataframe_split as rows",
            b'{"dataframe_split": [[1, 2, "red"]]}',
            422,
            '"dataframe_split" must be {"columns": [...], "data": [[...], ...]}',
        ),
        (
            "dataframe_split, columns twice",
            b'{"dataframe_split": {"columns": ["a", "a", "colour"], "data": [[1, 2, "red"]]}}',
            422,
            '"dataframe_split.columns" must be distinct column names',
        ),
        (
            "dataframe_split, unknown field",
            b'{"dataframe_split": {"columns": ["a"], "data": [[1]], "dtypes": {}}}',
            422,
            "unknown field 'dtypes' in \"dataframe_split\"",
        ),
        (
            "dataframe_split without data",
            b'{"dataframe_split": {"columns": ["a", "b", "colour"]}}',
            422,
            '"dataframe_split.data" must be a list of rows',
        ),
        (
            f"{DEEP} nested arrays in a cell",
            b'{"instances": [{"a": ' + b"[" * DEEP + b"]" * DEEP + b', "b": 1, "colour": "red"}]}',
            422,
            "the request body is not valid JSON: depth limit exceeded: line 1 column 1044 "
            "(char 1043)",
        ),
        (
            f"{DEEP} nested arrays as the body",
            b"[" * DEEP + b"]" * DEEP,
            422,
            "the request body is not valid JSON: depth limit exceeded: line 1 column 1026 "
            "(char 1025)",
        ),
        (
            "1000 nested arrays in a cell",
            b'{"instances": [{"a": 1, "b": 1, "colour": ' + b"[" * 1000 + b"]" * 1000 + b"}]}",
            422,
            "row 0, column 'colour': expected a category, got an array",
        ),
        (
            "a 5 MB string in a numeric cell",
            b'{"instances": [{"a": "' + b"9" * 5_000_000 + b'", "b": 1, "colour": "red"}]}',
            422,
            "row 0, column 'a': expected a number, got a string",
        ),
        (
            "10001 rows (one above AIAAS_SERVING__MAX_ROWS)",
            b'{"instances": [' + _rows_of(b'[0.5,0.25,"red"]', 10_001) + b"]}",
            422,
            "a request may carry at most 10000 rows, this one has 10001",
        ),
        (
            "1e6 rows as objects, under the body limit",
            b'{"dataframe_records": [' + _rows_of(b"{}", 1_000_000) + b"]}",
            422,
            "a request may carry at most 10000 rows, this one has 1000000",
        ),
        (
            "1e6 rows as columns, under the body limit",
            b'{"inputs": {"a": [' + _rows_of(b"0", 1_000_000) + b"]}}",
            422,
            "a request may carry at most 10000 rows, this one has 1000000",
        ),
        (
            "1e6 rows over the body limit",
            b'{"instances": [' + _rows_of(b'[0.5,0.25,"red"]', 1_000_000) + b"]}",
            413,
            f"request body exceeds the limit of {MAX_BODY} bytes",
        ),
    ]


def post(client: Any, tenants: Tenants, body: bytes, path: str = "predict", **headers: str) -> Any:
    return client.post(
        f"{API}/ep/{path}",
        content=body,
        headers={"Content-Type": "application/json", **tenants.a.headers("viewer"), **headers},
    )


def assert_alive(client: Any, tenants: Tenants, path: str = "predict") -> None:
    r = client.post(f"{API}/ep/{path}", json=GOOD, headers=tenants.a.headers("viewer"))
    assert r.status_code == 200, r.text


@pytest.fixture
def endpoint(client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path) -> str:
    return str(deploy(tenants.a, saved_model)["id"])


def test_hostile_bodies_are_problems_and_the_server_answers_after(
    any_client: TestClient, tenants: Tenants, register: Register, saved_model: Path
) -> None:
    """Through the serving gateway and through the FastAPI routes alike."""
    client = any_client
    deployer(client, register)(tenants.a, saved_model)
    cases = hostile()
    assert len(cases[-1][1]) > MAX_BODY > len(cases[-3][1])  # the cases are what they say
    for what, body, status, detail in cases:
        for path in ("predict", "invocations"):
            r = post(client, tenants, body, path)
            problem = assert_problem(r, status)
            assert problem["detail"] == detail, (what, path)
            assert_alive(client, tenants, path)


def test_a_body_streamed_past_the_limit_is_cut_off(
    client: TestClient, tenants: Tenants, endpoint: str
) -> None:
    """Without a Content-Length the body is counted as it arrives, and refused past it."""
    chunk = b'[0.5,0.25,"red"],' * 60_000  # about 1 MB

    def chunks() -> Iterator[bytes]:
        yield b'{"instances": ['
        for _ in range(12):
            yield chunk
        yield b'[0.5,0.25,"red"]]}'

    r = client.post(
        f"{API}/ep/predict",
        content=chunks(),
        headers={"Content-Type": "application/json", **tenants.a.headers("viewer")},
    )
    assert "content-length" not in r.request.headers
    problem = assert_problem(r, 413, "payload_too_large")
    assert problem["detail"] == f"request body exceeds the limit of {MAX_BODY} bytes"
    assert_alive(client, tenants)


def test_huge_strings_are_answered_or_refused_without_echoing_them(
    client: TestClient, tenants: Tenants, deploy: Deploy, saved_model: Path
) -> None:
    """A 5 MB category is an unknown category (answered, or refused by a strict
    endpoint with a short detail); a 5 MB column name is ignored, reported shortened."""
    deploy(tenants.a, saved_model)
    strict = client.post(
        API,
        json={"name": "strict", "model": "m", "version": 1, "unknown_categories": "error"},
        headers=tenants.a.headers("developer"),
    )
    assert strict.status_code == 201, strict.text
    huge = "x" * 5_000_000
    r = client.post(
        f"{API}/ep/predict",
        json={"instances": [{"a": 1.0, "b": 2.0, "colour": huge}]},
        headers=tenants.a.headers("viewer"),
    )
    assert r.status_code == 200, r.text[:300]
    assert len(r.content) < 1000
    r = client.post(
        f"{API}/strict/predict",
        json={"instances": [{"a": 1.0, "b": 2.0, "colour": huge}]},
        headers=tenants.a.headers("viewer"),
    )
    problem = assert_problem(r, 422, "invalid_input")
    assert problem["detail"] == (
        f"row 0, column 'colour': unknown category {'x' * 100!r} (this endpoint refuses "
        "categories the model never saw)"
    )
    r = client.post(
        f"{API}/ep/predict",
        json={"instances": [{"a": 1.0, "b": 2.0, "colour": "red", huge: 1}]},
        headers=tenants.a.headers("viewer"),
    )
    assert r.status_code == 200, r.text[:300]
    assert r.headers["x-ignored-columns"] == "x" * 1000
    assert_alive(client, tenants)


def test_a_body_that_is_not_json_by_its_content_type_is_415(
    client: TestClient, tenants: Tenants, endpoint: str
) -> None:
    for content_type, shown in (
        ("text/plain", "text/plain"),
        ("text/csv", "text/csv"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        ("", "a body without Content-Type"),
    ):
        for path in ("predict", "invocations"):
            r = client.post(
                f"{API}/ep/{path}",
                content=b'{"instances": [{"a": 1, "b": 2, "colour": "red"}]}',
                headers={**tenants.a.headers("viewer"), "Content-Type": content_type},
            )
            problem = assert_problem(r, 415, "unsupported_media_type")
            assert problem["detail"] == f"this route takes application/json, not {shown}"
            assert_alive(client, tenants, path)


def test_credentials(client: TestClient, tenants: Tenants, endpoint: str) -> None:
    """No key or a bad one: 401 before the body is read; every role may predict."""
    refused = [
        ({}, "missing Authorization header (use: Authorization: Bearer <key>)"),
        (
            {"Authorization": "Basic dXNlcjpwYXNz"},
            "malformed Authorization header (use: Authorization: Bearer <key>)",
        ),
        ({"Authorization": "Bearer aiaas_nope"}, "invalid credentials"),
        (
            {"Authorization": tenants.a.headers("viewer")["Authorization"] + "x"},
            "invalid credentials",
        ),
    ]
    for headers, detail in refused:
        for path in ("predict", "invocations"):
            r = client.post(f"{API}/ep/{path}", json=GOOD, headers=headers)
            problem = assert_problem(r, 401, "unauthorized")
            assert problem["detail"] == detail, (headers, path)
            assert r.headers["www-authenticate"] == "Bearer"
    for role in ("viewer", "developer", "admin", "owner"):
        for path in ("predict", "invocations"):
            r = client.post(f"{API}/ep/{path}", json=GOOD, headers=tenants.a.headers(role))
            assert r.status_code == 200, (role, path, r.text)


def test_another_orgs_endpoint_is_not_found_on_every_route(
    client: TestClient, tenants: Tenants, endpoint: str
) -> None:
    url = f"{API}/ep"
    for role in ("viewer", "owner"):
        for path in ("predict", "invocations"):
            r = client.post(f"{url}/{path}", json=GOOD, headers=tenants.b.headers(role))
            assert assert_problem(r, 404, "not_found")["detail"] == "endpoint 'ep' not found"
        assert_cross_tenant_404(client, f"{url}/revisions", tenants.b.headers(role), ("GET",))
        assert_not_listed(client, API, tenants.b.headers(role), endpoint)
        assert_not_listed(client, f"{API}?model=m", tenants.b.headers(role), endpoint)
    other = tenants.b.headers("owner")  # a role that may change endpoints: 404, not 403
    assert_cross_tenant_404(client, url, other, json={"description": "mine now"})
    assert_cross_tenant_404(client, f"{url}/rollback", other, methods=("POST",), json={})
    # nor can it deploy the other organization's model
    r = client.post(
        API, json={"name": "ep", "model": "m", "version": 1}, headers=tenants.b.headers("owner")
    )
    assert assert_problem(r, 404, "not_found")["detail"] == "model 'm' not found"
    # the owner's endpoint is untouched, and still answers
    mine = client.get(url, headers=tenants.a.headers("viewer"))
    assert mine.status_code == 200, mine.text
    assert (mine.json()["id"], mine.json()["revision"], mine.json()["description"]) == (
        endpoint,
        1,
        None,
    )
    assert_alive(client, tenants)


# --------------------------------------------------------------------------- real HTTP


def test_column_names_cannot_break_the_response_headers(
    live: Live, tenants: Tenants, register: Register, saved_model: Path
) -> None:
    """Ignored column names are echoed in ``X-Ignored-Columns``: control characters (CR LF:
    a header injection; others: a header the server refuses to send, a 500) are escaped."""
    with live.client() as http:
        deployer(http, register)(tenants.a, saved_model)
        names = ["x\r\nSet-Cookie: evil=1", "tab\there", "nul\x00", "bell\x07", "del\x7f", "ünï"]
        row = {"a": 1.0, "b": 2.0, "colour": "red", **dict.fromkeys(names, 1)}
        for path in ("predict", "invocations"):
            r = http.post(
                f"{API}/ep/{path}", json={"instances": [row]}, headers=tenants.a.headers("viewer")
            )
            assert r.status_code == 200, r.text
            assert "set-cookie" not in r.headers
            assert r.headers["x-ignored-columns"] == (
                "x\\r\\nSet-Cookie: evil=1, tab\\there, nul\\x00, bell\\x07, del\\x7f, \\xfcn\\xef"
            )
        r = http.post(f"{API}/ep/predict", json=GOOD, headers=tenants.a.headers("viewer"))
        assert r.status_code == 200, r.text
