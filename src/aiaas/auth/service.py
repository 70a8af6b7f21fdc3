"""Identity and tenancy services: organizations, accounts, members, API keys, sessions, audit.

Functions take a session (and the calling principal where there is one) and only ``flush``;
the caller commits. A resource of another organization is not found (404), never forbidden.

Invariants kept here:

- An account (``User``) belongs to one organization; the same e-mail in two organizations is
  two accounts. Creating one looks at the caller's organization only, so nothing another
  organization holds changes the answer or its cost.
- An API key acts for its owner: resolution joins the owner's current membership, so the key
  of a removed owner is invalid and a key never acts above its owner's current role. A key
  without owner belongs to the organization (a service key) and acts at its own role. A key
  minted with a key belongs to that key's owner.
- A principal sees and manages only the keys whose *standing* role — the owner's current
  role, or a service key's own role — is not above its own; other keys are not found.
- Refresh tokens rotate single-use (a conditional ``UPDATE`` whose row count decides);
  presenting a rotated token again revokes its whole family.
- A change that may remove an owner locks the organization first, so the owner count it
  checks cannot change before it commits.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Select, and_, event, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth.cache import ApiKeyCache, LoginThrottle
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
from aiaas.db import new_id, scoped, utcnow
from aiaas.db.pagination import Page, PageParams, paginate
from aiaas.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from aiaas.settings import AuthSettings

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
#: ``session.info`` flag: commit this unit of work even though the request fails (the
#: request's session dependency honours it). Used where the failure must leave a trace.
COMMIT_ON_ERROR = "aiaas_commit_on_error"


def _lower(a: Role, b: Role) -> Role:
    return a if a.rank <= b.rank else b


def _roles_up_to(role: Role) -> list[str]:
    return [r.value for r in Role if r.rank <= role.rank]


def _lock_org(session: Session, org_id: str) -> None:
    """Serialize this organization's membership changes until the transaction ends.

    PostgreSQL: ``SELECT … FOR UPDATE`` on the organization's row. SQLite has no row locks:
    a no-op ``UPDATE`` takes the database's write lock instead. pysqlite opens the
    transaction at that first write, so no earlier read snapshot exists that could go stale
    (no ``SQLITE_BUSY_SNAPSHOT``); a concurrent writer waits (``busy_timeout``), and every
    read after the lock sees the last committed state.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(Organization)
            .where(Organization.id == org_id)
            .values(slug=Organization.slug)
            .execution_options(synchronize_session=False)
        )
    else:
        session.execute(select(Organization.id).where(Organization.id == org_id).with_for_update())


def _drop_cached(
    session: Session,
    cache: ApiKeyCache | None,
    *,
    key_hashes: Iterable[str] = (),
    owner_id: str | None = None,
) -> None:
    """Drop cached principals now and again after the commit.

    The second pass (and the cache's generation check) stops a lookup that read the old
    state just before the commit from caching it for a whole TTL.
    """
    if cache is None:
        return
    hashes = list(key_hashes)

    def drop(*_: Any) -> None:
        for key_hash in hashes:
            cache.invalidate(key_hash)
        if owner_id is not None:
            cache.invalidate_owner(owner_id)

    drop()
    event.listen(session, "after_commit", drop, once=True)


# -- organizations and accounts -------------------------------------------------------------
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
    session: Session,
    passwords: Passwords,
    org: Organization,
    email: str,
    password: str,
    *,
    min_length: int,
) -> User:
    """Create an account in ``org``. Only an address already used in ``org`` conflicts."""
    email = email.strip().lower()
    check_password_policy(password, min_length)
    taken = select(User.id).where(User.org_id == org.id, User.email == email)
    if session.scalar(taken):
        raise Conflict("a user with this email already exists in this organization")
    user = User(org_id=org.id, email=email, password_hash=passwords.hash(password))
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # created concurrently
        raise Conflict("a user with this email already exists in this organization") from exc
    return user


