"""Shared FastAPI dependencies: settings, session, store, principal, permission checks.

``get_principal`` is the only way a route learns who calls; ``require(action)`` wraps it with
the permission matrix, and the route-inventory test checks that every non-public route
depends on ``require``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Annotated, Any

import anyio
from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session, sessionmaker

from aiaas.api.state import AppState, app_state
from aiaas.auth import audit
from aiaas.auth import service as auth_service
from aiaas.auth.cache import ApiKeyCache, LoginThrottle
from aiaas.auth.passwords import Passwords
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.data.context import DataContext
from aiaas.db.pagination import PageParams
from aiaas.errors import Forbidden, Unauthorized
from aiaas.jobs.context import JobsContext
from aiaas.serving.core import Serving
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore


def get_state(request: Request) -> AppState:
    """The app's state; the only function that reads ``request.app.state``."""
    return app_state(request.app)


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


def get_session(state: StateDep) -> Iterator[Session]:
    """One unit of work per request: committed when the route returns, rolled back on error.

    A service that must leave a trace of a failure (revoking a reused refresh token's
    family) sets ``session.info[auth_service.COMMIT_ON_ERROR]``: the work is then committed
    before the error is answered.
    """
    session = state.session_factory()
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


def get_store(state: StateDep) -> ArtifactStore:
    return state.store


def get_passwords(state: StateDep) -> Passwords:
    return state.passwords


def get_api_key_cache(state: StateDep) -> ApiKeyCache:
    return state.api_key_cache


def get_login_throttle(state: StateDep) -> LoginThrottle:
    return state.login_throttle


def get_data(state: StateDep) -> DataContext:
    return state.data


def get_jobs(state: StateDep) -> JobsContext:
    return state.jobs


def get_serving(state: StateDep) -> Serving:
    """The serving caches (endpoints, models), log and metrics; started on first use."""
    state.serving.start()
    return state.serving


def get_session_factory(state: StateDep) -> sessionmaker[Session]:
    """For a route that outlives its dependencies (a stream): it opens short sessions."""
    return state.session_factory


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
ApiKeyCacheDep = Annotated[ApiKeyCache, Depends(get_api_key_cache)]
LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]
DataDep = Annotated[DataContext, Depends(get_data)]
JobsDep = Annotated[JobsContext, Depends(get_jobs)]
ServingDep = Annotated[Serving, Depends(get_serving)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or 401."""
    if not header:
        raise Unauthorized("missing Authorization header (use: Authorization: Bearer <key>)")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > 4096:
        raise Unauthorized("malformed Authorization header (use: Authorization: Bearer <key>)")
    return token


async def principal_of(state: AppState, token: str) -> Principal:
    """Who ``token`` is (policy: :func:`aiaas.auth.service.authenticate`), named as the
    request's actor for the audit. A cached API key is answered on the event loop;
    anything that needs the database runs in a worker thread."""
    principal = auth_service.cached_principal(state.api_key_cache, token)
    if principal is None:
        principal = await anyio.to_thread.run_sync(
            functools.partial(
                auth_service.authenticate,
                state.session_factory,
                token,
                key=state.secret_key,
                cache=state.api_key_cache,
            )
        )
    audit.set_actor(principal.org_id, principal.actor_type, principal.actor_id)
    return principal


async def get_principal(request: Request) -> Principal:
    """Authenticate the bearer credential (:func:`principal_of`).

    The platform middleware authenticates a request with a body before the body is read and
    keeps the principal in the request state; the route's dependency then reuses it.
    """
    already: Principal | None = getattr(request.state, "principal", None)
    if already is not None:
        return already
    token = bearer_token(request.headers.get("authorization"))
    principal = await principal_of(get_state(request), token)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def check_permission(principal: Principal, action: Action) -> Principal:
    """``principal``, if the permission matrix lets its role do ``action``; else 403."""
    if not principal.can(action):
        raise Forbidden(f"role {principal.role.value!r} may not {action.value}")
    return principal


def require(action: Action) -> Any:
    """A dependency that authenticates and checks ``action`` against the permission matrix."""

    async def check(principal: PrincipalDep) -> Principal:
        return check_permission(principal, action)

    check.__aiaas_action__ = action  # type: ignore[attr-defined]
    check.__name__ = f"require_{action.name.lower()}"
    return Depends(check)


def page_params(
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="Opaque cursor from next_cursor.")
    ] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor, key=state.secret_key)


PageDep = Annotated[PageParams, Depends(page_params)]
