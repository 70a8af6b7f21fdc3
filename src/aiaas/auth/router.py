"""Identity routes: login, me, members, API keys, audit events. Thin: validate, call, map."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response, status
from pydantic import AwareDatetime

from aiaas.api.deps import PageDep, PasswordsDep, SessionDep, SettingsDep, require
from aiaas.api.strict_json import StrictJSONRoute
from aiaas.auth import service as auth_service
from aiaas.auth.models import Membership, Organization
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    ApiKeyTransfer,
    AuditEventRead,
    MemberCreate,
    MemberRead,
    MemberUpdate,
    MeRead,
    OrgRead,
    TokenResponse,
)
from aiaas.db.pagination import Page
from aiaas.errors import BadRequest

router = APIRouter(tags=["identity"], route_class=StrictJSONRoute)


def _member(m: Membership) -> MemberRead:
    return MemberRead(user_id=m.user_id, email=m.user.email, role=m.role, created_at=m.created_at)


@router.post("/auth/token", response_model=TokenResponse)
def issue_token(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    grant_type: Annotated[str, Form(max_length=32)] = "password",
    username: Annotated[str | None, Form(max_length=320)] = None,
    password: Annotated[str | None, Form(max_length=1024)] = None,
    refresh_token: Annotated[str | None, Form(max_length=256)] = None,
    scope: Annotated[str | None, Form(max_length=200, description="org:<slug> to pick one")] = "",
) -> TokenResponse:
    """OAuth2 token endpoint: the password grant, or a refresh_token grant (rotating)."""
    # RFC 6749 §5.1: responses carrying tokens must not be stored by any cache.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    ttl = settings.auth
    key = request.app.state.secret_key
    if grant_type == "refresh_token":
        if not refresh_token:
            raise BadRequest("refresh_token is required for grant_type=refresh_token")
        tokens = auth_service.refresh(
            session,
            key,
            refresh_token,
            access_ttl=ttl.access_token_ttl_s,
            refresh_ttl=ttl.refresh_token_ttl_s,
        )
    elif grant_type == "password":
        if not username or password is None:
            raise BadRequest("username and password are required for grant_type=password")
        tokens = auth_service.password_login(
            session,
            passwords,
            request.app.state.login_throttle,
            key,
            username=username,
            password=password,
            scope=scope,
            client_address=request.client.host if request.client else None,
            access_ttl=ttl.access_token_ttl_s,
            refresh_ttl=ttl.refresh_token_ttl_s,
        )
    else:
        raise BadRequest("grant_type must be 'password' or 'refresh_token'")
    return TokenResponse(
        access_token=tokens.access_token,
        expires_in=tokens.expires_in,
        refresh_token=tokens.refresh_token,
        organization=tokens.org_slug,
    )


@router.get("/me", response_model=MeRead)
def read_me(session: SessionDep, principal: Principal = require(Action.ME_READ)) -> MeRead:
    """Who the credential is: its organization, role and identity."""
    org = session.get(Organization, principal.org_id)
    assert org is not None
    me = MeRead(
        organization=OrgRead.model_validate(org),
        role=principal.role,
        actor_type=principal.actor_type,
        actor_id=principal.actor_id,
    )
    if principal.actor_type == "user":
        member = auth_service.get_member(session, principal, principal.actor_id)
        me.email = member.user.email
    elif principal.actor_type == "api_key":
        me.api_key_name = auth_service.get_current_api_key(session, principal).name
    return me


# -- members --------------------------------------------------------------------------------
@router.get("/members", response_model=Page[MemberRead])
def list_members(
    session: SessionDep, page: PageDep, principal: Principal = require(Action.MEMBER_READ)
) -> Page[MemberRead]:
    """Members of the organization, newest first."""
    result = auth_service.list_members(session, principal, page)
    return Page[MemberRead](
        items=[_member(m) for m in result.items], next_cursor=result.next_cursor
    )


@router.post("/members", response_model=MemberRead, status_code=status.HTTP_201_CREATED)
def create_member(
    body: MemberCreate,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    principal: Principal = require(Action.MEMBER_MANAGE),
) -> MemberRead:
    """Create a user account with an initial password and add it to the organization."""
    membership = auth_service.create_member(
        session,
        principal,
        passwords,
        email=body.email,
        role=body.role,
        password=body.password,
        min_password_length=settings.auth.min_password_length,
    )
    return _member(membership)


@router.patch("/members/{user_id}", response_model=MemberRead)
def update_member(
    user_id: str,
    body: MemberUpdate,
    request: Request,
    session: SessionDep,
    principal: Principal = require(Action.MEMBER_MANAGE),
) -> MemberRead:
    """Change a member's role (their open sessions end; their keys act at most at it)."""
    cache = request.app.state.api_key_cache
    return _member(auth_service.update_member(session, principal, user_id, body.role, cache))


@router.delete("/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(
    user_id: str,
    request: Request,
    session: SessionDep,
    principal: Principal = require(Action.MEMBER_MANAGE),
) -> Response:
    """Remove a member and their account here: their sessions end, their keys are revoked."""
    auth_service.remove_member(session, principal, user_id, request.app.state.api_key_cache)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- API keys -------------------------------------------------------------------------------
@router.get("/api-keys", response_model=Page[ApiKeyRead])
def list_api_keys(
    session: SessionDep, page: PageDep, principal: Principal = require(Action.APIKEY_READ)
) -> Page[ApiKeyRead]:
    """API keys you may manage (never the secrets), with their owners, newest first."""
    result = auth_service.list_api_keys(session, principal, page)
    return Page[ApiKeyRead](
        items=[ApiKeyRead.model_validate(k) for k in result.items], next_cursor=result.next_cursor
    )


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
def create_api_key(
    body: ApiKeyCreate, session: SessionDep, principal: Principal = require(Action.APIKEY_MANAGE)
) -> ApiKeyCreated:
    """Create an API key; the response holds the secret key, shown this once."""
    row, key = auth_service.create_api_key(
        session, principal, name=body.name, role=body.role, expires_at=body.expires_at
    )
    return ApiKeyCreated(**ApiKeyRead.model_validate(row).model_dump(), key=key)


@router.get("/api-keys/{key_id}", response_model=ApiKeyRead)
def get_api_key(
    key_id: str, session: SessionDep, principal: Principal = require(Action.APIKEY_READ)
) -> ApiKeyRead:
    """One API key (without its secret)."""
    return ApiKeyRead.model_validate(auth_service.get_api_key(session, principal, key_id))


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_api_key(
    key_id: str,
    request: Request,
    session: SessionDep,
    principal: Principal = require(Action.APIKEY_MANAGE),
) -> Response:
    """Revoke an API key. It stops working at once here, within the cache TTL elsewhere."""
    auth_service.revoke_api_key(session, principal, key_id, request.app.state.api_key_cache)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/api-keys/{key_id}/transfer", response_model=ApiKeyRead)
def transfer_api_key(
    key_id: str,
    body: ApiKeyTransfer,
    request: Request,
    session: SessionDep,
    principal: Principal = require(Action.APIKEY_MANAGE),
) -> ApiKeyRead:
    """Give an API key to another member, or to the organization (owner_user_id null)."""
    row = auth_service.transfer_api_key(
        session, principal, key_id, body.owner_user_id, request.app.state.api_key_cache
    )
    return ApiKeyRead.model_validate(row)


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
) -> Page[AuditEventRead]:
    """The organization's audit trail, newest first, filterable."""
    result = auth_service.list_audit_events(
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
    return Page[AuditEventRead](
        items=[AuditEventRead.model_validate(e) for e in result.items],
        next_cursor=result.next_cursor,
    )