def add_membership(session: Session, org: Organization, user: User, role: Role) -> Membership:
    if user.org_id != org.id:
        raise ValueError("an account is a member of its own organization only")
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
    owner_user_id: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Mint a key. Without ``owner_user_id`` it is organization-owned (a service key)."""
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
        owner_user_id=owner_user_id,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    session.refresh(row)  # loads the owner (e-mail) for the response
    return row, key


def _manageable_keys(principal: Principal) -> Select[ApiKey]:
    """The caller's organization's keys whose standing role is not above the caller's."""
    standing = func.coalesce(Membership.role, ApiKey.role)
    return (
        scoped(select(ApiKey), principal)
        .outerjoin(
            Membership,
            and_(Membership.user_id == ApiKey.owner_user_id, Membership.org_id == ApiKey.org_id),
        )
        .where(standing.in_(_roles_up_to(principal.role)))
    )


def list_api_keys(session: Session, principal: Principal, params: PageParams) -> Page[ApiKey]:
    return paginate(session, _manageable_keys(principal), params, ApiKey)


def get_api_key(session: Session, principal: Principal, key_id: str) -> ApiKey:
    row = session.scalar(_manageable_keys(principal).where(ApiKey.id == key_id))
    if row is None:
        raise NotFound("api key", key_id)
    return row


def get_current_api_key(session: Session, principal: Principal) -> ApiKey:
    """The key the caller authenticated with (it may see itself whatever its owner's role)."""
    row = session.scalar(scoped(select(ApiKey), principal).where(ApiKey.id == principal.actor_id))
    if row is None or principal.actor_type != "api_key":
        raise NotFound("api key", principal.actor_id)
    return row


@dataclass(frozen=True)
class NewApiKey:
    """A key just minted: its row, and its secret (shown once, never stored). Reads as the
    row otherwise, so ``ApiKeyWithSecretRead`` validates it from attributes."""

    row: ApiKey
    key: str

    def __getattr__(self, name: str) -> Any:
        return getattr(self.row, name)


def create_api_key(
    session: Session,
    principal: Principal,
    *,
    name: str,
    role: Role,
    expires_at: datetime | None,
) -> NewApiKey:
    """Mint a key for the member behind the credential (a service key's keys: service keys)."""
    if role.rank > principal.role.rank:
        raise Forbidden("cannot create a key with a role above your own")
    org = session.get(Organization, principal.org_id)
    assert org is not None
    row, key = issue_api_key(
        session,
        org,
        role=role,
        name=name,
        created_by=principal.actor_id,
        owner_user_id=principal.user_id,
        expires_at=expires_at,
    )
    audit.set_resource("api_key", row.id, name=name, role=role.value, owner=row.owner_user_id)
    return NewApiKey(row, key)


def revoke_api_key(
    session: Session, principal: Principal, key_id: str, cache: ApiKeyCache | None
) -> None:
    row = get_api_key(session, principal, key_id)
    audit.set_resource("api_key", row.id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    _drop_cached(session, cache, key_hashes=[row.key_hash])


def transfer_api_key(
    session: Session,
    principal: Principal,
    key_id: str,
    owner_user_id: str | None,
    cache: ApiKeyCache | None,
) -> ApiKey:
    """Give a key to another member, or (``None``) to the organization.

    Rules: the caller must be able to manage the key and must not own it or be using it (a
    member about to leave could otherwise keep a secret they hold alive: another member
    takes the key over), the key's own role must not be above the caller's, the new owner
    must be a member whose role is not above the caller's, and only an owner may make a
    service key (it outlives every person). The secret is unchanged: whoever holds it keeps
    it, so rotate a key whose holder should lose it.
    """
    row = get_api_key(session, principal, key_id)
    audit.set_resource("api_key", row.id, owner=owner_user_id)
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= utcnow()):
        raise Conflict("a revoked or expired key cannot be transferred")
    if row.id == principal.actor_id or (
        row.owner_user_id is not None and row.owner_user_id == principal.user_id
    ):
        raise Forbidden("nobody transfers their own key: another member takes it over")
    if Role(row.role).rank > principal.role.rank:
        raise Forbidden("cannot transfer a key with a role above your own")
    if owner_user_id is None:
        if principal.role is not Role.owner:
            raise Forbidden("only an owner can give a key to the organization")
    else:
        member = get_member(session, principal, owner_user_id)
        if Role(member.role).rank > principal.role.rank:
            raise Forbidden("cannot give a key to a member whose role is above your own")
    row.owner_user_id = owner_user_id
    session.flush()
    session.refresh(row)
    _drop_cached(session, cache, key_hashes=[row.key_hash])
    return row


