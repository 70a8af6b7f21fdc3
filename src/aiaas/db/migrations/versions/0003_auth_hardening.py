"""auth: API key owners, refresh-token families, accounts per organization

- ``users.org_id``: an account belongs to one organization; e-mail is unique per
  organization (``uq_users_org_email``) instead of globally. A user with memberships in
  several organizations is split into one account per organization — same e-mail, password
  hash, state and token version; the oldest membership keeps the original id, the others get
  new ids (created at their membership's time, so the oldest account stays the one an
  unscoped login checks). Their memberships and refresh tokens move with them. Users without
  any membership (removed members, who could not log in) are deleted.
- ``api_keys.owner_user_id``: the member a key acts for. A key created by a user is owned
  by that user's account in the key's organization; a key created by a key, by that key's
  owner; a key created by nobody (the CLI) is organization-owned (NULL). A key whose owner
  is not a member of its organization (any more) is revoked: it must not outlive its owner.
- ``refresh_tokens.family_id``: each existing token starts its own family.

SQLite: batch mode rebuilds ``users`` by copy, drop and rename. With foreign keys enforced
(the engine's ``PRAGMA foreign_keys=ON``), dropping ``users`` would cascade-delete every
membership and refresh token, so those rows are kept aside in temporary tables and put
back after the rebuild.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:30:00
"""

import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_USER_CHILDREN = ("memberships", "refresh_tokens")

users = sa.table(
    "users",
    sa.column("id"),
    sa.column("org_id"),
    sa.column("email"),
    sa.column("password_hash"),
    sa.column("is_active"),
    sa.column("token_version"),
    sa.column("created_at"),
)
memberships = sa.table(
    "memberships",
    sa.column("id"),
    sa.column("org_id"),
    sa.column("user_id"),
    sa.column("created_at"),
)
api_keys = sa.table(
    "api_keys",
    sa.column("id"),
    sa.column("org_id"),
    sa.column("created_by"),
    sa.column("owner_user_id"),
    sa.column("created_at"),
    sa.column("revoked_at", sa.DateTime(timezone=True)),
)
refresh_tokens = sa.table(
    "refresh_tokens",
    sa.column("id"),
    sa.column("user_id"),
    sa.column("org_id"),
    sa.column("family_id"),
)


def _sqlite() -> bool:
    return bool(op.get_bind().dialect.name == "sqlite")


@contextmanager
def _keeping_user_children() -> Iterator[None]:
    """SQLite: keep the rows that reference ``users`` across a rebuild of ``users``."""
    if not _sqlite():
        yield
        return
    for table in _USER_CHILDREN:
        op.execute(f"CREATE TEMP TABLE _keep_{table} AS SELECT * FROM {table}")
    yield
    for table in _USER_CHILDREN:
        op.execute(f"DELETE FROM {table}")  # whatever the cascade left (none, with FKs on)
        op.execute(f"INSERT INTO {table} SELECT * FROM _keep_{table}")
        op.execute(f"DROP TABLE _keep_{table}")


def _alter_users(apply: Callable[[Any], None]) -> None:
    with (
        _keeping_user_children(),
        op.batch_alter_table("users", recreate="always" if _sqlite() else "auto") as batch,
    ):
        apply(batch)


def _new_user_id() -> str:
    return f"usr_{secrets.token_hex(16)}"


def _split_accounts(conn: sa.Connection) -> dict[tuple[str, str], str]:
    """One account per membership; returns ``(old user id, org id) → account id``."""
    accounts: dict[tuple[str, str], str] = {}
    rows = conn.execute(
        sa.select(
            memberships.c.id, memberships.c.user_id, memberships.c.org_id, memberships.c.created_at
        ).order_by(memberships.c.user_id, memberships.c.created_at, memberships.c.id)
    ).all()
    seen: set[str] = set()
    for membership_id, user_id, org_id, created_at in rows:
        if user_id not in seen:  # the oldest membership keeps the account
            seen.add(user_id)
            conn.execute(users.update().where(users.c.id == user_id).values(org_id=org_id))
            accounts[(user_id, org_id)] = user_id
            continue
        user = conn.execute(sa.select(users).where(users.c.id == user_id)).mappings().one()
        account_id = _new_user_id()
        conn.execute(
            users.insert().values(
                id=account_id,
                org_id=org_id,
                email=user["email"],
                password_hash=user["password_hash"],
                is_active=user["is_active"],
                token_version=user["token_version"],
                created_at=created_at,
            )
        )
        conn.execute(
            memberships.update().where(memberships.c.id == membership_id).values(user_id=account_id)
        )
        conn.execute(
            refresh_tokens.update()
            .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.org_id == org_id)
            .values(user_id=account_id)
        )
        accounts[(user_id, org_id)] = account_id
    orphans = [r[0] for r in conn.execute(sa.select(users.c.id).where(users.c.org_id.is_(None)))]
    for start in range(0, len(orphans), 500):
        chunk = orphans[start : start + 500]
        conn.execute(refresh_tokens.delete().where(refresh_tokens.c.user_id.in_(chunk)))
        conn.execute(users.delete().where(users.c.id.in_(chunk)))
    return accounts


