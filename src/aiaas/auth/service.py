"""Identity and tenancy services: organizations, users, members, API keys, sessions, audit.

Functions take a session (and the calling principal where there is one) and only ``flush``;
the caller commits. A resource of another organization is not found (404), never forbidden.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth.cache import ApiKeyCache
from aiaas.auth.models import ApiKey, AuditEvent, Membership, Organization, RefreshToken, User
from aiaas.auth.passwords import Passwords
from aiaas.auth.permissions import Role
from aiaas.auth.principal import Principal
from aiaas.auth.tokens import (
    API_KEY_PREFIX,
    decode_access_token,
    issue_access_token,
    new_api_key,
    new_refresh_token,
    sha256_hex,
)
from aiaas.db import scoped, utcnow
from aiaas.db.pagination import Page, PageParams, paginate
from aiaas.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


# -- organizations and users ----------------------------------------------------------------
def create_org(session: Session, slug: str, name: str | None = None) -> Organization:
    if not SLUG.match(slug):
        raise InvalidInput("slug must be 1-63 lowercase letters, digits or '-', not at the ends")
    if session.scalar(select(Organization.id).where(Organization.slug == slug)):
        raise Conflict(f"organization {slug!r} already exists")
    org = Organization(slug=slug, name=name or slug)
    session.add(org)
    session.flush()
    return org


def get_org_by_slug(session: Session, slug: str) -> Organization:
    org = session.scalar(select(Organization).where(Organization.slug == slug))
    if org is None:
        raise NotFound("organization", slug)
    return org


def check_password_policy(password: str, min_length: int) -> None:
    if len(password) < min_length:
        raise InvalidInput(f"password must be at least {min_length} characters")
    if password.strip() == "" or len(set(password)) < 4:
        raise InvalidInput("password is too simple")


def create_user(
    session: Session, passwords: Passwords, email: str, password: str, *, min_length: int
) -> User:
    email = email.strip().lower()
    check_password_policy(password, min_length)
    if session.scalar(select(User.id).where(User.email == email)):
        raise Conflict("a user with this email already exists")
    user = User(email=email, password_hash=passwords.hash(password))
    session.add(user)
    session.flush()
    return user


def add_membership(session: Session, org: Organization, user: User, role: Role) -> Membership:
    membership = Membership(org_id=org.id, user_id=user.id, role=role.value)
    session.add(membership)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict("user is already a member of this organization") from exc
    return membership


# -- API keys -------------------------------------------------------------------------------
def issue_api_key(
    session: Session,
    org: Organization,
    *,
    role: Role,
    name: str,
    created_by: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidInput("expires_at needs a timezone (use UTC, e.g. ...Z)")
        if expires_at <= utcnow():
            raise InvalidInput("expires_at must be in the future")
    key, prefix, digest = new_api_key()
    row = ApiKey(
        org_id=org.id,
        name=name,
        role=role.value,
        prefix=prefix,
        key_hash=digest,
        created_by=created_by,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row, key


def list_api_keys(session: Session, principal: Principal, params: PageParams) -> Page[ApiKey]:
    return paginate(session, scoped(select(ApiKey), principal), params, ApiKey)


def get_api_key(session: Session, principal: Principal, key_id: str) -> ApiKey:
    row = session.scalar(scoped(select(ApiKey), principal).where(ApiKey.id == key_id))
    if row is None:
        raise NotFound("api key", key_id)
    return row


def create_api_key(
    session: Session,
    principal: Principal,
    *,
    name: str,
    role: Role,
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    if role.rank > principal.role.rank:
        raise Forbidden("cannot create a key with a role above your own")
    org = session.get(Organization, principal.org_id)
    assert org is not None
    row, key = issue_api_key(
        session, org, role=role, name=name, created_by=principal.actor_id, expires_at=expires_at
    )
    audit.set_resource("api_key", row.id, name=name, role=role.value)
    return row, key


def revoke_api_key(
    session: Session, principal: Principal, key_id: str, cache: ApiKeyCache | None
) -> None:
    row = get_api_key(session, principal, key_id)
    audit.set_resource("api_key", row.id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    if cache is not None:
        cache.invalidate(row.key_hash)


# -- authentication -------------------------------------------------------------------------
def resolve_api_key(session: Session, key: str) -> tuple[Principal, datetime | None] | None:
    """Look an API key up by its hash. None when unknown, revoked or expired."""
    digest = sha256_hex(key)
    found = session.execute(
        select(ApiKey, Organization.slug)
        .join(Organization, Organization.id == ApiKey.org_id)
        .where(ApiKey.key_hash == digest)
    ).first()
    if found is None:
        return None
    row, slug = found
    now = utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if row.last_used_at is None or now - row.last_used_at > timedelta(seconds=60):
        row.last_used_at = now  # at most once a minute per key: no write per request
    principal = Principal(
        org_id=row.org_id,
        org_slug=slug,
        role=Role(row.role),
        actor_type="api_key",
        actor_id=row.id,
    )
    return principal, row.expires_at


def resolve_access_token(session: Session, key: bytes, token: str) -> Principal | None:
    claims = decode_access_token(key, token)
    if claims is None:
        return None
    found = session.execute(
        select(User, Membership.role, Organization.slug)
        .join(Membership, Membership.user_id == User.id)
        .join(Organization, Organization.id == Membership.org_id)
        .where(User.id == claims.user_id, Membership.org_id == claims.org_id)
    ).first()
    if found is None:
        return None
    user, role, slug = found
    if not user.is_active or user.token_version != claims.token_version:
        return None
    return Principal(
        org_id=claims.org_id, org_slug=slug, role=Role(role), actor_type="user", actor_id=user.id
    )


def looks_like_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int
    org_slug: str


def _issue_tokens(
    session: Session, key: bytes, user: User, org: Organization, access_ttl: int, refresh_ttl: int
) -> Tokens:
    access = issue_access_token(
        key, user_id=user.id, org_id=org.id, token_version=user.token_version, ttl_s=access_ttl
    )
    refresh, digest = new_refresh_token()
    session.add(
        RefreshToken(
            org_id=org.id,
            user_id=user.id,
            token_hash=digest,
            expires_at=utcnow() + timedelta(seconds=refresh_ttl),
        )
    )
    session.flush()
    return Tokens(access, refresh, access_ttl, org.slug)


def login(
    session: Session,
    passwords: Passwords,
    key: bytes,
    *,
    email: str,
    password: str,
    org_slug: str | None,
    access_ttl: int,
    refresh_ttl: int,
) -> Tokens:
    """OAuth2 password grant. Unknown user and wrong password fail alike (and cost alike)."""
    email = email.strip().lower()
    # A control character cannot be in a stored email (and NUL breaks PostgreSQL text).
    valid = not any(ord(ch) < 32 for ch in email)
    user = session.scalar(select(User).where(User.email == email)) if valid else None
    ok = passwords.verify(user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        raise Unauthorized("invalid credentials")
    stmt = (
        select(Membership, Organization)
        .join(Organization, Organization.id == Membership.org_id)
        .where(Membership.user_id == user.id)
        .order_by(Membership.created_at)
    )
    if org_slug:
        stmt = stmt.where(Organization.slug == org_slug)
    found = session.execute(stmt).first()
    if found is None:
        raise Unauthorized("invalid credentials")
    _, org = found
    audit.set_actor(org.id, "user", user.id)
    return _issue_tokens(session, key, user, org, access_ttl, refresh_ttl)


def refresh(
    session: Session, key: bytes, token: str, *, access_ttl: int, refresh_ttl: int
) -> Tokens:
    """Rotate a refresh token: the old one stops working, a new pair is issued."""
    row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == sha256_hex(token)))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized("invalid credentials")
    row.revoked_at = now
    user = session.get(User, row.user_id)
    org = session.get(Organization, row.org_id)
    membership = session.scalar(
        select(Membership).where(Membership.user_id == row.user_id, Membership.org_id == row.org_id)
    )
    if user is None or org is None or membership is None or not user.is_active:
        raise Unauthorized("invalid credentials")
    audit.set_actor(org.id, "user", user.id)
    return _issue_tokens(session, key, user, org, access_ttl, refresh_ttl)


def _revoke_sessions(session: Session, user: User) -> None:
    """Invalidate the user's JWTs (token version) and refresh tokens."""
    user.token_version += 1
    for token in session.scalars(
        select(RefreshToken).where(
            RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None)
        )
    ):
        token.revoked_at = utcnow()


