"""Declarative base, id and time helpers, and the tenant scope every query starts from."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import DateTime, MetaData, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator


class Tenant(Protocol):
    """Whoever a query is scoped to (``aiaas.auth.principal.Principal`` is one)."""

    @property
    def org_id(self) -> str: ...


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def new_id(prefix: str) -> str:
    """An opaque, non-guessable id: ``<prefix>_`` + 128 random bits in hex."""
    return f"{prefix}_{secrets.token_hex(16)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value  # type: ignore[no-any-return]


S = TypeVar("S", bound=Select[Any])


def scoped(stmt: S, principal: Tenant) -> S:
    """Restrict a select to the principal's organization.

    Every entity in the select's FROM that has an ``org_id`` column is filtered, so another
    organization's rows are never found (a 404, not a 403).
    """
    filtered = False
    for desc in stmt.column_descriptions:
        entity = desc.get("entity")
        if entity is not None and hasattr(entity, "org_id"):
            stmt = stmt.where(entity.org_id == principal.org_id)
            filtered = True
    if not filtered:
        raise TypeError("scoped() needs a select of a tenant-owned model (with org_id)")
    return stmt
