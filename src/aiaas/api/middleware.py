"""The platform middleware: request id, edge limits, security headers, metrics, log, audit.

One pure-ASGI layer (no per-request task or stream wrapping) so the hot path pays little.
Everything a route must not see is refused here, before the route reads a byte:

- ``X-Request-ID``: taken from the client when it is short and plain, else generated;
  returned on every response and bound into the log context.
- The matched route decides the body's rules (``RoutePolicy``), never the request's own
  ``Content-Type``: the large upload limit applies only to the upload routes, every other
  route gets the JSON limit (public routes a smaller one), and a body of a media type the
  route does not declare in OpenAPI is a 415. ``Content-Length`` above the limit is refused
  before the app runs; bodies without one are counted as they stream and cut off with 413.
- Credentials before bodies: on a route that needs credentials, a request with a body is
  authenticated here first, so an unauthenticated client never makes the server read, parse
  or spool its body (FastAPI itself reads a JSON body before it runs the dependencies).
- A body that stops arriving for ``body_timeout_s`` is a 408 (slow-body clients do not hold
  a worker); slow headers are the server protocol's job (``aiaas.api.server``).
- Security headers on every response; ``Cache-Control: no-store`` on API responses.
- Metrics by route template, method and status; one access-log line per request.
- Audit: every state-changing request, and every denied one, leaves an audit event — except
  an anonymous 401 that no service attributed (a bad or missing credential): those are
  counted and logged, so an unauthenticated flood cannot grow the audit table.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import orjson
import structlog
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiaas.api.problems import problem_body
from aiaas.api.route_table import RoutePolicy
from aiaas.auth import audit
from aiaas.errors import AiaasError, TooManyRequests
from aiaas.monitoring.metrics import HttpMetrics

log = structlog.get_logger("aiaas.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Pages that load Swagger UI / ReDoc from their CDN: no CSP of ours there.
_HTML_PAGES = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_NO_STORE = (b"cache-control", b"no-store")
_POLICY_CACHE = 4096  # (method, path) pairs whose route policy is remembered

#: ``(status, title, code, detail)`` of a problem+json refusal.
Problem = tuple[int, str, str, str]
_NUL_IN_URL: Problem = (400, "Bad request", "bad_request", "NUL in URL")
_BAD_LENGTH: Problem = (400, "Bad request", "bad_request", "invalid Content-Length")
_INTERNAL: Problem = (
    500,
    "Internal error",
    "internal",
    "an unexpected error occurred; quote the request id when reporting it",
)

#: ``authenticate(scope, headers)`` raises :class:`aiaas.errors.Unauthorized` for a bad
#: credential (``headers``: the request's, by lower-case name).
Authenticate = Callable[[Scope, dict[bytes, bytes]], Awaitable[None]]


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        # The rest of the body is never read: the connection cannot be reused.
        super().__init__(
            413, f"request body exceeds the limit of {limit} bytes", {"Connection": "close"}
        )


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            408, f"no request body data arrived for {seconds:g} s", {"Connection": "close"}
        )


def route_template(scope: Scope, templates: dict[int, str]) -> str:
    route = scope.get("route")
    if route is None:
        return "<unmatched>"
    found = templates.get(id(route))
    if found is not None:
        return found
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


def _has_body(headers: dict[bytes, bytes]) -> bool:
    declared = headers.get(b"content-length")
    if declared is not None:
        return declared != b"0"
    return b"transfer-encoding" in headers


def _request_id(headers: dict[bytes, bytes]) -> str:
    """The client's ``X-Request-ID`` when it is short and plain, else a fresh one."""
    incoming = headers.get(b"x-request-id", b"").decode("latin-1")
    if incoming and _REQUEST_ID.match(incoming):
        return incoming
    # an id, not a secret: no system call (under load, each one waits for the GIL again)
    return f"{random.getrandbits(64):016x}"


def _has_nul(scope: Scope) -> bool:
    # NUL cannot be stored or compared in PostgreSQL text: refuse it at the edge.
    return "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")


def _too_large(limit: int) -> Problem:
    return (
        413,
        "Payload too large",
        "payload_too_large",
        f"request body exceeds the limit of {limit} bytes",
    )


def _length_problem(declared: bytes | None, limit: int) -> Problem | None:
    """A ``Content-Length`` that is not a number, or above ``limit``."""
    if declared is None:
        return None
    if not declared.isdigit():
        return _BAD_LENGTH
    if int(declared) > limit:
        return _too_large(limit)
    return None


def _media_type_problem(policy: RoutePolicy, headers: dict[bytes, bytes]) -> Problem | None:
    """A body of a media type the route does not declare."""
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    content_type = content_type.split(";")[0].strip().lower()
    if policy.accepts(content_type):
        return None
    return (
        415,
        "Unsupported media type",
        "unsupported_media_type",
        f"this route takes {' or '.join(sorted(policy.content_types))}, "
        f"not {content_type or 'a body without Content-Type'}",
    )