# -- members --------------------------------------------------------------------------------
def list_members(session: Session, principal: Principal, params: PageParams) -> Page[Membership]:
    return paginate(session, scoped(select(Membership), principal), params, Membership)


def get_member(session: Session, principal: Principal, user_id: str) -> Membership:
    row = session.scalar(scoped(select(Membership), principal).where(Membership.user_id == user_id))
    if row is None:
        raise NotFound("member", user_id)
    return row


def _check_role_change(principal: Principal, old: Role | None, new: Role | None) -> None:
    touches_owner = Role.owner in (old, new)
    if touches_owner and principal.role is not Role.owner:
        raise Forbidden("only an owner can grant, change or remove the owner role")
    if new is not None and new.rank > principal.role.rank:
        raise Forbidden("cannot grant a role above your own")


def _owner_count(session: Session, org_id: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.org_id == org_id, Membership.role == Role.owner.value)
        )
        or 0
    )


def create_member(
    session: Session,
    principal: Principal,
    passwords: Passwords,
    *,
    email: str,
    role: Role,
    password: str,
    min_password_length: int,
) -> Membership:
    _check_role_change(principal, None, role)
    org = session.get(Organization, principal.org_id)
    assert org is not None
    user = create_user(session, passwords, email, password, min_length=min_password_length)
    membership = add_membership(session, org, user, role)
    audit.set_resource("member", user.id, role=role.value)
    return membership


