"""Assertions and paths shared by every domain's tests."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

#: The sample data the tests use lives outside the repository, beside the project root.
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def shared_dataset(*parts: str) -> Path:
    """``SHARED_DATASETS / parts``, if it exists; else the test skips, or fails when CI=true.

    On a developer's clone the data may be absent, and the test says so in the skip reason
    (``-ra`` prints it); in CI a missing dataset is a broken setup, not a reason to skip.
    """
    path = SHARED_DATASETS.joinpath(*parts)
    if not path.exists():
        reason = f"shared dataset not found: {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the datasets must be present)", pytrace=False)
        pytest.skip(reason)
    return path


def assert_problem(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` (and ``code``)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"].startswith("https://")
    if code is not None:
        assert body["code"] == code, body
    return body


def assert_cross_tenant_404(
    client: TestClient,
    url: str,
    headers: dict[str, str],
    methods: Iterable[str] = ("GET", "PATCH", "DELETE"),
    json: Any = None,
) -> None:
    """Another organization's credential gets 404 (not 403) for ``url`` on every method."""
    for method in methods:
        body = json if method in ("POST", "PUT", "PATCH") else None
        response = client.request(method, url, headers=headers, json=body)
        assert response.status_code == 404, (method, url, response.status_code, response.text)
        assert_problem(response, 404)


def assert_not_listed(
    client: TestClient, list_url: str, headers: dict[str, str], resource_id: str
) -> None:
    """``resource_id`` appears on no page of ``list_url`` for this credential."""
    url: str | None = list_url
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        assert resource_id not in response.text
        cursor = response.json().get("next_cursor")
        sep = "&" if "?" in list_url else "?"
        url = f"{list_url}{sep}cursor={cursor}" if cursor else None


def warm_ray_workers(count: int) -> None:
    """Start ``count`` worker processes of the connected Ray with the engine imported (two
    tasks that overlap in time need two processes): on a loaded machine a cold Ray worker
    takes seconds to come up, and a short search would run all its trials in the first."""
    import time

    import ray

    @ray.remote(num_cpus=1)
    def warm() -> int:
        import aiaas.automl.search  # noqa: F401

        time.sleep(1.0)
        return os.getpid()

    pids = ray.get([warm.remote() for _ in range(count)], timeout=120)
    assert len(set(pids)) == count
