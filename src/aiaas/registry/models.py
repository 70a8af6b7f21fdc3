"""Registered models, their immutable numbered versions, and aliases that point at versions.

Invariants:

- model names are unique per organization regardless of case (``uq_registered_models_org_
  name_folded`` on the database's ``lower(name)``, as for datasets);
- a version is immutable except for its ``tags``; its artifact files are stored under
  ``models/<model id>/<version id>/`` *before* its row is added (bytes first, row second),
  and ``artifacts`` lists each with its size and SHA-256;
- version numbers are unique per model and never reused: ``last_number`` is the highest
  number ever given, ``latest_version`` the newest existing one (0 when there is none);
- ``job_id`` is unique: a retried training job finds the version it registered before
  instead of registering a second one;
- an alias names exactly one version of its model (``uq_model_aliases_model_alias``); it
  moves by an update of its one row, and it is deleted with the version it points at.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Computed,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aiaas.db.base import Base, UTCDateTime, new_id, utcnow


class RegisteredModel(Base):
    """A named model of an organization; its versions hold the artifacts."""

    __tablename__ = "registered_models"
    __table_args__ = (
        UniqueConstraint("org_id", "name", name="uq_registered_models_org_name"),
        Index("uq_registered_models_org_name_folded", "org_id", "name_folded", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mdl"))
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    name_folded: Mapped[str | None] = mapped_column(String(200), Computed("lower(name)"))
    description: Mapped[str | None] = mapped_column(String(2000))
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    last_number: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    aliases: Mapped[list[ModelAlias]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ModelAlias.alias",
        lazy="selectin",
    )


class ModelVersion(Base):
    """One immutable version: metrics, signature, lineage, card and stored artifact files."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "number", name="uq_model_versions_model_number"),
        UniqueConstraint("job_id", name="uq_model_versions_job_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mv"))
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), index=True
    )
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(40))
    metric: Mapped[str] = mapped_column(String(60))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)
    job_id: Mapped[str | None] = mapped_column(String(64))
    feature_importance: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    card: Mapped[str] = mapped_column(Text)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifacts: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    storage_prefix: Mapped[str] = mapped_column(String(300))
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    model: Mapped[RegisteredModel] = relationship(lazy="joined")
    aliases: Mapped[list[ModelAlias]] = relationship(
        order_by="ModelAlias.alias", lazy="selectin", viewonly=True
    )

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def alias_names(self) -> list[str]:
        return [a.alias for a in self.aliases]


class ModelAlias(Base):
    """A movable name (``champion``, ``challenger``, …) for one version of a model."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias", name="uq_model_aliases_model_alias"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mal"))
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), index=True
    )
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    alias: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    version_number: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    model: Mapped[RegisteredModel] = relationship(back_populates="aliases")
    version: Mapped[ModelVersion] = relationship()
