"""Migration 0003 keeps existing identities, sessions and keys, on SQLite and PostgreSQL.

A user with memberships in several organizations becomes one account per organization
(same e-mail and password); API keys get the owner that minted them; refresh tokens start
one family each. Downgrading merges the accounts back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import aiaas.db.models  # noqa: F401
from aiaas.auth import service as auth_service
from aiaas.auth.passwords import Passwords
from aiaas.db import dispose_all, get_engine, get_session_factory
from aiaas.db.base import Base
from aiaas.db.migrate import current_revision, downgrade, upgrade
from tests.conftest import create_pg_database, drop_pg_database, postgres_admin_url

PASSWORDS = Passwords(1, 64, 1)
SECRET = b"k" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)
AUTH_TABLES = ("organizations", "users", "memberships", "api_keys", "refresh_tokens")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        dispose_all()
        return
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL not reachable (set AIAAS_TEST_POSTGRES_URL); SQLite still ran")
    url = create_pg_database(admin)
    yield url
    drop_pg_database(admin, url)


def _t(minutes, sqlite):
    value = T0 + timedelta(minutes=minutes)
    return value.replace(tzinfo=None) if sqlite else value


def _table(name, *columns):
    return sa.table(name, *(sa.column(c) for c in columns))


ORGS = _table("organizations", "id", "slug", "name", "created_at")
USERS = _table("users", "id", "email", "password_hash", "is_active", "token_version", "created_at")
MEMBERSHIPS = _table("memberships", "id", "org_id", "user_id", "role", "created_at")
KEYS = _table(
    "api_keys", "id", "org_id", "name", "role", "prefix", "key_hash", "created_by", "created_at"
)
REFRESH = _table(
    "refresh_tokens", "id", "org_id", "user_id", "token_hash", "created_at", "expires_at"
)


def _seed(conn, sqlite):
    hashes = {"ann": PASSWORDS.hash("ann's long password"), "bob": PASSWORDS.hash("bob pw 12345")}
    conn.execute(
        sa.insert(ORGS),
        [
            {"id": f"org_{s}", "slug": s, "name": s, "created_at": _t(i, sqlite)}
            for i, s in enumerate(("a", "b", "c"))
        ],
    )
    conn.execute(
        sa.insert(USERS),
        [
            {
                "id": f"usr_{name}",
                "email": f"{name}@example.com",
                "password_hash": hashes.get(name),
                "is_active": True,
                "token_version": 3,
                "created_at": _t(10 + i, sqlite),
            }
            for i, name in enumerate(("ann", "bob", "ghost"))
        ],
    )
    for i, (mid, org, user, role) in enumerate(
        [
            ("mem_1", "org_a", "usr_ann", "owner"),
            ("mem_2", "org_b", "usr_ann", "developer"),
            ("mem_3", "org_c", "usr_ann", "viewer"),
            ("mem_4", "org_a", "usr_bob", "admin"),
        ]
    ):
        conn.execute(
            sa.insert(MEMBERSHIPS).values(
                id=mid, org_id=org, user_id=user, role=role, created_at=_t(20 + i, sqlite)
            )
        )
    keys = [
        ("key_1", "org_a", "admin", "usr_ann"),  # minted by ann in A
        ("key_2", "org_b", "developer", "usr_ann"),  # minted by ann in B
        ("key_3", "org_a", "viewer", "key_1"),  # minted by key_1: ann's
        ("key_4", "org_a", "admin", None),  # the CLI's: organization-owned
        ("key_5", "org_a", "admin", "usr_ghost"),  # minted by a since removed member
        ("key_6", "org_b", "admin", "usr_bob"),  # bob is no member of B (any more)
        ("key_7", "org_b", "viewer", "key_6"),  # minted by a key of a non-member
    ]
    for i, (kid, org, role, by) in enumerate(keys):
        conn.execute(
            sa.insert(KEYS).values(
                id=kid,
                org_id=org,
                name=kid,
                role=role,
                prefix="aiaas_x",
                key_hash=kid * 8,
                created_by=by,
                created_at=_t(30 + i, sqlite),
            )
        )
    for i, (rid, org, user) in enumerate(
        [
            ("rft_a", "org_a", "usr_ann"),
            ("rft_b", "org_b", "usr_ann"),
            ("rft_g", "org_a", "usr_ghost"),
        ]
    ):
        conn.execute(
            sa.insert(REFRESH).values(
                id=rid,
                org_id=org,
                user_id=user,
                token_hash=rid * 10,
                created_at=_t(40 + i, sqlite),
                expires_at=_t(10**6, sqlite),
            )
        )


def _rows(conn, sql):
    return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_upgrade_splits_accounts_assigns_owners_and_downgrade_merges(database_url):
    sqlite = database_url.startswith("sqlite")
    upgrade(database_url, "0002")
    engine = get_engine(database_url)
    with engine.begin() as conn:
        _seed(conn, sqlite)
    upgrade(database_url, "0003")
    assert current_revision(database_url) == "0003"

    with engine.connect() as conn:
        users = _rows(conn, "SELECT id, org_id, email, password_hash, token_version FROM users")
        by_org = {(org, email): (uid, pw, ver) for uid, org, email, pw, ver in users}
        assert len(users) == 4  # ann ×3 (A keeps the id), bob; the ghost had no membership
        ann_a, ann_b, ann_c = (
            by_org[(o, "ann@example.com")][0] for o in ("org_a", "org_b", "org_c")
        )
        assert ann_a == "usr_ann"
        assert ann_b.startswith("usr_")
        assert ann_c.startswith("usr_")
        assert ann_b != ann_c
        assert by_org[("org_a", "bob@example.com")][0] == "usr_bob"
        assert len({pw for _, pw, _ in by_org.values() if pw}) == 2  # hashes copied, not made
        assert by_org[("org_b", "ann@example.com")][1] == by_org[("org_a", "ann@example.com")][1]
        memberships = dict(_rows(conn, "SELECT id, user_id FROM memberships"))
        assert memberships == {"mem_1": ann_a, "mem_2": ann_b, "mem_3": ann_c, "mem_4": "usr_bob"}
        refresh: dict[Any, Any] = {
            rid: (uid, fam)
            for rid, uid, fam in _rows(conn, "SELECT id, user_id, family_id FROM refresh_tokens")
        }
        assert refresh == {"rft_a": (ann_a, "rft_a"), "rft_b": (ann_b, "rft_b")}
        keys = {
            kid: (owner, revoked is not None)
            for kid, owner, revoked in _rows(
                conn, "SELECT id, owner_user_id, revoked_at FROM api_keys"
            )
        }
        assert keys == {
            "key_1": (ann_a, False),
            "key_2": (ann_b, False),
            "key_3": (ann_a, False),
            "key_4": (None, False),
            "key_5": ("usr_ghost", True),  # its owner is gone: revoked
            "key_6": ("usr_bob", True),  # its owner is no member of B: revoked
            "key_7": ("usr_bob", True),
        }
        # The auth tables match the models (other domains' later revisions are not applied).
        auth = sa.MetaData(naming_convention=Base.metadata.naming_convention)
        for name in AUTH_TABLES:
            Base.metadata.tables[name].to_metadata(auth)
        only_auth = {
            "compare_type": True,
            "include_name": lambda name, kind, _parent: kind != "table" or name in AUTH_TABLES,
        }
        ctx = MigrationContext.configure(conn, opts=only_auth)
        assert compare_metadata(ctx, auth) == []

    # The split accounts log in with the old password, each into its own organization.
    factory = get_session_factory(database_url)
    for slug in ("a", "b", None):
        with factory() as session, session.begin():
            tokens = auth_service.login(
                session,
                PASSWORDS,
                SECRET,
                email="ann@example.com",
                password="ann's long password",
                org_slug=slug,
                access_ttl=60,
                refresh_ttl=60,
            )
            assert tokens.org_slug == (slug or "a")
    # E-mail is unique per organization only.
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (id, org_id, email, is_active, token_version, created_at)"
                " VALUES ('usr_dup', 'org_a', 'bob@example.com', true, 0, :t)"
            ),
            {"t": _t(99, sqlite)},
        )

    downgrade(database_url, "0002")
    with engine.connect() as conn:
        users = _rows(conn, "SELECT id, email FROM users ORDER BY id")
        assert users == [("usr_ann", "ann@example.com"), ("usr_bob", "bob@example.com")]
        memberships = dict(_rows(conn, "SELECT id, user_id FROM memberships"))
        assert memberships == {
            "mem_1": "usr_ann",
            "mem_2": "usr_ann",
            "mem_3": "usr_ann",
            "mem_4": "usr_bob",
        }
        refresh = dict(_rows(conn, "SELECT id, user_id FROM refresh_tokens"))
        assert {"rft_a", "rft_b"} <= set(refresh)  # and the three the logins above issued
        assert set(refresh.values()) == {"usr_ann"}
        assert len(_rows(conn, "SELECT id FROM api_keys")) == 7
    upgrade(database_url, "0003")
    with engine.connect() as conn:
        assert len(_rows(conn, "SELECT id FROM users")) == 4
