"""The artifact-store contract.

Keys are relative POSIX paths inside one organization's namespace (``orgs/<org_id>/``). A key
that is absolute, empty, contains ``..``, a backslash, a NUL or a control character, or that
resolves (through a symlink) outside the namespace is refused with :class:`InvalidKey`.
Writes are atomic: a reader sees the old object or the whole new one, never a part.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from aiaas.errors import BadRequest

_ORG_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class InvalidKey(BadRequest):
    code, title = "invalid_key", "Invalid artifact key"


def validate_key(org_id: str, key: str) -> str:
    """Return the normalised relative key, or raise :class:`InvalidKey`."""
    if not _ORG_ID.match(org_id):
        raise InvalidKey("invalid organization id")
    if not key or len(key) > 1024 or _BAD_CHARS.search(key):
        raise InvalidKey("artifact key is empty, too long or has forbidden characters")
    if key.startswith("/") or re.match(r"^[A-Za-z]+:", key):
        raise InvalidKey("artifact key must be relative")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKey("artifact key must not contain empty, '.' or '..' segments")
    return "/".join(parts)


class ArtifactStore(ABC):
    """Org-namespaced blob store. Every method validates ``key`` with :func:`validate_key`."""

    @abstractmethod
    def put_bytes(self, org_id: str, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_file(self, org_id: str, key: str, local_path: Path) -> None:
        """Store a finished local file at ``key`` atomically.

        The caller must not modify ``local_path`` afterwards: the local backend hard-links
        it when it can (same filesystem) instead of copying.
        """

    @abstractmethod
    def open(self, org_id: str, key: str) -> BinaryIO: ...

    def get_bytes(self, org_id: str, key: str) -> bytes:
        with self.open(org_id, key) as handle:
            return handle.read()

    @abstractmethod
    def exists(self, org_id: str, key: str) -> bool: ...

    @abstractmethod
    def delete(self, org_id: str, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""

    @abstractmethod
    def delete_prefix(self, org_id: str, prefix: str) -> None: ...

    @abstractmethod
    def list(self, org_id: str, prefix: str) -> Iterator[str]: ...

    @abstractmethod
    def modified(self, org_id: str, key: str) -> float | None:
        """When ``key`` was last written (POSIX seconds), or None if the backend cannot say."""

    @abstractmethod
    def local_path(self, org_id: str, key: str) -> Path | None:
        """A real file path for ``key`` (local backend), or None where there is none (S3)."""
