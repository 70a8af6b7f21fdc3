"""The platform middleware: request id, body-size limit, metrics, access log and audit.

One pure-ASGI layer (no per-request task or stream wrapping) so the hot path pays little:

- ``X-Request-ID``: taken from the client when it is short and plain, else generated;
  returned on every response and bound into the log context.
- Body limit: ``Content-Length`` above the limit is refused before the app runs; bodies
  without one are counted as they stream and cut off with 413 when they cross the limit.
  Multipart and octet-stream bodies (uploads) have their own, larger limit.
- Metrics by route template, method and status; one access-log line per request.
- Audit: every state-changing request, and every denied one, leaves an audit event.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiaas.api.problems import problem_body
from aiaas.auth import audit
from aiaas.monitoring.metrics import HttpMetrics

log = structlog.get_logger("aiaas.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UPLOAD_TYPES = (b"multipart/form-data", b"application/octet-stream")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


def route_template(scope: Scope, templates: dict[int, str]) -> str:
    route = scope.get("route")
    if route is None:
        return "<unmatched>"
    found = templates.get(id(route))
    if found is not None:
        return found
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


class PlatformMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        metrics: HttpMetrics,
        session_factory: Callable[[], sessionmaker[Session]],
        templates: dict[int, str],
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes
        self.metrics = metrics
        self.session_factory = session_factory
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        method: str = scope["method"]
        ctx, token = audit.begin()
        status = 500
        response_started = False

        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        limit = self.max_upload if content_type in _UPLOAD_TYPES else self.max_body
        rid_header = (b"x-request-id", request_id.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
                # NUL cannot be stored or compared in PostgreSQL text: refuse it at the edge.
                status = 400
                await self._send_problem(send, 400, request_id, limit, rid_header, "NUL in URL")
                return
            declared = headers.get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                status = 413 if declared.isdigit() else 400
                await self._send_problem(
                    send, status, request_id, limit, rid_header, "invalid Content-Length"
                )
                return
            received = 0

            async def receive_wrapper() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit)
                return message

            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except BodyTooLarge:
                if not response_started:
                    status = 413
                    await self._send_problem(send, 413, request_id, limit, rid_header)
            except Exception:
                log.exception("unhandled_error", path=scope.get("path"))
                if not response_started:
                    status = 500
                    await self._send_problem(send, 500, request_id, limit, rid_header)
                else:
                    raise
        finally:
            elapsed = time.perf_counter() - started
            template = route_template(scope, self.templates)
            self.metrics.observe(method, template, status, elapsed)
            log.info(
                "request",
                method=method,
                route=template,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                org_id=ctx.org_id,
            )
            if method in _MUTATING or status in (401, 403):
                await self._audit(scope, ctx, method, template, status, request_id)
            audit.end(token)
            structlog.contextvars.unbind_contextvars("request_id")

    async def _send_problem(
        self,
        send: Send,
        status: int,
        request_id: str,
        limit: int,
        rid_header: tuple[bytes, bytes],
        detail: str = "",
    ) -> None:
        if status == 413:
            body = problem_body(
                413,
                "Payload too large",
                f"request body exceeds the limit of {limit} bytes",
                code="payload_too_large",
                request_id=request_id,
            )
        elif status == 400:
            body = problem_body(
                400,
                "Bad request",
                "invalid Content-Length",
                code="bad_request",
                request_id=request_id,
            )
        else:
            body = problem_body(
                500,
                "Internal error",
                "an unexpected error occurred; quote the request id when reporting it",
                code="internal",
                request_id=request_id,
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    rid_header,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _audit(
        self,
        scope: Scope,
        ctx: audit.AuditContext,
        method: str,
        template: str,
        status: int,
        request_id: str,
    ) -> None:
        client = scope.get("client")
        client_ip = client[0] if client else None
        if ctx.resource_id is None and template != "<unmatched>":
            params: dict[str, Any] = scope.get("path_params") or {}
            if params:
                ctx.resource_id = str(next(reversed(params.values())))[:200]
        action = f"{method} {template}"

        def write() -> None:
            try:
                with self.session_factory()() as session, session.begin():
                    audit.record(
                        session,
                        ctx,
                        action=action,
                        status=status,
                        request_id=request_id,
                        client_ip=client_ip,
                    )
            except Exception:
                log.exception("audit_write_failed", action=action)

        await anyio.to_thread.run_sync(write)
