"""Identity routes: login, me, members, API keys, audit events. Thin: one service call each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response, status
from pydantic import AwareDatetime

from aiaas.api.deps import (
    ApiKeyCacheDep,
    PageDep,
    PasswordsDep,
    SessionDep,
    SettingsDep,
    StateDep,
    require,
)
from aiaas.api.strict_json import StrictJSONRoute
from aiaas.auth import service as auth_service
from aiaas.auth.models import ApiKey, AuditEvent, Membership
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.auth.schemas import (
    ApiKeyCreate,
    ApiKeyRead,
    ApiKeyTransfer,
    ApiKeyWithSecretRead,
    AuditEventRead,
    MemberCreate,
    MemberRead,
    MemberUpdate,
    MeRead,
    TokenRead,
)
from aiaas.auth.service import Me, NewApiKey, TokenGrant, Tokens
from aiaas.db.pagination import Page

router = APIRouter(tags=["identity"], route_class=StrictJSONRoute)


@router.post("/auth/token", response_model=TokenRead)
def issue_token(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    state: StateDep,
    grant_type: Annotated[str, Form(max_length=32)] = "password",
    username: Annotated[str | None, Form(max_length=320)] = None,
    password: Annotated[str | None, Form(max_length=1024)] = None,
    refresh_token: Annotated[str | None, Form(max_length=256)] = None,
    scope: Annotated[str | None, Form(max_length=200, description="org:<slug> to pick one")] = "",
) -> Tokens:
    """OAuth2 token endpoint: the password grant, or a refresh_token grant (rotating)."""
    # RFC 6749 §5.1: responses carrying tokens must not be stored by any cache.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    client = request.client.host if request.client else None
    grant = TokenGrant(grant_type, username, password, refresh_token, scope, client)
    return auth_service.grant_tokens(
        session, state.passwords, state.login_throttle, state.secret_key, grant, settings.auth
    )


@router.get("/me", response_model=MeRead)
def read_me(session: SessionDep, principal: Principal = require(Action.ME_READ)) -> Me:
    """Who the credential is: its organization, role and identity."""
    return auth_service.whoami(session, principal)


# -- members --------------------------------------------------------------------------------
@router.get("/members", response_model=Page[MemberRead])
def list_members(
    session: SessionDep, page: PageDep, principal: Principal = require(Action.MEMBER_READ)
) -> Page[Membership]:
    """Members of the organization, newest first."""
    return auth_service.list_members(session, principal, page)


@router.post("/members", response_model=MemberRead, status_code=status.HTTP_201_CREATED)
def create_member(
    body: MemberCreate,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    principal: Principal = require(Action.MEMBER_MANAGE),
) -> Membership:
    """Create a user account with an initial password and add it to the organization."""
    return auth_service.create_member(
        session,
        principal,
        passwords,
        email=body.email,
        role=body.role,
        password=body.password,
        min_password_length=settings.auth.min_password_length,
    )


@router.patch("/members/{user_id}", response_model=MemberRead)
def update_member(
    user_id: str,
    body: MemberUpdate,
    session: SessionDep,
    cache: ApiKeyCacheDep,
    principal: Principal = require(Action.MEMBER_MANAGE),
) -> Membership:
    """Change a member's role (their open sessions end; their keys act at most at it)."""
    return auth_service.update_member(session, principal, user_id, body.role, cache)


@router.delete("/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(
    user_id: str,
    session: SessionDep,
    cache: ApiKeyCacheDep,
    principal: Principal = require(Action.MEMBER_MANAGE),
) -> Response:
    """Remove a member and their account here: their sessions end, their keys are revoked."""
    auth_service.remove_member(session, principal, user_id, cache)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- API keys -------------------------------------------------------------------------------
@router.get("/api-keys", response_model=Page[ApiKeyRead])
def list_api_keys(
    session: SessionDep, page: PageDep, principal: Principal = require(Action.APIKEY_READ)
) -> Page[ApiKey]:
    """API keys you may manage (never the secrets), with their owners, newest first."""
    return auth_service.list_api_keys(session, principal, page)


@router.post("/api-keys", response_model=ApiKeyWithSecretRead, status_code=status.HTTP_201_CREATED)
def create_api_key(
    body: ApiKeyCreate, session: SessionDep, principal: Principal = require(Action.APIKEY_MANAGE)
) -> NewApiKey:
    """Create an API key; the response holds the secret key, shown this once."""
    return auth_service.create_api_key(
        session, principal, name=body.name, role=body.role, expires_at=body.expires_at
    )


@router.get("/api-keys/{key_id}", response_model=ApiKeyRead)
def get_api_key(
    key_id: str, session: SessionDep, principal: Principal = require(Action.APIKEY_READ)
) -> ApiKey:
    """One API key (without its secret)."""
    return auth_service.get_api_key(session, principal, key_id)


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_api_key(
    key_id: str,
    session: SessionDep,
    cache: ApiKeyCacheDep,
    principal: Principal = require(Action.APIKEY_MANAGE),
) -> Response:
    """Revoke an API key. It stops working at once here, within the cache TTL elsewhere."""
    auth_service.revoke_api_key(session, principal, key_id, cache)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/api-keys/{key_id}/transfer", response_model=ApiKeyRead)
def transfer_api_key(
    key_id: str,
    body: ApiKeyTransfer,
    session: SessionDep,
    cache: ApiKeyCacheDep,
    principal: Principal = require(Action.APIKEY_MANAGE),
) -> ApiKey:
    """Give an API key to another member, or to the organization (owner_user_id null)."""
    return auth_service.transfer_api_key(session, principal, key_id, body.owner_user_id, cache)


# -- audit ----------------------------------------------------------------------------------
@router.get("/audit-events", response_model=Page[AuditEventRead])
def list_audit_events(
    session: SessionDep,
    page: PageDep,
    action: Annotated[str | None, Query(max_length=200)] = None,
    outcome: Annotated[str | None, Query(pattern="^(success|denied|failure|error)$")] = None,
    actor_id: Annotated[str | None, Query(max_length=40)] = None,
    resource_id: Annotated[str | None, Query(max_length=200)] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    principal: Principal = require(Action.AUDIT_READ),
) -> Page[AuditEvent]:
    """The organization's audit trail, newest first, filterable."""
    return auth_service.list_audit_events(
        session,
        principal,
        page,
        action=action,
        outcome=outcome,
        actor_id=actor_id,
        resource_id=resource_id,
        since=since,
        until=until,
    )
