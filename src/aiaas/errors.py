"""Every error aiaas raises on purpose, and the HTTP status each one maps to.

::

    AiaasError (500 internal)
    ├── BadRequest (400 bad_request)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    ├── Conflict (409 conflict)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── UnsupportedMediaType (415 unsupported_media_type)
    ├── InvalidInput (422 invalid_input)
    ├── TooManyRequests (429 too_many_requests)
    │   └── QuotaExceeded (429 quota_exceeded)
    ├── ServiceUnavailable (503 unavailable)
    └── InsufficientStorage (507 insufficient_storage)

Domain code raises these; one handler in :mod:`aiaas.api.errors` renders them as RFC 9457
``application/problem+json``. A bare ``ValueError`` escaping a service is a bug and stays a 500.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AiaasError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, *, extra: dict[str, Any] | None = None):
        self.detail = detail or self.title
        self.extra = extra or {}
        super().__init__(self.detail)


class BadRequest(AiaasError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(AiaasError):
    status, code, title = 401, "unauthorized", "Authentication required"


class Forbidden(AiaasError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFound(AiaasError):
    status, code, title = 404, "not_found", "Not found"

    def __init__(self, resource: str = "resource", id: str | None = None):
        self.resource = resource
        detail = f"{resource} {id!r} not found" if id is not None else f"{resource} not found"
        super().__init__(detail)


class Conflict(AiaasError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(AiaasError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(AiaasError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class InvalidInput(AiaasError):
    status, code, title = 422, "invalid_input", "Invalid input"

    def __init__(self, detail: str | None = None, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail, extra={"errors": errors} if errors else None)


class TooManyRequests(AiaasError):
    status, code, title = 429, "too_many_requests", "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None):
        super().__init__(detail)
        self.retry_after = retry_after


class QuotaExceeded(TooManyRequests):
    code, title = "quota_exceeded", "Quota exceeded"


class ServiceUnavailable(AiaasError):
    status, code, title = 503, "unavailable", "Service unavailable"


class InsufficientStorage(AiaasError):
    status, code, title = 507, "insufficient_storage", "Insufficient storage"
