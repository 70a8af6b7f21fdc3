"""fsspec implementation of :class:`ArtifactStore` (local folder, S3, anything fsspec speaks)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, cast

import fsspec
from fsspec.implementations.local import LocalFileSystem

from aiaas.storage.base import ArtifactStore, InvalidKey, validate_key


class FsspecArtifactStore(ArtifactStore):
    def __init__(self, url: str) -> None:
        fs, root = fsspec.core.url_to_fs(url)
        self.fs = fs
        self.is_local = isinstance(fs, LocalFileSystem)
        self.root = str(Path(root).resolve()) if self.is_local else root.rstrip("/")
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------
    def _org_root(self, org_id: str) -> str:
        return f"{self.root}/orgs/{org_id}"

    def _path(self, org_id: str, key: str) -> str:
        key = validate_key(org_id, key)
        path = f"{self._org_root(org_id)}/{key}"
        if self.is_local:
            # A symlink anywhere on the way must not lead outside the org's folder.
            org_root = os.path.realpath(self._org_root(org_id))
            real = os.path.realpath(path)
            if os.path.commonpath([org_root, real]) != org_root:
                raise InvalidKey("artifact key resolves outside its namespace")
        return path

    # -- writes ------------------------------------------------------------------------
    def put_bytes(self, org_id: str, key: str, data: bytes) -> None:
        path = self._path(org_id, key)
        if not self.is_local:
            self.fs.pipe_file(path, data)  # one object PUT: atomic
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, org_id: str, key: str, local_path: Path) -> None:
        path = self._path(org_id, key)
        if not self.is_local:
            self.fs.put_file(str(local_path), path)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{Path(path).parent}/.tmp-{uuid.uuid4().hex}"
        try:
            try:  # same filesystem: a hard link, no copy (the caller never writes it again)
                os.link(local_path, tmp)
            except OSError:
                shutil.copyfile(local_path, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- reads -------------------------------------------------------------------------
    def open(self, org_id: str, key: str) -> BinaryIO:
        return cast(BinaryIO, self.fs.open(self._path(org_id, key), "rb"))

    def exists(self, org_id: str, key: str) -> bool:
        return bool(self.fs.exists(self._path(org_id, key)))

    def list(self, org_id: str, prefix: str) -> Iterator[str]:
        base = self._path(org_id, prefix)
        if not self.fs.exists(base):
            return
        org_root = self._org_root(org_id)
        if self.is_local:
            org_root = os.path.realpath(org_root)
        for found in sorted(self.fs.find(base)):
            rel = str(found)[len(org_root) + 1 :]
            if not Path(rel).name.startswith(".tmp-"):
                yield rel

    def modified(self, org_id: str, key: str) -> float | None:
        info = self.fs.info(self._path(org_id, key))
        value = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
        if isinstance(value, datetime):
            return value.timestamp()
        return float(value) if isinstance(value, int | float) else None

    def local_path(self, org_id: str, key: str) -> Path | None:
        return Path(self._path(org_id, key)) if self.is_local else None

    # -- deletes -----------------------------------------------------------------------
    def delete(self, org_id: str, key: str) -> None:
        path = self._path(org_id, key)
        if self.fs.exists(path):
            self.fs.rm(path)

    def delete_prefix(self, org_id: str, prefix: str) -> None:
        path = self._path(org_id, prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def get_store(url: str) -> ArtifactStore:
    return FsspecArtifactStore(url)
