"""Audit trail: one append-only event per state-changing or denied request.

The HTTP middleware opens an :class:`AuditContext` per request and writes the event after
the response status is known; services name the resource they acted on with
:func:`set_resource`, and authentication records the actor with :func:`set_actor`. The
context is a mutable object shared through a contextvar, so updates made in a worker
thread (sync routes) reach the middleware.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from aiaas.auth.models import AuditEvent
from aiaas.logging import redact


@dataclass
class AuditContext:
    org_id: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[AuditContext | None] = ContextVar("aiaas_audit", default=None)


def begin() -> tuple[AuditContext, object]:
    ctx = AuditContext()
    return ctx, _current.set(ctx)


def end(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def set_actor(org_id: str | None, actor_type: str, actor_id: str | None) -> None:
    if (ctx := _current.get()) is not None:
        ctx.org_id, ctx.actor_type, ctx.actor_id = org_id, actor_type, actor_id


def set_resource(resource_type: str, resource_id: str | None, **details: Any) -> None:
    """Name what the current request acted on (and non-secret details)."""
    if (ctx := _current.get()) is not None:
        ctx.resource_type, ctx.resource_id = resource_type, resource_id
        ctx.details.update(redact(details))


def outcome_for(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    if status >= 500:
        return "error"
    return "failure"


def record(
    session: Session,
    ctx: AuditContext,
    *,
    action: str,
    status: int,
    request_id: str | None,
    client_ip: str | None,
) -> None:
    session.add(
        AuditEvent(
            org_id=ctx.org_id,
            actor_type=ctx.actor_type,
            actor_id=ctx.actor_id,
            action=action[:200],
            resource_type=ctx.resource_type,
            resource_id=(ctx.resource_id or "")[:200] or None,
            outcome=outcome_for(status),
            status_code=status,
            request_id=request_id,
            client_ip=client_ip,
            details=ctx.details or None,
        )
    )
