"""Endpoints: a named, stable URL that serves versions of one registered model.

Invariants:

- endpoint names are unique per organization regardless of case
  (``uq_endpoints_org_name_folded`` on ``lower(name)``);
- an endpoint serves either a fixed traffic split (``traffic``: version numbers of its
  model with integer weights that sum to 100) or whatever version one alias of its model
  points to (``alias``; ``traffic`` is then empty) — never both;
- ``shadow_version``, when set, is a version of the same model that gets a copy of the
  traffic; its answers are logged, never returned;
- ``revision`` starts at 1 and increases by one on every change of what the endpoint
  serves (deploy, traffic, shadow, rollback, and a move of the alias it follows); every
  revision's spec is kept in ``endpoint_revisions`` (rollback restores one);
- a version an endpoint serves or shadows cannot be deleted, nor the alias it follows
  (the registry's in-use checks say which endpoint holds it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Computed,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aiaas.db.base import Base, UTCDateTime, new_id, utcnow
from aiaas.registry.models import RegisteredModel


class Endpoint(Base):
    """A deployed model: traffic by version (or an alias to follow), a shadow, a revision."""

    __tablename__ = "endpoints"
    __table_args__ = (
        UniqueConstraint("org_id", "name", name="uq_endpoints_org_name"),
        Index("uq_endpoints_org_name_folded", "org_id", "name_folded", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ep"))
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    name_folded: Mapped[str | None] = mapped_column(String(200), Computed("lower(name)"))
    description: Mapped[str | None] = mapped_column(String(2000))
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), index=True
    )
    #: ``[{"version": N, "weight": W}, …]``, weights summing to 100; empty when following.
    traffic: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    alias: Mapped[str | None] = mapped_column(String(64))
    shadow_version: Mapped[int | None] = mapped_column(Integer)
    #: What a category the model never saw does: ``ignore`` (as in training) or ``error``.
    unknown_categories: Mapped[str] = mapped_column(String(20), default="ignore")
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str | None] = mapped_column(String(40))
    updated_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    model: Mapped[RegisteredModel] = relationship(lazy="joined")

    @property
    def model_name(self) -> str:
        return self.model.name

    def spec(self) -> dict[str, Any]:
        """What this revision serves, as kept in its ``endpoint_revisions`` row."""
        return {
            "traffic": [dict(t) for t in self.traffic],
            "alias": self.alias,
            "shadow_version": self.shadow_version,
            "unknown_categories": self.unknown_categories,
        }


class EndpointRevision(Base):
    """One revision of an endpoint's spec, kept for history and rollback (append-only)."""

    __tablename__ = "endpoint_revisions"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "revision", name="uq_endpoint_revisions_endpoint_revision"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("epr"))
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), index=True
    )
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    revision: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
