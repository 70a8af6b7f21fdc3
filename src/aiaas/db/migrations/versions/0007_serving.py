"""serving: endpoints and their revisions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["org_id"],
        ["organizations.id"],
        name=op.f(f"fk_{table}_org_id_organizations"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    _create_endpoints()
    _create_endpoint_revisions()


def _create_endpoints() -> None:
    # SQLite: VIRTUAL (computed on read, stored by the index); PostgreSQL < 18: only STORED
    stored = op.get_bind().dialect.name != "sqlite"
    op.create_table(
        "endpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "name_folded",
            sa.String(length=200),
            sa.Computed("lower(name)", persisted=stored),
            nullable=True,
        ),
        sa.Column("description", sa.String(length=2000), nullable=True),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("traffic", sa.JSON(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=True),
        sa.Column("shadow_version", sa.Integer(), nullable=True),
        sa.Column("unknown_categories", sa.String(length=20), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("updated_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_models.id"],
            name=op.f("fk_endpoints_model_id_registered_models"),
            ondelete="CASCADE",
        ),
        _org_fk("endpoints"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoints")),
        sa.UniqueConstraint("org_id", "name", name="uq_endpoints_org_name"),
    )
    op.create_index(op.f("ix_endpoints_org_id"), "endpoints", ["org_id"], unique=False)
    op.create_index(op.f("ix_endpoints_model_id"), "endpoints", ["model_id"], unique=False)
    op.create_index(
        "uq_endpoints_org_name_folded", "endpoints", ["org_id", "name_folded"], unique=True
    )


def _create_endpoint_revisions() -> None:
    op.create_table(
        "endpoint_revisions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_endpoint_revisions_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        _org_fk("endpoint_revisions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoint_revisions")),
        sa.UniqueConstraint(
            "endpoint_id", "revision", name="uq_endpoint_revisions_endpoint_revision"
        ),
    )
    op.create_index(
        op.f("ix_endpoint_revisions_endpoint_id"),
        "endpoint_revisions",
        ["endpoint_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_endpoint_revisions_org_id"), "endpoint_revisions", ["org_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("endpoint_revisions")
    op.drop_table("endpoints")