# -- authentication -------------------------------------------------------------------------
def resolve_api_key(session: Session, key: str) -> tuple[Principal, datetime | None] | None:
    """Look an API key up by its hash, with its owner's current membership.

    None when unknown, revoked, expired, or owned by someone who is no longer an active
    member. The principal's role is the lower of the key's and the owner's.
    """
    digest = sha256_hex(key)
    found = session.execute(
        select(ApiKey, Organization.slug, Membership.role)
        .join(Organization, Organization.id == ApiKey.org_id)
        .outerjoin(
            Membership,
            and_(Membership.user_id == ApiKey.owner_user_id, Membership.org_id == ApiKey.org_id),
        )
        .where(ApiKey.key_hash == digest)
    ).first()
    if found is None:
        return None
    row, slug, owner_role = found
    now = utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    role = Role(row.role)
    if row.owner_user_id is not None:
        if owner_role is None or row.owner is None or not row.owner.is_active:
            return None
        role = _lower(role, Role(owner_role))
    if row.last_used_at is None or now - row.last_used_at > timedelta(seconds=60):
        row.last_used_at = now  # at most once a minute per key: no write per request
    principal = Principal(
        org_id=row.org_id,
        org_slug=slug,
        role=role,
        actor_type="api_key",
        actor_id=row.id,
        user_id=row.owner_user_id,
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
        .where(
            User.id == claims.user_id,
            User.org_id == claims.org_id,
            Membership.org_id == claims.org_id,
        )
    ).first()
    if found is None:
        return None
    user, role, slug = found
    if not user.is_active or user.token_version != claims.token_version:
        return None
    return Principal(
        org_id=claims.org_id,
        org_slug=slug,
        role=Role(role),
        actor_type="user",
        actor_id=user.id,
        user_id=user.id,
    )


def looks_like_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def cached_principal(cache: ApiKeyCache, token: str) -> Principal | None:
    """The principal of an API key from the cache (no database), or None on a miss.

    The key's own expiry is checked on every hit: a cached key that has expired meanwhile
    is refused at once (401), not looked up again.
    """
    if not looks_like_api_key(token):
        return None
    hit = cache.get(sha256_hex(token))
    if hit is None:
        return None
    principal, expires_at = hit
    if expires_at is not None and expires_at <= utcnow():
        raise Unauthorized("invalid credentials")
    return principal


def authenticate(
    sessions: Callable[[], Session], token: str, *, key: bytes, cache: ApiKeyCache
) -> Principal:
    """Who ``token`` is: an API key (cache, then database) or an access token (JWT, whose
    membership is re-read from the database). Every failure is the same 401.

    Runs its own short transaction, so it can run before the request's unit of work (the
    platform middleware authenticates before a body is read). An API key found in the
    database is cached unless the cache was invalidated while it was being read.
    """
    principal = cached_principal(cache, token)
    if principal is not None:
        return principal
    generation = cache.generation()  # taken before reading: a concurrent invalidation wins
    if not looks_like_api_key(token):
        with sessions() as session, session.begin():
            principal = resolve_access_token(session, key, token)
        if principal is None:
            raise Unauthorized("invalid credentials")
        return principal
    with sessions() as session, session.begin():
        found = resolve_api_key(session, token)
    if found is None:
        raise Unauthorized("invalid credentials")
    principal, expires_at = found
    cache.put(sha256_hex(token), principal, expires_at, generation=generation)  # once committed
    return principal


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int
    org_slug: str
    token_type: str = "bearer"

    @property
    def organization(self) -> str:
        return self.org_slug


def _issue_tokens(
    session: Session,
    key: bytes,
    user: User,
    org: Organization,
    access_ttl: int,
    refresh_ttl: int,
    *,
    family_id: str | None = None,
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
            family_id=family_id or new_id("rtf"),
            expires_at=utcnow() + timedelta(seconds=refresh_ttl),
        )
    )
    session.flush()
    return Tokens(access, refresh, access_ttl, org.slug)


