"""The serving gateway: predictions answered before FastAPI's routing (pure ASGI).

It sits inside :class:`aiaas.api.middleware.PlatformMiddleware`, so a prediction still gets
the request id, the body limits and deadlines, credentials checked before its body is
read, metrics by route template, the access-log line and (when denied) the audit event.
What it skips is FastAPI's routing, dependency resolution and response classes: for
``POST /api/v1/endpoints/{name}/predict``, ``…/invocations`` and
``/v2/models/{name}[/versions/{v}]/infer`` it authenticates (the same
:func:`aiaas.api.deps.get_principal`), checks ``endpoint:predict``, reads the body and
calls the same :class:`aiaas.serving.core.Serving` code as the FastAPI routes of
:mod:`aiaas.serving.router` (which serve when ``AIAAS_SERVING__FAST_PATH`` is off, and
document the paths in OpenAPI). Errors keep their contracts: RFC 9457 problems on
``/api/v1``, the protocol's ``{"error": …}`` on ``/v2``.

A path whose name does not match the endpoint-name rule falls through to FastAPI, which
refuses it as it refuses any bad path parameter.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from aiaas.api.deps import check_permission
from aiaas.api.problems import problem_body
from aiaas.auth.permissions import Action
from aiaas.auth.principal import Principal
from aiaas.errors import AiaasError, TooManyRequests
from aiaas.serving.core import Answer, Serving

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}"
_REST = re.compile(rf"^/api/v1/endpoints/({_NAME})/(predict|invocations)$")
_OIP = re.compile(rf"^/v2/models/({_NAME})(?:/versions/([0-9]{{1,9}}))?/infer$")
_JSON = (b"content-type", b"application/json")

#: ``infer(serving, principal, name, body, headers=…, version=…, request_id=…)`` of
#: :mod:`aiaas.serving.oip`, when the protocol is mounted.
Infer = Callable[..., Awaitable[Answer]]
Authenticate = Callable[[Request], Awaitable[Principal]]


class ServingGateway:
    def __init__(
        self,
        app: ASGIApp,
        *,
        serving: Callable[[], Serving],
        authenticate: Authenticate,
        routes: dict[str, Any],
        infer: Infer | None = None,
    ) -> None:
        """``routes``: the FastAPI route objects of ``predict``, ``invocations`` and
        ``infer`` (their templates name the requests in metrics and the audit)."""
        self.app = app
        self._serving = serving
        self._authenticate = authenticate
        self._routes = routes
        self._infer = infer

    def handles(self, scope: Scope) -> bool:
        """Whether this gateway answers ``scope`` (a prediction's method and path)."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path: str = scope["path"]
        if path.startswith("/api/v1/endpoints/"):
            return _REST.match(path) is not None
        return (
            self._infer is not None
            and path.startswith("/v2/models/")
            and _OIP.match(path) is not None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/api/v1/endpoints/"):
            rest = _REST.match(path)
            if rest is not None:
                await self._predict(scope, receive, send, rest.group(1), rest.group(2))
                return
        elif path.startswith("/v2/models/") and self._infer is not None:
            oip = _OIP.match(path)
            if oip is not None:
                version = int(oip.group(2)) if oip.group(2) else None
                await self._oip(scope, receive, send, oip.group(1), version)
                return
        await self.app(scope, receive, send)

    async def _principal(self, scope: Scope) -> Principal:
        # the platform middleware authenticated a request with a body already (and kept the
        # principal in the request state, where the FastAPI dependency finds it too)
        found = scope["state"].get("principal") if "state" in scope else None
        if found is None:
            found = await self._authenticate(Request(scope))
        return check_permission(found, Action.PREDICT)

    async def _predict(
        self, scope: Scope, receive: Receive, send: Send, name: str, kind: str
    ) -> None:
        scope["route"] = self._routes.get(kind)
        scope["path_params"] = {"name": name}
        try:
            principal = await self._principal(scope)
            body = await read_body(receive)
            serving = self._serving()
            answer = await serving.predict(
                principal,
                name,
                body,
                request_id=_request_id(scope),
                mlflow=kind == "invocations",
            )
        except AiaasError as exc:
            answer = problem_answer(exc, scope)
        await _send(send, answer)

    async def _oip(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: int | None
    ) -> None:
        assert self._infer is not None
        scope["route"] = self._routes.get("infer_version" if version else "infer")
        scope["path_params"] = {"name": name}
        try:
            principal = await self._principal(scope)
            body = await read_body(receive)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            answer = await self._infer(
                self._serving(),
                principal,
                name,
                body,
                headers=headers,
                version=version,
                request_id=_request_id(scope),
            )
        except AiaasError as exc:
            answer = oip_error(exc)
        await _send(send, answer)


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the platform middleware's ``receive`` enforces its limit
    and deadline)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def _request_id(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", ""))


def problem_answer(exc: AiaasError, scope: Scope) -> Answer:
    """An aiaas error as the RFC 9457 body the app's error handler writes."""
    body = problem_body(
        exc.status,
        exc.title,
        exc.detail,
        code=exc.code,
        instance=scope["path"],
        request_id=_request_id(scope) or None,
        **exc.extra,
    )
    headers = [(b"content-type", b"application/problem+json")]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if isinstance(exc, TooManyRequests) and exc.retry_after:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    return Answer(exc.status, body, headers)


def oip_error(exc: AiaasError) -> Answer:
    """An aiaas error as the Open Inference Protocol's error body."""
    import orjson

    headers = [_JSON]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    return Answer(exc.status, orjson.dumps({"error": exc.detail}), headers)


async def _send(send: Send, answer: Answer) -> None:
    headers = answer.headers
    if not any(k == b"content-type" for k, _ in headers):
        headers = [_JSON, *headers]
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [(b"content-length", str(len(answer.body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": answer.body})
