"""``make migrate-check``: migrate a scratch SQLite database and compare it with the models."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import aiaas.db.models  # noqa: F401
from aiaas.db.base import Base
from aiaas.db.engine import get_engine
from aiaas.db.migrate import upgrade


def diff(url: str) -> list[object]:
    upgrade(url)
    with get_engine(url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        changes = diff(f"sqlite:///{Path(tmp) / 'check.db'}")
    if changes:
        print("models and migrations differ:", *changes, sep="\n  ")  # noqa: T201
        return 1
    print("migrations match the models")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
