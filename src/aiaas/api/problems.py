"""RFC 9457 problem details: the one error shape of every HTTP response."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"


def problem_body(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    code: str,
    instance: str | None = None,
    request_id: str | None = None,
    **extra: Any,
) -> bytes:
    body: dict[str, Any] = {
        "type": f"https://aiaas.dev/problems/{code.replace('_', '-')}",
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    return orjson.dumps(body, default=str)


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    code: str,
    instance: str | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    return Response(
        problem_body(
            status,
            title,
            detail,
            code=code,
            instance=instance,
            request_id=request_id,
            **extra,
        ),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )
