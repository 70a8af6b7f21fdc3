"""Fixtures of the data-domain tests: uploads through the real API, shared sample files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import SHARED_DATASETS

# Where the samples would be; a test that needs one calls tests.helpers.shared_dataset (or
# uses the ``shared_datasets`` fixture), which skips, or fails on CI, when it is missing.
PMLB = SHARED_DATASETS / "pmlb"
MOVIELENS = SHARED_DATASETS / "movielens-100k"

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
