"""Artifact store: org-namespaced keys over fsspec (a local folder by default, S3 to scale out)."""

from aiaas.storage.base import ArtifactStore, InvalidKey
from aiaas.storage.fsspec_store import FsspecArtifactStore, get_store

__all__ = ["ArtifactStore", "FsspecArtifactStore", "InvalidKey", "get_store"]
