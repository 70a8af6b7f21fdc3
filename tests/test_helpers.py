"""The shared test helpers: where the datasets are, and what happens when one is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import SHARED_DATASETS, shared_dataset


def test_datasets_dir_is_beside_the_project_root():
    project_root = Path(__file__).resolve().parents[1]
    assert (project_root / "pyproject.toml").is_file()
    assert SHARED_DATASETS == project_root.parent / "shared" / "datasets"


def test_missing_dataset_skips_with_its_path(monkeypatch, tmp_path):
    monkeypatch.setattr(helpers, "SHARED_DATASETS", tmp_path)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        shared_dataset("pmlb", "nope.tsv.gz")
    assert str(skipped.value) == f"shared dataset not found: {tmp_path / 'pmlb' / 'nope.tsv.gz'}"


def test_missing_dataset_fails_on_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(helpers, "SHARED_DATASETS", tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        shared_dataset("pmlb")
    assert str(failed.value) == (
        f"shared dataset not found: {tmp_path / 'pmlb'} (CI=true: the datasets must be present)"
    )


def test_present_dataset_is_returned(monkeypatch, tmp_path):
    (tmp_path / "pmlb").mkdir()
    monkeypatch.setattr(helpers, "SHARED_DATASETS", tmp_path)
    monkeypatch.setenv("CI", "true")
    assert shared_dataset("pmlb") == tmp_path / "pmlb"
    assert shared_dataset() == tmp_path


def test_fixture_gives_the_datasets_dir(shared_datasets):
    assert shared_datasets == SHARED_DATASETS