def _assign_key_owners(conn: sa.Connection, accounts: dict[tuple[str, str], str]) -> None:
    members = {(account, org) for (_, org), account in accounts.items()}
    owners: dict[str, str | None] = {}
    now = datetime.now(UTC)
    rows = conn.execute(
        sa.select(
            api_keys.c.id, api_keys.c.org_id, api_keys.c.created_by, api_keys.c.revoked_at
        ).order_by(api_keys.c.created_at, api_keys.c.id)
    ).all()
    for key_id, org_id, created_by, revoked_at in rows:
        owner: str | None = None
        orphaned = False
        if created_by is None:
            pass  # the CLI's: organization-owned
        elif created_by in owners:  # minted with an (older) key: that key's owner
            owner = owners[created_by]
        elif created_by.startswith("key_"):
            orphaned = True  # minted with a key that is not there: tie it to nobody, end it
        elif created_by.startswith("usr_"):
            owner = accounts.get((created_by, org_id), created_by)
        owners[key_id] = owner
        values: dict[str, Any] = {}
        if owner is not None:
            values["owner_user_id"] = owner
            orphaned = (owner, org_id) not in members
        if orphaned and revoked_at is None:
            values["revoked_at"] = now  # its owner is no member here: it must not outlive them
        if values:
            conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(**values))


def upgrade() -> None:
    conn = op.get_bind()

    def org_column_without_global_email(batch: Any) -> None:
        batch.add_column(sa.Column("org_id", sa.String(length=40), nullable=True))
        batch.drop_constraint("uq_users_email", type_="unique")
        batch.create_index(batch.f("ix_users_email"), ["email"], unique=False)

    _alter_users(org_column_without_global_email)
    accounts = _split_accounts(conn)

    def accounts_per_org(batch: Any) -> None:
        batch.alter_column("org_id", existing_type=sa.String(length=40), nullable=False)
        batch.create_foreign_key(
            batch.f("fk_users_org_id_organizations"),
            "organizations",
            ["org_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_unique_constraint("uq_users_org_email", ["org_id", "email"])

    _alter_users(accounts_per_org)

    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("owner_user_id", sa.String(length=40), nullable=True))
        batch.create_index(batch.f("ix_api_keys_owner_user_id"), ["owner_user_id"], unique=False)
    _assign_key_owners(conn, accounts)

    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("family_id", sa.String(length=40), nullable=True))
    conn.execute(refresh_tokens.update().values(family_id=refresh_tokens.c.id))
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.alter_column("family_id", existing_type=sa.String(length=40), nullable=False)
        batch.create_index(batch.f("ix_refresh_tokens_family_id"), ["family_id"], unique=False)


def _merge_accounts(conn: sa.Connection) -> None:
    """Downgrade: one user per e-mail again (the oldest account; the others move into it)."""
    rows = conn.execute(
        sa.select(users.c.id, users.c.email).order_by(users.c.email, users.c.created_at, users.c.id)
    ).all()
    keep: dict[str, str] = {}
    for user_id, email in rows:
        if email not in keep:
            keep[email] = user_id
            continue
        into = keep[email]
        conn.execute(
            memberships.update().where(memberships.c.user_id == user_id).values(user_id=into)
        )
        conn.execute(
            refresh_tokens.update().where(refresh_tokens.c.user_id == user_id).values(user_id=into)
        )
        conn.execute(users.delete().where(users.c.id == user_id))


def downgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_index(batch.f("ix_refresh_tokens_family_id"))
        batch.drop_column("family_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index(batch.f("ix_api_keys_owner_user_id"))
        batch.drop_column("owner_user_id")
    _merge_accounts(conn)

    def one_account_per_email(batch: Any) -> None:
        batch.drop_index(batch.f("ix_users_email"))
        batch.drop_constraint("uq_users_org_email", type_="unique")
        batch.create_unique_constraint(batch.f("uq_users_email"), ["email"])
        batch.drop_constraint(batch.f("fk_users_org_id_organizations"), type_="foreignkey")
        batch.drop_column("org_id")

    _alter_users(one_account_per_email)
