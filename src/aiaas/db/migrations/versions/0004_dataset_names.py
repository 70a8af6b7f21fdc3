"""datasets: names unique regardless of case

SQL (DuckDB) folds identifiers to lower case, so two datasets ``Sales`` and ``sales`` of one
organization made every SQL query of that organization fail. This adds ``name_folded``, a
column the database computes as ``lower(name)``, and a unique index on ``(org_id,
name_folded)`` (an index on the expression itself cannot be reflected on SQLite).

Existing case duplicates are renamed first, deterministically: within an organization the
oldest dataset (``created_at``, then ``id``) keeps its name, each later one gets the first
free `` (2)``, `` (3)`` … suffix (free under the database's ``lower()``; the name is cut to
stay within 200 characters). Ids, versions and files are unchanged.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME_MAX = 200


def _fold(conn: sa.Connection, name: str) -> str:
    """The database's own lower() (PostgreSQL folds more than ASCII under its locale)."""
    return str(conn.execute(sa.select(sa.func.lower(sa.literal(name, sa.String)))).scalar_one())


def _rename_case_duplicates(conn: sa.Connection) -> None:
    rows = conn.execute(
        sa.text(
            "SELECT id, org_id, name, lower(name) AS folded FROM datasets "
            "ORDER BY org_id, created_at, id"
        )
    ).all()
    taken: dict[str, set[str]] = {}
    for row in rows:
        taken.setdefault(row.org_id, set()).add(row.folded)
    kept: set[tuple[str, str]] = set()
    for row in rows:
        if (row.org_id, row.folded) not in kept:
            kept.add((row.org_id, row.folded))
            continue
        n = 2
        while True:
            suffix = f" ({n})"
            candidate = row.name[: NAME_MAX - len(suffix)].rstrip() + suffix
            folded = _fold(conn, candidate)
            if folded not in taken[row.org_id]:
                break
            n += 1
        conn.execute(
            sa.text("UPDATE datasets SET name = :name WHERE id = :id"),
            {"name": candidate, "id": row.id},
        )
        taken[row.org_id].add(folded)
        kept.add((row.org_id, folded))


def upgrade() -> None:
    conn = op.get_bind()
    _rename_case_duplicates(conn)
    # SQLite adds only VIRTUAL generated columns (computed on read; the index stores them);
    # PostgreSQL < 18 has only STORED ones.
    stored = conn.dialect.name != "sqlite"
    op.add_column(
        "datasets",
        sa.Column(
            "name_folded",
            sa.String(length=200),
            sa.Computed("lower(name)", persisted=stored),
            nullable=True,
        ),
    )
    op.create_index(
        "uq_datasets_org_name_folded", "datasets", ["org_id", "name_folded"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_datasets_org_name_folded", table_name="datasets")
    # not batch mode: rebuilding the table on SQLite would cascade-delete its versions
    op.execute("ALTER TABLE datasets DROP COLUMN name_folded")