def _audited(method: str, status: int, ctx: audit.AuditContext, *, quiet: bool = False) -> bool:
    """State-changing and denied requests are audited, except an anonymous 401 that no service
    attributed: a credential flood must not grow the audit table. A ``quiet`` route (a
    prediction: a POST that changes nothing, logged in the prediction log) is audited only
    when denied."""
    anonymous_401 = status == 401 and ctx.org_id is None and ctx.resource_type is None
    mutating = method in _MUTATING and not quiet
    return (mutating or status in (401, 403)) and not anonymous_401


class _Exchange:
    """One request's state: its id, the headers every response gets, the body limit, the
    bytes received and the status sent so far.

    The app gets the bound :meth:`receive` and :meth:`send`: one slotted object and two bound
    methods per request, where nested closures needed three functions and a cell per
    variable. ``downstream_send`` is the server's own ``send``: a refusal goes there, its
    headers already complete.
    """

    __slots__ = (
        "api",
        "body_done",
        "body_timeout",
        "downstream_receive",
        "downstream_send",
        "extra_headers",
        "limit",
        "oip",
        "received",
        "request_id",
        "response_started",
        "status",
    )

    def __init__(
        self, request_id: str, path: str, receive: Receive, send: Send, body_timeout: float
    ) -> None:
        self.request_id = request_id
        self.extra_headers = [(b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
        if path not in _HTML_PAGES:
            self.extra_headers.append(_CSP)
        self.api = path.startswith("/api/")
        #: the Open Inference Protocol's paths answer errors as ``{"error": …}``
        self.oip = path == "/v2" or path.startswith("/v2/")
        self.downstream_receive = receive
        self.downstream_send = send
        self.body_timeout = body_timeout
        self.limit = 0  # set by the edge checks before the app runs
        self.received = 0
        self.body_done = False
        self.status = 500
        self.response_started = False

    async def send(self, message: Message) -> None:
        """The app's ``send``: records the status and adds the platform's headers."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.response_started = True
            sent = list(message.get("headers", []))
            if self.api and not any(name.lower() == b"cache-control" for name, _ in sent):
                sent.append(_NO_STORE)
            message["headers"] = [*sent, *self.extra_headers]
        await self.downstream_send(message)

    async def receive(self) -> Message:
        """The app's ``receive``: every body read has a deadline, and the total a limit."""
        if self.body_done:
            return await self.downstream_receive()
        waiting = self.downstream_receive()
        if not isinstance(waiting, Coroutine):
            message = await self._before_deadline(waiting)
        else:
            try:
                # A body already received comes back without waiting (uvicorn's receive
                # returns at once): no deadline to arm, 5 µs of a prediction's ~150 saved.
                pending = waiting.send(None)
            except StopIteration as done:
                message = done.value
            else:
                message = await self._before_deadline(_Resumed(waiting, pending))
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise BodyTooLarge(self.limit)
            self.body_done = not message.get("more_body", False)
        return message

    async def _before_deadline(self, waiting: Awaitable[Message]) -> Message:
        try:
            # asyncio's own timeout: a tenth of the cost of a cancel scope
            async with asyncio.timeout(self.body_timeout):
                return await waiting
        except TimeoutError:
            raise BodyTimeout(self.body_timeout) from None


class _Resumed:
    """The rest of a coroutine already run up to its first wait (``pending``, what it
    waits for): awaiting this object finishes it, as awaiting the coroutine would have."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Any, pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Any:
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # cancelled (the deadline) or closed: pass it in
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as done:
                    return done.value


class PlatformMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_public_body_bytes: int,
        body_timeout_s: float,
        policies: Callable[[], list[tuple[Any, RoutePolicy]]],
        authenticate: Authenticate,
        metrics: HttpMetrics,
        session_factory: Callable[[], sessionmaker[Session]],
        templates: dict[int, str],
        quiet_routes: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.quiet_routes = quiet_routes
        self.max_body = max_body_bytes
        self.max_public_body = max_public_body_bytes
        self.body_timeout = body_timeout_s
        self._policies_factory = policies
        self._policies: list[tuple[Any, RoutePolicy]] | None = None
        self._policy_cache: dict[tuple[str, str], RoutePolicy | None] = {}
        self.authenticate = authenticate
        self.metrics = metrics
        self.session_factory = session_factory
        self.templates = templates

    def policy(self, scope: Scope) -> RoutePolicy | None:
        """The policy of the route that will serve ``scope`` (None: no route matches fully).

        Remembered per method and path (at most ``_POLICY_CACHE`` of them, then forgotten
        all at once): a prediction's path repeats, and matching it against every route
        cost more than the rest of the middleware.
        """
        key = (scope["method"], scope["path"])
        if key in self._policy_cache:
            return self._policy_cache[key]
        if self._policies is None:
            self._policies = self._policies_factory()
        found = None
        for matcher, policy in self._policies:
            match, _ = matcher.matches(scope)
            if match is Match.FULL:
                found = policy
                break
        if len(self._policy_cache) >= _POLICY_CACHE:
            self._policy_cache.clear()
        self._policy_cache[key] = found
        return found

    def body_limit(self, policy: RoutePolicy | None) -> int:
        """The route's byte limit; a public route that takes a body gets the smaller one."""
        if policy is None:
            return self.max_body
        if policy.public and policy.content_types:
            return min(policy.max_body, self.max_public_body)
        return policy.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit, run, then account: metrics, the log line and the audit run in every case."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = _request_id(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        ctx, token = audit.begin()
        exchange = _Exchange(request_id, scope["path"], receive, send, self.body_timeout)
        try:
            if await self._admit(scope, headers, exchange):
                await self._run_app(scope, exchange)
        finally:
            await self._after_response(scope, exchange, ctx, started)
            audit.end(token)
            structlog.contextvars.unbind_contextvars("request_id")

    async def _admit(self, scope: Scope, headers: dict[bytes, bytes], exchange: _Exchange) -> bool:
        """Whether the request may reach the app; when not, its refusal has been sent.

        Checked in this order: NUL in the URL, ``Content-Length`` against the route's limit,
        the body's media type, then credentials for a body bound for a non-public route.
        """
        if _has_nul(scope):
            await self._refuse(exchange, *_NUL_IN_URL)
            return False
        policy = self.policy(scope)
        exchange.limit = self.body_limit(policy)
        problem = _length_problem(headers.get(b"content-length"), exchange.limit)
        if problem is not None:
            await self._refuse(exchange, *problem)
            return False
        if policy is None or not policy.content_types or not _has_body(headers):
            return True
        problem = _media_type_problem(policy, headers)
        if problem is not None:
            await self._refuse(exchange, *problem)
            return False
        return policy.public or await self._authenticated(scope, headers, exchange)

    async def _authenticated(
        self, scope: Scope, headers: dict[bytes, bytes], exchange: _Exchange
    ) -> bool:
        """Credentials before the body: a bad one is refused before a byte of it is read."""
        try:
            await self.authenticate(scope, headers)
        except AiaasError as exc:
            await self._send_error(
                exchange.downstream_send,
                exc,
                exchange.request_id,
                exchange.extra_headers,
                oip=exchange.oip,
            )
            exchange.status = exc.status
            return False
        return True

    async def _run_app(self, scope: Scope, exchange: _Exchange) -> None:
        """Run the app; a body cut off, or an error before the response began, is a problem."""
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BodyTooLarge:
            if not exchange.response_started:
                await self._refuse(exchange, *_too_large(exchange.limit))
        except BodyTimeout as exc:
            if not exchange.response_started:
                await self._refuse(exchange, 408, "Request timeout", "request_timeout", exc.detail)
        except Exception:
            log.exception("unhandled_error", path=scope["path"])
            if exchange.response_started:
                raise
            await self._refuse(exchange, *_INTERNAL)

    async def _refuse(
        self, exchange: _Exchange, status: int, title: str, code: str, detail: str
    ) -> None:
        exchange.status = status
        await self._send_problem(
            exchange.downstream_send,
            status,
            title,
            code,
            detail,
            exchange.request_id,
            exchange.extra_headers,
            oip=exchange.oip,
        )

    async def _after_response(
        self, scope: Scope, exchange: _Exchange, ctx: audit.AuditContext, started: float
    ) -> None:
        """Metrics, the access-log line and, when due, the audit event."""
        elapsed = time.perf_counter() - started
        method: str = scope["method"]
        template = route_template(scope, self.templates)
        status = exchange.status
        self.metrics.observe(method, template, status, elapsed)
        quiet = template in self.quiet_routes
        if not quiet or status >= 400:  # an answered prediction's record is the prediction log
            log.info(
                "request",
                method=method,
                route=template,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                org_id=ctx.org_id,
            )
        if _audited(method, status, ctx, quiet=quiet):
            await self._audit(scope, ctx, method, template, status, exchange.request_id)

    async def _send_error(
        self,
        send: Send,
        exc: AiaasError,
        request_id: str,
        extra: list[tuple[bytes, bytes]],
        *,
        oip: bool = False,
    ) -> None:
        headers = list(extra)
        if exc.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if isinstance(exc, TooManyRequests) and exc.retry_after:
            headers.append((b"retry-after", str(exc.retry_after).encode()))
        await self._send_problem(
            send, exc.status, exc.title, exc.code, exc.detail, request_id, headers, oip=oip
        )

    async def _send_problem(
        self,
        send: Send,
        status: int,
        title: str,
        code: str,
        detail: str,
        request_id: str,
        extra: list[tuple[bytes, bytes]],
        *,
        oip: bool = False,
    ) -> None:
        if oip:
            body, media_type = orjson.dumps({"error": detail}), b"application/json"
        else:
            body = problem_body(status, title, detail, code=code, request_id=request_id)
            media_type = b"application/problem+json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", media_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    _NO_STORE,
                    *extra,
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