def update_member(session: Session, principal: Principal, user_id: str, role: Role) -> Membership:
    membership = get_member(session, principal, user_id)
    audit.set_resource("member", user_id, role=role.value)
    old = Role(membership.role)
    if old is role:
        return membership
    _check_role_change(principal, old, role)
    if old is Role.owner and _owner_count(session, principal.org_id) <= 1:
        raise Conflict("an organization keeps at least one owner")
    membership.role = role.value
    _revoke_sessions(session, membership.user)
    session.flush()
    return membership


def remove_member(session: Session, principal: Principal, user_id: str) -> None:
    membership = get_member(session, principal, user_id)
    audit.set_resource("member", user_id)
    old = Role(membership.role)
    _check_role_change(principal, old, None)
    if old is Role.owner and _owner_count(session, principal.org_id) <= 1:
        raise Conflict("an organization keeps at least one owner")
    _revoke_sessions(session, membership.user)
    session.delete(membership)
    session.flush()


# -- audit ----------------------------------------------------------------------------------
def list_audit_events(
    session: Session,
    principal: Principal,
    params: PageParams,
    *,
    action: str | None = None,
    outcome: str | None = None,
    actor_id: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditEvent]:
    stmt = scoped(select(AuditEvent), principal)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if outcome:
        stmt = stmt.where(AuditEvent.outcome == outcome)
    if actor_id:
        stmt = stmt.where(AuditEvent.actor_id == actor_id)
    if resource_id:
        stmt = stmt.where(AuditEvent.resource_id == resource_id)
    if since:
        stmt = stmt.where(AuditEvent.created_at >= since)
    if until:
        stmt = stmt.where(AuditEvent.created_at < until)
    return paginate(session, stmt, params, AuditEvent)


# -- first start ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Bootstrap:
    org_slug: str
    email: str
    password: str


def bootstrap_if_empty(session: Session, passwords: Passwords) -> Bootstrap | None:
    """On an empty database, create an owner account with a generated password (once)."""
    if session.scalar(select(func.count()).select_from(Organization)):
        return None
    org = create_org(session, "default", "Default organization")
    password = secrets.token_urlsafe(18)
    user = create_user(session, passwords, "admin@localhost", password, min_length=12)
    add_membership(session, org, user, Role.owner)
    return Bootstrap(org.slug, user.email, password)
