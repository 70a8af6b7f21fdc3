"""registry: registered models, their immutable versions, aliases

Model names are unique per organization regardless of case, as dataset names are (a
generated ``name_folded = lower(name)`` column with a unique index: migration 0004 explains
why not an expression index). ``model_versions.job_id`` is unique, so a retried training
job never registers two versions. An alias is deleted with the version it points at.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """One helper per table, in dependency order: foreign keys point only backwards."""
    _create_registered_models()
    _create_model_versions()
    _create_model_aliases()


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["org_id"],
        ["organizations.id"],
        name=op.f(f"fk_{table}_org_id_organizations"),
        ondelete="CASCADE",
    )


def _model_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["model_id"],
        ["registered_models.id"],
        name=op.f(f"fk_{table}_model_id_registered_models"),
        ondelete="CASCADE",
    )


def _create_registered_models() -> None:
    # SQLite: VIRTUAL (computed on read, stored by the index); PostgreSQL < 18: only STORED
    stored = op.get_bind().dialect.name != "sqlite"
    op.create_table(
        "registered_models",
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
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _org_fk("registered_models"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registered_models")),
        sa.UniqueConstraint("org_id", "name", name="uq_registered_models_org_name"),
    )
    op.create_index(
        op.f("ix_registered_models_org_id"), "registered_models", ["org_id"], unique=False
    )
    op.create_index(
        "uq_registered_models_org_name_folded",
        "registered_models",
        ["org_id", "name_folded"],
        unique=True,
    )


def _create_model_versions() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(length=40), nullable=False),
        sa.Column("metric", sa.String(length=60), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("signature", sa.JSON(), nullable=False),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("feature_importance", sa.JSON(), nullable=True),
        sa.Column("card", sa.Text(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_prefix", sa.String(length=300), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _model_fk("model_versions"),
        _org_fk("model_versions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("model_id", "number", name="uq_model_versions_model_number"),
        sa.UniqueConstraint("job_id", name="uq_model_versions_job_id"),
    )
    op.create_index(
        op.f("ix_model_versions_model_id"), "model_versions", ["model_id"], unique=False
    )
    op.create_index(op.f("ix_model_versions_org_id"), "model_versions", ["org_id"], unique=False)


def _create_model_aliases() -> None:
    op.create_table(
        "model_aliases",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.String(length=40), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _model_fk("model_aliases"),
        _org_fk("model_aliases"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_aliases_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_aliases")),
        sa.UniqueConstraint("model_id", "alias", name="uq_model_aliases_model_alias"),
    )
    op.create_index(op.f("ix_model_aliases_model_id"), "model_aliases", ["model_id"], unique=False)
    op.create_index(op.f("ix_model_aliases_org_id"), "model_aliases", ["org_id"], unique=False)
    op.create_index(
        op.f("ix_model_aliases_version_id"), "model_aliases", ["version_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_model_aliases_version_id"), table_name="model_aliases")
    op.drop_index(op.f("ix_model_aliases_org_id"), table_name="model_aliases")
    op.drop_index(op.f("ix_model_aliases_model_id"), table_name="model_aliases")
    op.drop_table("model_aliases")
    op.drop_index(op.f("ix_model_versions_org_id"), table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_model_id"), table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_index("uq_registered_models_org_name_folded", table_name="registered_models")
    op.drop_index(op.f("ix_registered_models_org_id"), table_name="registered_models")
    op.drop_table("registered_models")
