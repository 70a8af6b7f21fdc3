"""save/load round trip, integrity checks, and safe formats only."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import aiaas.automl as automl
from aiaas.automl.model import TRUSTED_TYPES


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mixed_df):
    model = automl.fit(mixed_df, "y", time_budget=20, max_trials=4, n_jobs=1)
    path = model.save(tmp_path_factory.mktemp("m") / "model")
    return model, path, mixed_df.drop(columns="y")


def test_round_trip_predicts_identically(saved) -> None:
    model, path, X = saved
    loaded = automl.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert list(loaded.classes_) == list(model.classes_)
    assert loaded.signature == model.signature
    assert loaded.report() == model.report()
    assert loaded.leaderboard == json.loads(json.dumps(model.leaderboard))


def test_artifact_files_and_manifest_hashes(saved) -> None:
    _, path, _ = saved
    manifest = json.loads((path / "manifest.json").read_text())
    names = {p.name for p in path.iterdir()}
    assert names == {"manifest.json", *manifest["files"]}
    assert {"model.skops", "report.json", "encoding.json"} <= set(manifest["files"])
    assert all(len(h) == 64 for h in manifest["files"].values())
    assert not any(n.endswith((".pkl", ".pickle", ".joblib")) for n in names)
    # skops is a zip of JSON schema + arrays, not a pickle stream
    assert zipfile.is_zipfile(path / "model.skops")


def test_tampered_file_is_refused(saved, tmp_path) -> None:
    _, path, _ = saved
    copy = _copy(path, tmp_path / "copy")
    data = bytearray((copy / "model.skops").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.skops").write_bytes(bytes(data))
    with pytest.raises(automl.ArtifactIntegrityError, match="model.skops"):
        automl.load(copy)


def test_missing_or_extra_file_is_refused(saved, tmp_path) -> None:
    _, path, _ = saved
    a = _copy(path, tmp_path / "a")
    (a / "report.json").unlink()
    with pytest.raises(automl.ArtifactIntegrityError, match="missing"):
        automl.load(a)
    b = _copy(path, tmp_path / "b")
    (b / "evil.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(automl.ArtifactIntegrityError, match="unexpected"):
        automl.load(b)


def test_rewritten_manifest_cannot_smuggle_untrusted_types(saved, tmp_path) -> None:
    """Even with matching hashes, skops only rebuilds the fixed trusted types."""
    import hashlib

    import skops.io as sio

    _, path, _ = saved
    c = _copy(path, tmp_path / "c")
    evil = sio.dumps({"preprocessor": __import__("collections").Counter(), "members": []})
    (c / "model.skops").write_bytes(evil)
    manifest = json.loads((c / "manifest.json").read_text())
    manifest["files"]["model.skops"] = hashlib.sha256(evil).hexdigest()
    (c / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(automl.ArtifactError, match="Untrusted"):
        automl.load(c)


def test_trusted_types_are_a_fixed_list_without_dangerous_entries() -> None:
    assert TRUSTED_TYPES == sorted(set(TRUSTED_TYPES))
    for name in TRUSTED_TYPES:
        assert not name.startswith(
            ("builtins.eval", "builtins.exec", "os.", "posix.", "subprocess.")
        )


def test_save_refuses_a_non_empty_directory(saved, tmp_path) -> None:
    model, _, _ = saved
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(automl.ArtifactError, match="not empty"):
        model.save(tmp_path / "x")


def test_load_of_a_non_model_directory(tmp_path) -> None:
    with pytest.raises(automl.ArtifactError, match="manifest"):
        automl.load(tmp_path)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst
