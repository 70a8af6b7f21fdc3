"""Datasets and their immutable versions.

A version row is written only after its Parquet file and profile are stored (bytes first,
row second); it is never updated. ``Dataset.latest_version`` is the number of the newest
version; version numbers are unique per dataset (a concurrent writer gets 409).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Computed,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aiaas.db.base import Base, UTCDateTime, new_id, utcnow


class Dataset(Base):
    """A named dataset.

    Names are unique per organization regardless of case — SQL (DuckDB) folds identifiers
    to lower case, so ``Sales`` and ``sales`` would be one view. The database enforces it
    with a unique index on ``(org_id, name_folded)``, where ``name_folded`` is computed by
    the database as ``lower(name)`` (migration 0004): a generated column rather than an
    index on the expression itself, which SQLite cannot reflect (so models and migrations
    could not be compared). ``lower()`` folds ASCII letters on SQLite, exactly as DuckDB
    folds identifiers; PostgreSQL's also folds other letters (``É``/``é``) — stricter,
    never ambiguous. The exact ``(org_id, name)`` constraint of 0002 stays: dropping it
    would mean rebuilding the table on SQLite, and it is implied anyway.
    """

    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("org_id", "name", name="uq_datasets_org_name"),
        Index("uq_datasets_org_name_folded", "org_id", "name_folded", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    name_folded: Mapped[str | None] = mapped_column(String(200), Computed("lower(name)"))
    description: Mapped[str | None] = mapped_column(String(2000))
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="DatasetVersion.number",
        lazy="selectin",
    )

    @property
    def version(self) -> DatasetVersion | None:
        """The latest version."""
        for v in reversed(self.versions):
            if v.number == self.latest_version:
                return v
        return None


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "number", name="uq_dataset_versions_dataset_number"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dsv"))
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    row_count: Mapped[int] = mapped_column(BigInteger)
    column_count: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    columns_schema: Mapped[list[dict[str, Any]]] = mapped_column("schema", JSON)
    source: Mapped[dict[str, Any]] = mapped_column(JSON)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    recipe: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    quality_score: Mapped[float | None] = mapped_column(Float)
    storage_key: Mapped[str] = mapped_column(String(300))
    profile_key: Mapped[str] = mapped_column(String(300))
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")
