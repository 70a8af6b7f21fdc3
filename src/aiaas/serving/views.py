"""What a serving worker keeps of an endpoint and its versions: plain immutable values.

Built from the database by :func:`aiaas.serving.service.load_views`; read by the caches,
the predictor and the sandboxed batch and quantize children (which import this module,
not the service, so they load neither SQLAlchemy nor the registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VersionView:
    """What a worker needs to load and call one model version."""

    id: str
    org_id: str
    model_name: str
    number: int
    task: str
    signature: dict[str, Any]
    artifacts: tuple[str, ...]
    storage_prefix: str
    size_bytes: int


@dataclass(frozen=True)
class EndpointView:
    """One endpoint at one revision, resolved to versions (immutable: swapped, never edited)."""

    id: str
    org_id: str
    name: str
    model_name: str
    revision: int
    #: ``(version, cumulative weight)``: a draw in [0, 100) takes the first above it.
    routes: tuple[tuple[VersionView, int], ...]
    shadow: VersionView | None
    unknown_categories: str

    def versions(self) -> list[VersionView]:
        found = [v for v, _ in self.routes]
        return [*found, self.shadow] if self.shadow else found
