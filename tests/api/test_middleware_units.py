"""The platform middleware's phases one at a time, without an app: edge rules, the body
limiter, the response headers and who is audited (the app-level tests are in test_edge.py)."""

from __future__ import annotations

import anyio
import pytest
from sqlalchemy.orm import sessionmaker
from starlette.types import Message

from aiaas.api.middleware import (
    BodyTimeout,
    BodyTooLarge,
    PlatformMiddleware,
    _audited,
    _Exchange,
    _length_problem,
    _media_type_problem,
)
from aiaas.api.route_table import RoutePolicy
from aiaas.auth.audit import AuditContext
from aiaas.monitoring.metrics import HttpMetrics

JSON = RoutePolicy(frozenset({"application/json"}), max_body=1000, public=False)


def _middleware() -> PlatformMiddleware:
    async def nothing(*_: object) -> None:
        return None

    return PlatformMiddleware(
        nothing,
        max_body_bytes=1000,
        max_public_body_bytes=100,
        body_timeout_s=0.05,
        policies=list,
        authenticate=nothing,
        metrics=HttpMetrics(),
        session_factory=lambda: sessionmaker(),
        templates={},
    )


def _exchange(path: str, messages: list[Message], *, limit: int = 10, timeout: float = 1.0):
    sent: list[Message] = []
    pending = iter(messages)

    async def receive() -> Message:
        try:
            return next(pending)
        except StopIteration:
            await anyio.sleep(10)
            raise AssertionError("the deadline did not fire") from None

    async def send(message: Message) -> None:
        sent.append(message)

    exchange = _Exchange("rid-1", path, receive, send, timeout)
    exchange.limit = limit
    return exchange, sent


def _body(data: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


@pytest.mark.parametrize(
    ("declared", "status"),
    [(None, None), (b"1000", None), (b"1001", 413), (b"-1", 400), (b"1e3", 400), (b"", 400)],
)
def test_content_length_is_a_number_within_the_limit(declared, status):
    problem = _length_problem(declared, 1000)
    assert (problem[0] if problem else None) == status


def test_a_too_large_content_length_names_the_limit():
    assert _length_problem(b"1001", 1000) == (
        413,
        "Payload too large",
        "payload_too_large",
        "request body exceeds the limit of 1000 bytes",
    )


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        (b"application/json", True),
        (b"Application/JSON; charset=utf-8", True),
        (b"application/vnd.api+json", True),
        (b"text/plain", False),
        (None, False),
    ],
)
def test_media_type_is_the_routes_own(content_type, accepted):
    headers = {} if content_type is None else {b"content-type": content_type}
    problem = _media_type_problem(JSON, headers)
    assert (problem is None) is accepted
    if content_type is None:
        assert problem is not None
        assert problem[3] == "this route takes application/json, not a body without Content-Type"


def test_body_limit_comes_from_the_route():
    middleware = _middleware()
    assert middleware.body_limit(None) == 1000
    assert middleware.body_limit(JSON) == 1000
    upload = RoutePolicy(frozenset({"multipart/form-data"}), max_body=10**9, public=False)
    assert middleware.body_limit(upload) == 10**9
    public = RoutePolicy(frozenset({"application/json"}), max_body=1000, public=True)
    assert middleware.body_limit(public) == 100
    public_no_body = RoutePolicy(frozenset(), max_body=1000, public=True)
    assert middleware.body_limit(public_no_body) == 1000


@pytest.mark.parametrize(
    ("method", "status", "org_id", "resource_type", "audited"),
    [
        ("GET", 200, "org", None, False),
        ("POST", 201, "org", None, True),
        ("DELETE", 500, None, None, True),
        ("GET", 403, "org", None, True),
        ("GET", 401, None, None, False),  # anonymous 401: counted and logged only
        ("POST", 401, None, None, False),
        ("POST", 401, "org", None, True),
        ("GET", 401, None, "api_key", True),
    ],
)
def test_who_is_audited(method, status, org_id, resource_type, audited):
    ctx = AuditContext(org_id=org_id, resource_type=resource_type)
    assert _audited(method, status, ctx) is audited


def test_receive_counts_the_body_against_the_limit():
    async def main() -> None:
        exchange, _ = _exchange("/api/v1/x", [_body(b"12345", True), _body(b"678901", False)])
        assert (await exchange.receive())["body"] == b"12345"
        with pytest.raises(BodyTooLarge) as raised:
            await exchange.receive()
        assert raised.value.status_code == 413

    anyio.run(main)


def test_receive_after_the_body_passes_through_without_a_deadline():
    async def main() -> None:
        disconnect: Message = {"type": "http.disconnect"}
        exchange, _ = _exchange("/api/v1/x", [_body(b"1234567890", False), disconnect])
        await exchange.receive()
        assert exchange.body_done
        assert await exchange.receive() is disconnect

    anyio.run(main)


def test_a_body_that_stops_arriving_is_a_timeout():
    async def main() -> None:
        exchange, _ = _exchange("/api/v1/x", [_body(b"1", True)], timeout=0.05)
        await exchange.receive()
        with pytest.raises(BodyTimeout) as raised:
            await exchange.receive()
        assert raised.value.status_code == 408

    anyio.run(main)


def test_a_body_that_arrives_late_within_the_deadline_is_received():
    async def main() -> None:
        arrived: Message = _body(b"late", False)

        async def receive() -> Message:
            await anyio.sleep(0.01)  # the body is not there yet: the read waits for it
            await anyio.sleep(0.01)
            return arrived

        exchange = _Exchange("rid-1", "/api/v1/x", receive, _noop_send, 1.0)
        exchange.limit = 10
        assert await exchange.receive() is arrived
        assert exchange.body_done
        assert exchange.received == 4

    anyio.run(main)


async def _noop_send(message: Message) -> None:
    return None


@pytest.mark.parametrize(
    ("path", "app_headers", "cache_control", "csp"),
    [
        ("/api/v1/x", [], [b"no-store"], True),
        ("/api/v1/x", [(b"Cache-Control", b"max-age=60")], [b"max-age=60"], True),
        ("/healthz", [], [], True),
        ("/docs", [], [], False),
    ],
)
def test_send_records_the_status_and_adds_the_platform_headers(
    path, app_headers, cache_control, csp
):
    async def main() -> None:
        exchange, sent = _exchange(path, [])
        start: Message = {"type": "http.response.start", "status": 201, "headers": app_headers}
        await exchange.send(start)
        await exchange.send({"type": "http.response.body", "body": b""})
        assert (exchange.status, exchange.response_started) == (201, True)
        headers = sent[0]["headers"]
        assert (b"x-request-id", b"rid-1") in headers
        assert (b"x-content-type-options", b"nosniff") in headers
        assert [v for k, v in headers if k.lower() == b"cache-control"] == cache_control
        assert any(k == b"content-security-policy" for k, _ in headers) is csp
        assert sent[1] == {"type": "http.response.body", "body": b""}

    anyio.run(main)