def org_scope(scope: str | None) -> str | None:
    """The organization slug of an OAuth2 ``scope`` (``org:<slug>``), else None.

    A malformed slug is kept (it then matches no organization): it must not fall back to
    the unscoped login.
    """
    for part in (scope or "").split():
        if part.startswith("org:"):
            return part.removeprefix("org:")
    return None


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
    """OAuth2 password grant against exactly one account.

    With ``org_slug``, that organization's account with this e-mail; without, the oldest
    account with this e-mail. Either way one lookup and one password check, so neither the
    answer nor its cost depends on how many organizations use the address. Unknown account
    and wrong password fail alike (and cost alike).
    """
    email = email.strip().lower()
    # A control character cannot be in a stored email (and NUL breaks PostgreSQL text).
    valid = not any(ord(ch) < 32 for ch in email)
    if org_slug is not None:
        valid = valid and bool(SLUG.match(org_slug))
        stmt = (
            select(User)
            .join(Organization, Organization.id == User.org_id)
            .where(Organization.slug == org_slug, User.email == email)
        )
    else:
        stmt = select(User).where(User.email == email).order_by(User.created_at, User.id).limit(1)
    user = session.scalar(stmt) if valid else None
    ok = passwords.verify(user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        raise Unauthorized("invalid credentials")
    found = session.execute(
        select(Membership, Organization)
        .join(Organization, Organization.id == Membership.org_id)
        .where(Membership.user_id == user.id, Membership.org_id == user.org_id)
    ).first()
    if found is None:
        raise Unauthorized("invalid credentials")
    _, org = found
    audit.set_actor(org.id, "user", user.id)
    return _issue_tokens(session, key, user, org, access_ttl, refresh_ttl)


def password_login(
    session: Session,
    passwords: Passwords,
    throttle: LoginThrottle,
    key: bytes,
    *,
    username: str,
    password: str,
    scope: str | None,
    client_address: str | None,
    access_ttl: int,
    refresh_ttl: int,
) -> Tokens:
    """The password grant behind the login throttle (see :class:`LoginThrottle`).

    The attempt is reserved before the password is checked, so concurrent guesses count.
    """
    email = username.strip().lower()
    org_slug = org_scope(scope)
    audit.set_resource("session", None, email=email[:320])
    account = f"{org_slug if org_slug is not None else '*'}/{email}"[:600]
    address = client_address or "unknown"
    if (wait := throttle.reserve(account, address)) is not None:
        raise TooManyRequests("too many failed logins; try again later", retry_after=wait)
    success = False
    try:
        tokens = login(
            session,
            passwords,
            key,
            email=email,
            password=password,
            org_slug=org_slug,
            access_ttl=access_ttl,
            refresh_ttl=refresh_ttl,
        )
        success = True
        return tokens
    finally:
        throttle.release(account, address, success=success)


@dataclass(frozen=True)
class TokenGrant:
    """An OAuth2 token request (RFC 6749 §4.3 password grant, §6 refresh), as posted."""

    grant_type: str
    username: str | None
    password: str | None
    refresh_token: str | None
    scope: str | None
    client_address: str | None


def grant_tokens(
    session: Session,
    passwords: Passwords,
    throttle: LoginThrottle,
    key: bytes,
    grant: TokenGrant,
    settings: AuthSettings,
) -> Tokens:
    """The token endpoint: a password login (throttled) or a refresh-token rotation."""
    ttls = {"access_ttl": settings.access_token_ttl_s, "refresh_ttl": settings.refresh_token_ttl_s}
    if grant.grant_type == "refresh_token":
        if not grant.refresh_token:
            raise BadRequest("refresh_token is required for grant_type=refresh_token")
        return refresh(session, key, grant.refresh_token, **ttls)
    if grant.grant_type == "password":
        if not grant.username or grant.password is None:
            raise BadRequest("username and password are required for grant_type=password")
        return password_login(
            session,
            passwords,
            throttle,
            key,
            username=grant.username,
            password=grant.password,
            scope=grant.scope,
            client_address=grant.client_address,
            **ttls,
        )
    raise BadRequest("grant_type must be 'password' or 'refresh_token'")


def refresh(
    session: Session, key: bytes, token: str, *, access_ttl: int, refresh_ttl: int
) -> Tokens:
    """Rotate a refresh token: exactly one caller wins it, a new pair is issued.

    The rotation is one conditional ``UPDATE``; its row count decides, so concurrent
    requests with one token cannot fork it into several sessions (PostgreSQL: the losers
    wait on the row lock and then match nothing; SQLite: the ``UPDATE`` takes the write
    lock). A token presented after it was rotated or revoked revokes its whole family, and
    that revocation is committed although the request fails.
    """
    digest = sha256_hex(token)
    now = utcnow()
    rotated = cast(
        "CursorResult[Any]",
        session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.token_hash == digest,
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > now,
            )
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        ),
    )
    row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest))
    if rotated.rowcount != 1 or row is None:
        if row is not None and row.revoked_at is not None:
            session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=now)
                .execution_options(synchronize_session=False)
            )
            session.info[COMMIT_ON_ERROR] = True
        raise Unauthorized("invalid credentials")
    user = session.get(User, row.user_id)
    org = session.get(Organization, row.org_id)
    membership = session.scalar(
        select(Membership).where(Membership.user_id == row.user_id, Membership.org_id == row.org_id)
    )
    if user is None or org is None or membership is None or not user.is_active:
        raise Unauthorized("invalid credentials")
    audit.set_actor(org.id, "user", user.id)
    return _issue_tokens(session, key, user, org, access_ttl, refresh_ttl, family_id=row.family_id)


