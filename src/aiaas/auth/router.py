"""Identity routes: login, me, members, API keys, audit events. Thin: validate, call, map."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response, status
from pydantic import AwareDatetime

from aiaas.api.deps import PageDep, PasswordsDep, SessionDep, SettingsDep, require
from aiaas.auth import audit
from aiaas.auth import service as auth_service
from aiaas.auth.models import Membership, Organization
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    AuditEventRead,
    MemberCreate,
    MemberRead,
    MemberUpdate,
    MeRead,
    OrgRead,
    TokenResponse,
)
from aiaas.db.pagination import Page
from aiaas.errors import BadRequest, TooManyRequests

router = APIRouter(tags=["identity"])


def _member(m: Membership) -> MemberRead:
    return MemberRead(user_id=m.user_id, email=m.user.email, role=m.role, created_at=m.created_at)


@router.post("/auth/token", response_model=TokenResponse)
def issue_token(
    request: Request,
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
        throttle = request.app.state.login_throttle
        client = request.client.host if request.client else "unknown"
        keys = (f"user:{username.strip().lower()}", f"ip:{client}")
        audit.set_resource("session", None, email=username.strip().lower()[:320])
        if (wait := throttle.retry_after(*keys)) is not None:
            raise TooManyRequests("too many failed logins; try again later", retry_after=wait)
        org_slug = None
        for part in (scope or "").split():
            if part.startswith("org:"):
                org_slug = part.removeprefix("org:")
        try:
            tokens = auth_service.login(
                session,
                passwords,
                key,
                email=username,
                password=password,
                org_slug=org_slug,
                access_ttl=ttl.access_token_ttl_s,
                refresh_ttl=ttl.refresh_token_ttl_s,
            )
        except Exception:
            throttle.fail(*keys)
            raise
        throttle.reset(keys[0])
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
        me.api_key_name = auth_service.get_api_key(session, principal, principal.actor_id).name
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
    session: SessionDep,
    principal: Principal = require(Action.MEMBER_MANAGE),
) -> MemberRead:
    """Change a member's role (their open sessions end)."""
    return _member(auth_service.update_member(session, principal, user_id, body.role))


@router.delete("/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(
    user_id: str, session: SessionDep, principal: Principal = require(Action.MEMBER_MANAGE)
) -> Response:
    """Remove a member from the organization (their open sessions end)."""
    auth_service.remove_member(session, principal, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- API keys -------------------------------------------------------------------------------
@router.get("/api-keys", response_model=Page[ApiKeyRead])
def list_api_keys(
    session: SessionDep, page: PageDep, principal: Principal = require(Action.APIKEY_READ)
) -> Page[ApiKeyRead]:
    """API keys of the organization (never the secrets), newest first."""
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
