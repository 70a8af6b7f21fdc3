"""Hostile values on every data route's path, query, body and form parameters: never a 5xx.

Each request either succeeds or is a 4xx RFC 9457 problem that changed nothing (no version
row, no stored file). Values are sent as raw JSON text, so ``NaN``, ``1e400`` and lone
surrogates (``"\\ud800"``) reach the server exactly as an attacker would send them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.data.conftest import data_files
from tests.helpers import assert_problem

CSV = b"id,name,score,when\n1,alice,1.5,2024-01-02\n2,bob,,2024-02-03\n"

#: Raw JSON text of each hostile value.
VALUES: dict[str, str] = {
    "2**64": "18446744073709551616",
    "-2**63-1": "-9223372036854775809",
    "2**200": str(2**200),
    "1e400": "1e400",
    "-1e400": "-1e400",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "lone-surrogate": '"\\ud800"',
    "surrogate-in-text": '"ab\\udfffcd"',
    "nul": '"a\\u0000b"',
    "10k-chars": json.dumps("x" * 10_000),
    "empty": '""',
    "list": "[]",
    "object": "{}",
    "true": "true",
    "null": "null",
    "negative": "-1",
}
#: Hostile object keys (JSON keys are strings).
KEYS: dict[str, str] = {
    "lone-surrogate": '"\\ud800"',
    "nul": '"a\\u0000b"',
    "10k-chars": json.dumps("k" * 10_000),
    "empty": '""',
}
#: Hostile path segments (percent-encoded as a client would put them in a URL).
SEGMENTS: dict[str, str] = {
    "2**64": "18446744073709551616",
    "-2**63-1": "-9223372036854775809",
    "2**31": str(2**31),
    "zero": "0",
    "negative": "-1",
    "1e400": "1e400",
    "NaN": "NaN",
    "float": "1.5",
    "surrogate-utf8": "%ED%A0%80",
    "nul": "%00",
    "10k-chars": "9" * 10_000,
}
#: Hostile multipart form values (raw bytes: invalid UTF-8 included).
FORM_VALUES: dict[str, bytes] = {
    "surrogate-utf8": b"\xed\xa0\x80",
    "latin-1": b"caf\xe9",
    "nul": b"a\x00b",
    "10k-chars": b"x" * 10_000,
    "2**64": b"18446744073709551616",
    "NaN": b"NaN",
    "empty": b"",
}
FORM_FIELDS: tuple[str, ...] = ("name", "description", "format", "delimiter", "quote")
FORM_FIELDS += ("escape", "header", "encoding")

V = "@V@"
K = "@K@"
#: (label, method, path template, JSON body template) — ``{ds}`` is a real dataset.
BODIES: list[tuple[str, str, str, str]] = [
    ("patch-name", "PATCH", "/datasets/{ds}", '{"name": @V@}'),
    ("patch-description", "PATCH", "/datasets/{ds}", '{"description": @V@}'),
    ("patch-body", "PATCH", "/datasets/{ds}", "@V@"),
    ("patch-key", "PATCH", "/datasets/{ds}", '{@K@: "x"}'),
    ("rows-int-column", "POST", "/datasets/{ds}/rows", '{"records": [{"id": @V@}]}'),
    ("rows-float-column", "POST", "/datasets/{ds}/rows", '{"records": [{"score": @V@}]}'),
    ("rows-text-column", "POST", "/datasets/{ds}/rows", '{"records": [{"name": @V@}]}'),
    ("rows-date-column", "POST", "/datasets/{ds}/rows", '{"records": [{"when": @V@}]}'),
    ("rows-nested", "POST", "/datasets/{ds}/rows", '{"records": [{"name": [@V@]}]}'),
    ("rows-record", "POST", "/datasets/{ds}/rows", '{"records": [@V@]}'),
    ("rows-records", "POST", "/datasets/{ds}/rows", '{"records": @V@}'),
    ("rows-key", "POST", "/datasets/{ds}/rows", '{"records": [{@K@: 1}]}'),
    (
        "import-name",
        "POST",
        "/datasets/import",
        '{"name": @V@, "url": "postgresql://h/d", "query": "select 1"}',
    ),  # fmt: skip
    (
        "import-description",
        "POST",
        "/datasets/import",
        '{"name": "n", "description": @V@, "url": "postgresql://h/d", "query": "select 1"}',
    ),  # fmt: skip
    ("import-url", "POST", "/datasets/import", '{"name": "n", "url": @V@, "query": "select 1"}'),
    (
        "import-query",
        "POST",
        "/datasets/import",
        '{"name": "n", "url": "postgresql://h/d", "query": @V@}',
    ),  # fmt: skip
    ("sql-query", "POST", "/sql", '{"query": @V@}'),
    ("sql-format", "POST", "/sql", '{"query": "select 1", "format": @V@}'),
    ("transform-steps", "POST", "/datasets/{ds}/versions/1/transform", '{"steps": @V@}'),
    ("transform-step", "POST", "/datasets/{ds}/versions/1/transform", '{"steps": [@V@]}'),
]
#: Every recipe step with each of its fields in turn set to the hostile value.
STEPS: dict[str, dict[str, Any]] = {
    "drop_columns": {"columns": ["name"]},
    "rename": {"mapping": {"name": "who"}},
    "cast": {"columns": {"score": "string"}, "errors": "null"},
    "filter": {"conditions": [{"column": "id", "cmp": "eq", "value": 1}], "combine": "all"},
    "drop_duplicates": {"subset": ["id"]},
    "impute": {"columns": ["score"], "strategy": "constant", "value": 0},
    "clip_outliers": {"columns": ["score"], "factor": 1.5},
    "standardize": {"columns": ["score"]},
    "one_hot": {"columns": ["name"], "max_categories": 5, "drop_original": True},
    "pca": {"columns": ["id"], "n_components": 1, "prefix": "pc", "drop_original": False},
    "mask": {"columns": ["name"], "keep": 2},
    "hash": {"columns": ["name"]},
    "generalize": {"column": "id", "width": 10},
}
for _op, _fields in STEPS.items():
    for _field in _fields:
        _step = {"op": _op, **_fields, _field: V}
        BODIES.append(
            (
                f"step-{_op}-{_field}",
                "POST",
                "/datasets/{ds}/versions/1/transform",
                '{"steps": [' + json.dumps(_step).replace(f'"{V}"', V) + "]}",
            )
        )
    if _op == "filter":  # the condition's own fields
        for _cfield in ("column", "cmp", "value"):
            _cond = {"column": "id", "cmp": "eq", "value": 1, _cfield: V}
            _step = {"op": "filter", "conditions": [_cond]}
            BODIES.append(
                (
                    f"step-filter-condition-{_cfield}",
                    "POST",
                    "/datasets/{ds}/versions/1/transform",
                    '{"steps": [' + json.dumps(_step).replace(f'"{V}"', V) + "]}",
                )
            )
BODIES.append(
    (
        "step-rename-key",
        "POST",
        "/datasets/{ds}/versions/1/transform",
        '{"steps": [{"op": "rename", "mapping": {@K@: "x"}}]}',
    )
)
BODIES.append(
    (
        "step-cast-key",
        "POST",
        "/datasets/{ds}/versions/1/transform",
        '{"steps": [{"op": "cast", "columns": {@K@: "string"}}]}',
    )
)

#: (label, method, path template with @P@) — path and query parameters.
PATHS: list[tuple[str, str, str]] = [
    ("dataset-id", "GET", "/datasets/@P@"),
    ("dataset-id-patch", "PATCH", "/datasets/@P@"),
    ("dataset-id-delete", "DELETE", "/datasets/@P@"),
    ("dataset-id-versions", "GET", "/datasets/@P@/versions"),
    ("dataset-id-version", "GET", "/datasets/@P@/versions/1"),
    ("version", "GET", "/datasets/{ds}/versions/@P@"),
    ("version-profile", "GET", "/datasets/{ds}/versions/@P@/profile"),
    ("version-download", "GET", "/datasets/{ds}/versions/@P@/download"),
    ("version-download-parquet", "GET", "/datasets/{ds}/versions/@P@/download?format=parquet"),
    ("version-transform", "POST", "/datasets/{ds}/versions/@P@/transform"),
    ("download-format", "GET", "/datasets/{ds}/versions/1/download?format=@P@"),
    ("list-limit", "GET", "/datasets?limit=@P@"),
    ("list-cursor", "GET", "/datasets?cursor=@P@"),
    ("rows-dataset-id", "POST", "/datasets/@P@/rows"),
]


@pytest.fixture
def dataset(client, tenants, upload):
    h = tenants.a.headers("admin")
    created = upload(h, CSV, name="people")
    assert created.status_code == 201, created.text
    return {"id": created.json()["id"], "headers": h}


def _state(client: Any, settings: Any, dataset: Any) -> tuple[list[Any], list[int]]:
    """What a rejected request must leave unchanged: stored files and the version list."""
    versions = client.get(f"/api/v1/datasets/{dataset['id']}/versions", headers=dataset["headers"])
    numbers = [v["number"] for v in versions.json()] if versions.status_code == 200 else []
    return data_files(settings), numbers


def _check(
    client: Any, settings: Any, dataset: Any, response: Any, label: str, failures: list[str]
) -> None:
    if response.status_code >= 500:
        failures.append(f"{label}: {response.status_code} {response.text[:200]}")
        return
    if response.status_code >= 400:
        try:
            assert_problem(response, response.status_code)
        except AssertionError as exc:
            failures.append(f"{label}: not a problem body ({exc})")


def _run_json(
    client: Any,
    settings: Any,
    dataset: Any,
    method: str,
    path: str,
    body: str,
    label: str,
    failures: list[str],
) -> None:
    before = _state(client, settings, dataset)
    response = client.request(
        method,
        "/api/v1" + path.format(ds=dataset["id"]),
        headers={**dataset["headers"], "content-type": "application/json"},
        content=body.encode("utf-8"),
    )
    _check(client, settings, dataset, response, label, failures)
    if 400 <= response.status_code < 500 and _state(client, settings, dataset) != before:
        failures.append(f"{label}: a rejected request changed the stored data")


@pytest.mark.parametrize(
    ("label", "method", "path", "template"), BODIES, ids=[b[0] for b in BODIES]
)
def test_json_bodies_never_5xx(client, settings, dataset, label, method, path, template):
    failures: list[str] = []
    if K in template:
        cases = {name: template.replace(K, raw) for name, raw in KEYS.items()}
    else:
        cases = {name: template.replace(V, raw) for name, raw in VALUES.items()}
    for name, body in cases.items():
        _run_json(client, settings, dataset, method, path, body, f"{label}={name}", failures)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("label", "method", "path"), PATHS, ids=[p[0] for p in PATHS])
def test_path_and_query_parameters_never_5xx(client, settings, dataset, label, method, path):
    failures: list[str] = []
    body: dict[str, Any] | None = None
    if path.endswith("/transform"):
        body = {"steps": [{"op": "drop_duplicates"}]}
    elif path.endswith("/rows"):
        body = {"records": [{"id": 9}]}
    elif method == "PATCH":
        body = {"description": "d"}
    for name, segment in SEGMENTS.items():
        before = _state(client, settings, dataset)
        url = "/api/v1" + path.format(ds=dataset["id"]).replace("@P@", segment)
        response = client.request(method, url, headers=dataset["headers"], json=body)
        _check(client, settings, dataset, response, f"{label}={name}", failures)
        if 400 <= response.status_code < 500 and _state(client, settings, dataset) != before:
            failures.append(f"{label}={name}: a rejected request changed the stored data")
    assert not failures, "\n".join(failures)


def _multipart(fields: dict[str, bytes], content: bytes) -> tuple[bytes, str]:
    boundary = "hostileBoundary1234"
    parts = [
        b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; name=\""
        + name.encode() + b'"\r\n\r\n' + value + b"\r\n"
        for name, value in fields.items()
    ]  # fmt: skip
    parts.append(
        b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="data.csv"\r\nContent-Type: text/csv\r\n\r\n' + content + b"\r\n"
    )
    return b"".join(parts) + b"--" + boundary.encode() + b"--\r\n", boundary


@pytest.mark.parametrize("target", ["create", "new-version"])
@pytest.mark.parametrize("field", FORM_FIELDS)
def test_form_fields_never_5xx(client, settings, dataset, target, field):
    failures: list[str] = []
    path = (
        "/api/v1/datasets" if target == "create" else f"/api/v1/datasets/{dataset['id']}/versions"
    )
    for name, value in FORM_VALUES.items():
        before = _state(client, settings, dataset)
        fields = {field: value}
        if field != "name" and target == "create":
            fields["name"] = f"form-{field}-{name}".encode()
        body, boundary = _multipart(fields, CSV)
        response = client.post(
            path,
            headers={
                **dataset["headers"],
                "content-type": f"multipart/form-data; boundary={boundary}",
            },
            content=body,
        )
        _check(client, settings, dataset, response, f"{target}.{field}={name}", failures)
        if 400 <= response.status_code < 500 and _state(client, settings, dataset) != before:
            failures.append(f"{target}.{field}={name}: a rejected request changed the stored data")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- exact answers


def _versions(client: Any, dataset: Any) -> list[int]:
    r = client.get(f"/api/v1/datasets/{dataset['id']}/versions", headers=dataset["headers"])
    return [v["number"] for v in r.json()]


@pytest.mark.parametrize(
    ("column", "raw", "why"),
    [
        ("id", "18446744073709551616", "an integer outside the 64-bit range"),
        ("id", "-9223372036854775809", "an integer outside the 64-bit range"),
        ("score", str(2**200), "an integer outside the 64-bit range"),
        ("score", "NaN", "not a finite number"),
        ("score", "1e400", "not a finite number"),
        ("score", "-Infinity", "not a finite number"),
        ("name", '"\\ud800"', "a lone surrogate"),
        ("name", '"ok\\udfff"', "a lone surrogate"),
        ("name", '["nested", NaN]', "not a finite number"),
    ],
    ids=[
        "2**64",
        "-2**63-1",
        "2**200",
        "NaN",
        "1e400",
        "-Infinity",
        "surrogate",
        "surrogate-2",
        "nested-NaN",
    ],  # fmt: skip
)
def test_append_refuses_values_it_cannot_store_naming_row_and_column(
    client, settings, dataset, column, raw, why
):
    before = (data_files(settings), _versions(client, dataset))
    body = '{"records": [{"id": 3, "name": "carol"}, {"' + column + '": ' + raw + "}]}"
    r = client.post(
        f"/api/v1/datasets/{dataset['id']}/rows",
        headers={**dataset["headers"], "content-type": "application/json"},
        content=body.encode(),
    )
    problem = assert_problem(r, 422, "invalid_input")
    assert problem["detail"] == f"record 1, column {column!r}: {why}"
    assert problem["errors"] == [{"record": 1, "column": column, "detail": why}]
    assert (data_files(settings), _versions(client, dataset)) == before


def test_append_refuses_a_lone_surrogate_in_a_column_name(client, settings, dataset):
    before = (data_files(settings), _versions(client, dataset))
    r = client.post(
        f"/api/v1/datasets/{dataset['id']}/rows",
        headers={**dataset["headers"], "content-type": "application/json"},
        content=b'{"records": [{"id": 3}, {"id": 4}, {"na\\ud800me": "x"}]}',
    )
    problem = assert_problem(r, 422, "invalid_input")
    assert problem["detail"] == "record 2, column 'na\\ud800me': a lone surrogate in the name"
    assert (data_files(settings), _versions(client, dataset)) == before


def test_append_of_ordinary_extremes_still_works(client, dataset):
    records = [
        {"id": 2**63 - 1, "score": 1e300, "name": "\U0001f600 ok"},
        {"id": -(2**63), "score": -0.0, "name": ""},
    ]
    r = client.post(
        f"/api/v1/datasets/{dataset['id']}/rows",
        headers=dataset["headers"],
        json={"records": records},
    )
    assert r.status_code == 201, r.text
    assert r.json()["row_count"] == 4


@pytest.mark.parametrize(
    "suffix", ["", "/profile", "/download", "/download?format=parquet", "/transform"]
)
@pytest.mark.parametrize("number", [2**64, 2**63, 2**31, -(2**63) - 1, 0, -1])
def test_version_numbers_outside_1_to_2_31_are_422(client, dataset, suffix, number):
    url = f"/api/v1/datasets/{dataset['id']}/versions/{number}{suffix}"
    if suffix == "/transform":
        r = client.post(
            url, headers=dataset["headers"], json={"steps": [{"op": "drop_duplicates"}]}
        )
    else:
        r = client.get(url, headers=dataset["headers"])
    assert_problem(r, 422, "invalid_input")
    assert _versions(client, dataset) == [1]


def test_the_largest_version_number_is_a_plain_404(client, dataset):
    r = client.get(
        f"/api/v1/datasets/{dataset['id']}/versions/{2**31 - 1}", headers=dataset["headers"]
    )
    assert_problem(r, 404, "not_found")


@pytest.mark.parametrize("where", ["patch", "form"])
@pytest.mark.parametrize(("raw", "form"), [('"a\\u0000b"', b"a\x00b"), ('"x\\ud800"', None)])
def test_descriptions_refuse_nul_and_lone_surrogates(client, settings, dataset, where, raw, form):
    before = (data_files(settings), _versions(client, dataset))
    if where == "patch":
        r = client.patch(
            f"/api/v1/datasets/{dataset['id']}",
            headers={**dataset["headers"], "content-type": "application/json"},
            content=b'{"description": %s}' % raw.encode(),
        )
    else:
        if form is None:
            pytest.skip("a multipart field is UTF-8 bytes: it cannot carry a lone surrogate")
        body, boundary = _multipart({"name": b"described", "description": form}, CSV)
        r = client.post(
            "/api/v1/datasets",
            headers={
                **dataset["headers"],
                "content-type": f"multipart/form-data; boundary={boundary}",
            },
            content=body,
        )
    assert_problem(r, 422, "invalid_input")
    assert (data_files(settings), _versions(client, dataset)) == before
    got = client.get(f"/api/v1/datasets/{dataset['id']}", headers=dataset["headers"]).json()
    assert got["description"] is None
