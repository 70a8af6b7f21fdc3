"""Shared FastAPI dependencies: settings, session, store, principal, permission checks.

``get_principal`` is the only way a route learns who calls; ``require(action)`` wraps it with
the permission matrix, and the route-inventory test checks that every non-public route
depends on ``require``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import anyio
from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth import service as auth_service
from aiaas.auth.cache import ApiKeyCache
from aiaas.auth.passwords import Passwords
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.auth.tokens import sha256_hex
from aiaas.db.base import utcnow
from aiaas.db.pagination import PageParams
from aiaas.errors import Forbidden, Unauthorized
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request: committed when the route returns, rolled back on error.

    A service that must leave a trace of a failure (revoking a reused refresh token's
    family) sets ``session.info[auth_service.COMMIT_ON_ERROR]``: the work is then committed
    before the error is answered.
    """
    session: Session = request.app.state.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        if session.info.pop(auth_service.COMMIT_ON_ERROR, False):
            try:
                session.commit()
            except Exception:
                session.rollback()
        else:
            session.rollback()
        raise
    finally:
        session.close()


def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


def get_passwords(request: Request) -> Passwords:
    passwords: Passwords = request.app.state.passwords
    return passwords


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
PasswordsDep = Annotated[Passwords, Depends(get_passwords)]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing Authorization header (use: Authorization: Bearer <key>)")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > 4096:
        raise Unauthorized("malformed Authorization header (use: Authorization: Bearer <key>)")
    return token


def _lookup(request: Request, token: str) -> Principal | None:
    state = request.app.state
    cache: ApiKeyCache = state.api_key_cache
    generation = cache.generation()  # taken before reading: a concurrent invalidation wins
    with state.session_factory() as session, session.begin():
        if auth_service.looks_like_api_key(token):
            found = auth_service.resolve_api_key(session, token)
            if found is None:
                return None
            principal, expires_at = found
        else:
            return auth_service.resolve_access_token(session, state.secret_key, token)
    cache.put(sha256_hex(token), principal, expires_at, generation=generation)
    return principal


async def get_principal(request: Request) -> Principal:
    """Authenticate the bearer credential. Every failure is the same 401.

    The platform middleware authenticates a request with a body before the body is read and
    keeps the principal in the request state; the route's dependency then reuses it.
    """
    already: Principal | None = getattr(request.state, "principal", None)
    if already is not None:
        return already
    token = _bearer(request)
    principal: Principal | None = None
    if auth_service.looks_like_api_key(token):
        cache: ApiKeyCache = request.app.state.api_key_cache
        hit = cache.get(sha256_hex(token))
        if hit is not None:
            cached, expires_at = hit
            if expires_at is None or expires_at > utcnow():
                principal = cached
            else:
                raise Unauthorized("invalid credentials")
    if principal is None:
        principal = await anyio.to_thread.run_sync(_lookup, request, token)
    if principal is None:
        raise Unauthorized("invalid credentials")
    audit.set_actor(principal.org_id, principal.actor_type, principal.actor_id)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(action: Action) -> Any:
    """A dependency that authenticates and checks ``action`` against the permission matrix."""

    async def check(principal: PrincipalDep) -> Principal:
        if not principal.can(action):
            raise Forbidden(f"role {principal.role.value!r} may not {action.value}")
        return principal

    check.__aiaas_action__ = action  # type: ignore[attr-defined]
    check.__name__ = f"require_{action.name.lower()}"
    return Depends(check)


def page_params(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="Opaque cursor from next_cursor.")
    ] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor, key=request.app.state.secret_key)


PageDep = Annotated[PageParams, Depends(page_params)]
