"""Metadata database: SQLAlchemy 2 models on SQLite (default) or PostgreSQL, Alembic migrations."""

from aiaas.db.base import Base, UTCDateTime, new_id, scoped, utcnow
from aiaas.db.engine import dispose_all, get_engine, get_session_factory

__all__ = [
    "Base",
    "UTCDateTime",
    "dispose_all",
    "get_engine",
    "get_session_factory",
    "new_id",
    "scoped",
    "utcnow",
]
