"""Registry fixtures: one tiny AutoML model fitted per session, versions registered without a job.

``register(tenant, ...)`` calls :func:`aiaas.registry.service.register_trained` in its own
committed transaction, as the jobs worker does, and returns the committed version.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aiaas.db import get_session_factory
from aiaas.registry import service as registry_service
from aiaas.registry.models import ModelVersion
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore, get_store
from tests.conftest import Tenant

Register = Callable[..., ModelVersion]


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved binary classifier (ONNX included), fitted in well under a second."""
    from aiaas import automl

    rng = np.random.default_rng(0)
    n = 160
    df = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], n),
        }
    )
    df["y"] = (df["a"] + (df["colour"] == "red") + rng.normal(scale=0.5, size=n) > 0.5).astype(int)
    model = automl.fit(df, "y", time_budget=20, families=["linear"], ensemble=False, max_trials=3)
    return model.save(tmp_path_factory.mktemp("saved") / "model")


@pytest.fixture(scope="session")
def saved_model_without_onnx(saved_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with its ONNX graphs removed (and its manifest saying so)."""
    target = tmp_path_factory.mktemp("saved-no-onnx") / "model"
    shutil.copytree(saved_model, target)
    manifest = json.loads((target / "manifest.json").read_text())
    for name in ("model.onnx", "model_raw.onnx"):
        (target / name).unlink(missing_ok=True)
        manifest["files"].pop(name, None)
    manifest["onnx"] = manifest["onnx_raw"] = None
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def copy_model(src: Path, dest: Path) -> Path:
    """A private copy of a saved model directory (to tamper with)."""
    shutil.copytree(src, dest)
    return dest


def rewrite_manifest(model_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    change(manifest)
    (model_dir / "manifest.json").write_text(json.dumps(manifest))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(settings: Settings) -> ArtifactStore:
    return get_store(settings.resolved_artifacts_url)


def model_files(store: ArtifactStore, org_id: str) -> list[str]:
    """Every stored key under the organization's ``models/``."""
    return list(store.list(org_id, "models"))


@pytest.fixture
def register(settings: Settings, store: ArtifactStore, saved_model: Path) -> Register:
    """``register(tenant, name="churn", *, job_id=None, model_dir=None, store=None, ...)``."""

    def make(
        tenant: Tenant,
        name: str = "churn",
        *,
        job_id: str | None = None,
        model_dir: Path | None = None,
        use_store: ArtifactStore | None = None,
        lineage: dict[str, Any] | None = None,
        extra_metrics: dict[str, Any] | None = None,
    ) -> ModelVersion:
        factory = get_session_factory(settings.resolved_database_url)
        with factory() as session, session.begin():
            return registry_service.register_trained(
                session,
                use_store or store,
                org_id=tenant.org_id,
                model_name=name,
                model_dir=model_dir or saved_model,
                lineage=lineage
                or {"dataset_id": "ds_test", "dataset_version": 1, "job_id": "job_x"},
                job_id=job_id or f"job_{uuid.uuid4().hex}",
                created_by=tenant.users["developer"],
                extra_metrics=extra_metrics,
            )

    return make
