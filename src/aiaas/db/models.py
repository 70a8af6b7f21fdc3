"""Imports every domain's ORM models so that ``Base.metadata`` is complete (Alembic, checks)."""

import aiaas.auth.models  # noqa: F401
