"""Fixtures of the data-domain tests: uploads through the real API, shared sample files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
PMLB = SHARED / "pmlb"
MOVIELENS = SHARED / "movielens-100k"

Uploader = Callable[..., Any]


@pytest.fixture
def upload(client: TestClient) -> Uploader:
    """POST a file as a new dataset; returns the response."""

    def _upload(
        headers: dict[str, str],
        content: bytes,
        *,
        name: str | None = "data",
        filename: str = "data.csv",
        **fields: str,
    ) -> Any:
        data = dict(fields)
        if name is not None:
            data["name"] = name
        return client.post(
            "/api/v1/datasets",
            headers=headers,
            files={"file": (filename, content, "application/octet-stream")},
            data=data,
        )

    return _upload


def data_files(settings: Any) -> list[Path]:
    """Every regular file under the artifact store and the ingest scratch area."""
    roots = [settings.data_dir / "artifacts", settings.data_dir / "tmp"]
    return sorted(p for r in roots if r.exists() for p in r.rglob("*") if p.is_file())