def _revoke_sessions(session: Session, user: User) -> None:
    """Invalidate the user's JWTs (token version) and refresh tokens."""
    user.token_version += 1
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )


# -- members --------------------------------------------------------------------------------
def list_members(session: Session, principal: Principal, params: PageParams) -> Page[Membership]:
    return paginate(session, scoped(select(Membership), principal), params, Membership)


def get_member(session: Session, principal: Principal, user_id: str) -> Membership:
    row = session.scalar(scoped(select(Membership), principal).where(Membership.user_id == user_id))
    if row is None:
        raise NotFound("member", user_id)
    return row


@dataclass(frozen=True)
class Me:
    """Who a credential is (``GET /me``)."""

    organization: Organization
    role: Role
    actor_type: str
    actor_id: str
    email: str | None = None
    api_key_name: str | None = None


def whoami(session: Session, principal: Principal) -> Me:
    org = session.get(Organization, principal.org_id)
    if org is None:  # deleted after authentication: as if the credential were unknown
        raise NotFound("organization", principal.org_id)
    email = key_name = None
    if principal.actor_type == "user":
        email = get_member(session, principal, principal.actor_id).user.email
    elif principal.actor_type == "api_key":
        key_name = get_current_api_key(session, principal).name
    return Me(org, principal.role, principal.actor_type, principal.actor_id, email, key_name)


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
    """Create an account in the caller's organization and make it a member."""
    _check_role_change(principal, None, role)
    org = session.get(Organization, principal.org_id)
    assert org is not None
    user = create_user(session, passwords, org, email, password, min_length=min_password_length)
    membership = add_membership(session, org, user, role)
    audit.set_resource("member", user.id, role=role.value)
    return membership


def update_member(
    session: Session,
    principal: Principal,
    user_id: str,
    role: Role,
    cache: ApiKeyCache | None = None,
) -> Membership:
    """Change a member's role: their sessions end, their keys act at most at the new role."""
    _lock_org(session, principal.org_id)
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
    _drop_cached(session, cache, owner_id=user_id)
    return membership


def remove_member(
    session: Session, principal: Principal, user_id: str, cache: ApiKeyCache | None = None
) -> None:
    """Remove a member and delete their account; the keys they own are revoked with it."""
    _lock_org(session, principal.org_id)
    membership = get_member(session, principal, user_id)
    audit.set_resource("member", user_id)
    old = Role(membership.role)
    _check_role_change(principal, old, None)
    if old is Role.owner and _owner_count(session, principal.org_id) <= 1:
        raise Conflict("an organization keeps at least one owner")
    keys = list(
        session.scalars(
            select(ApiKey).where(
                ApiKey.org_id == principal.org_id,
                ApiKey.owner_user_id == user_id,
                ApiKey.revoked_at.is_(None),
            )
        )
    )
    now = utcnow()
    for row in keys:
        row.revoked_at = now
    user = membership.user
    session.delete(membership)
    session.delete(user)  # the account is this organization's only; its refresh tokens go too
    session.flush()
    _drop_cached(session, cache, key_hashes=[k.key_hash for k in keys], owner_id=user_id)


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
    user = create_user(session, passwords, org, "admin@localhost", password, min_length=12)
    add_membership(session, org, user, Role.owner)
    return Bootstrap(org.slug, user.email, password)
