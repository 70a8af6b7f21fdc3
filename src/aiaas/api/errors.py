"""Exception handlers: every error leaves as problem+json, with nothing secret in it."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from aiaas.api.problems import problem_response
from aiaas.errors import AiaasError, TooManyRequests

log = structlog.get_logger()


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _oip(request: Request) -> bool:
    """The Open Inference Protocol's paths: their errors are ``{"error": "<message>"}``."""
    path = request.url.path
    return path == "/v2" or path.startswith("/v2/")


def _oip_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def aiaas_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AiaasError)
    headers = None
    if isinstance(exc, TooManyRequests) and exc.retry_after:
        headers = {"Retry-After": str(exc.retry_after)}
    if _oip(request):
        return _oip_error(exc.status, exc.detail, headers)
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        code=exc.code,
        instance=request.url.path,
        request_id=_request_id(request),
        headers=headers,
        **exc.extra,
    )


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    codes = {
        404: "not_found",
        405: "method_not_allowed",
        408: "request_timeout",
        413: "payload_too_large",
    }
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    if _oip(request):
        headers = dict(exc.headers) if exc.headers else None
        return _oip_error(exc.status_code, detail or _title(exc.status_code), headers)
    return problem_response(
        exc.status_code,
        _title(exc.status_code),
        detail,
        code=codes.get(exc.status_code, f"http_{exc.status_code}"),
        instance=request.url.path,
        request_id=_request_id(request),
        headers=dict(exc.headers) if exc.headers else None,
    )


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors without ``input``/``ctx``: they can echo passwords and huge values."""
    cleaned = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        cleaned.append({"loc": loc, "msg": str(err.get("msg", ""))[:300], "type": err.get("type")})
    return cleaned[:50]


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_validation_errors(exc.errors())
    if any(err["type"] == "json_invalid" for err in errors):
        return problem_response(
            400,
            "Bad request",
            "the request body is not valid JSON",
            code="invalid_json",
            instance=request.url.path,
            request_id=_request_id(request),
        )
    return problem_response(
        422,
        "Invalid input",
        "the request did not validate",
        code="invalid_input",
        instance=request.url.path,
        request_id=_request_id(request),
        errors=errors,
    )


async def unhandled_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_error", error_type=type(exc).__name__)
    return problem_response(
        500,
        "Internal error",
        "an unexpected error occurred; quote the request id when reporting it",
        code="internal",
        request_id=_request_id(request),
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AiaasError, aiaas_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
