"""The artifact store contract: round trips, atomic writes, keys that cannot escape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiaas.storage import FsspecArtifactStore, InvalidKey

ORG = "org_aaaa"
OTHER = "org_bbbb"


@pytest.fixture
def store(tmp_path: Path) -> FsspecArtifactStore:
    return FsspecArtifactStore(str(tmp_path / "artifacts"))


def test_round_trip_and_delete(store, tmp_path):
    store.put_bytes(ORG, "datasets/ds_1/v1.parquet", b"hello")
    assert store.exists(ORG, "datasets/ds_1/v1.parquet")
    assert store.get_bytes(ORG, "datasets/ds_1/v1.parquet") == b"hello"
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100_000)
    store.put_file(ORG, "datasets/ds_1/v2.parquet", src)
    with store.open(ORG, "datasets/ds_1/v2.parquet") as handle:
        assert handle.read() == b"x" * 100_000
    assert list(store.list(ORG, "datasets")) == [
        "datasets/ds_1/v1.parquet",
        "datasets/ds_1/v2.parquet",
    ]
    store.delete(ORG, "datasets/ds_1/v1.parquet")
    store.delete(ORG, "datasets/ds_1/v1.parquet")  # idempotent
    assert not store.exists(ORG, "datasets/ds_1/v1.parquet")
    store.delete_prefix(ORG, "datasets")
    assert list(store.list(ORG, "datasets")) == []


def test_namespaces_are_separate(store):
    store.put_bytes(ORG, "model.onnx", b"a")
    assert not store.exists(OTHER, "model.onnx")
    with pytest.raises(FileNotFoundError):
        store.get_bytes(OTHER, "model.onnx")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../org_bbbb/model.onnx",
        "a/../../org_bbbb/x",
        "/etc/passwd",
        "a//b",
        "./a",
        "a/./b",
        "a\\..\\b",
        "a\x00b",
        "a\nb",
        "file:///etc/passwd",
        "s3://bucket/key",
        "C:/windows",
        "x" * 2000,
    ],
)
def test_escaping_keys_are_refused(store, key):
    with pytest.raises(InvalidKey):
        store.put_bytes(ORG, key, b"evil")
    with pytest.raises(InvalidKey):
        store.exists(ORG, key)


@pytest.mark.parametrize("org_id", ["", "../x", "a/b", "org_" + "x" * 100])
def test_bad_org_ids_are_refused(store, org_id):
    with pytest.raises(InvalidKey):
        store.put_bytes(org_id, "k", b"x")


def test_put_file_links_on_the_same_filesystem_and_survives_the_source(store, tmp_path):
    src = tmp_path / "scratch" / "data.parquet"
    src.parent.mkdir()
    src.write_bytes(b"p" * 50_000)
    store.put_file(ORG, "datasets/ds_1/data.parquet", src)
    stored = store.local_path(ORG, "datasets/ds_1/data.parquet")
    assert stored is not None
    assert stored.stat().st_ino == src.stat().st_ino
    src.unlink()  # the scratch directory is removed after the request
    assert store.get_bytes(ORG, "datasets/ds_1/data.parquet") == b"p" * 50_000
    assert [p.name for p in stored.parent.iterdir()] == ["data.parquet"]  # no temp left


def test_put_file_copies_when_it_cannot_link(store, tmp_path, monkeypatch):
    def cross_device(*_args: object, **_kwargs: object) -> None:
        raise OSError(18, "Invalid cross-device link")  # EXDEV: another filesystem

    monkeypatch.setattr(os, "link", cross_device)
    src = tmp_path / "src.bin"
    src.write_bytes(b"c" * 10_000)
    store.put_file(ORG, "k.bin", src)
    stored = store.local_path(ORG, "k.bin")
    assert stored is not None
    assert stored.stat().st_ino != src.stat().st_ino
    assert stored.read_bytes() == b"c" * 10_000


def test_symlink_out_of_namespace_is_refused(store, tmp_path):
    store.put_bytes(OTHER, "secret.bin", b"other org")
    org_root = Path(store.root) / "orgs" / ORG
    org_root.mkdir(parents=True, exist_ok=True)
    os.symlink(Path(store.root) / "orgs" / OTHER, org_root / "link")
    outside = tmp_path / "outside.txt"
    outside.write_text("host file")
    os.symlink(outside, org_root / "file-link")
    with pytest.raises(InvalidKey):
        store.get_bytes(ORG, "link/secret.bin")
    with pytest.raises(InvalidKey):
        store.get_bytes(ORG, "file-link")
    with pytest.raises(InvalidKey):
        store.put_bytes(ORG, "link/planted.bin", b"x")
    assert not (Path(store.root) / "orgs" / OTHER / "planted.bin").exists()


def test_failed_write_leaves_no_partial_object(store, tmp_path, monkeypatch):
    store.put_bytes(ORG, "a.bin", b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put_bytes(ORG, "a.bin", b"new-but-broken")
    monkeypatch.undo()
    assert store.get_bytes(ORG, "a.bin") == b"old"
    leftovers = [p for p in (Path(store.root) / "orgs" / ORG).iterdir() if p.name != "a.bin"]
    assert leftovers == []
    assert list(store.list(ORG, "a.bin")) == ["a.bin"]


def test_local_path_is_inside_namespace(store):
    store.put_bytes(ORG, "d/x.parquet", b"1")
    path = store.local_path(ORG, "d/x.parquet")
    assert path is not None
    assert path.read_bytes() == b"1"
    assert str(path).startswith(str(Path(store.root) / "orgs" / ORG))
