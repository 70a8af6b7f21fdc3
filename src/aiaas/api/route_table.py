"""The route table as HTTP sees it: full path templates, methods, and the dependant tree.

FastAPI resolves included routers lazily; this walks them to the effective routes, so the
metrics know each route's full template and the route-inventory test sees every route.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute


@dataclass(frozen=True)
class RouteInfo:
    path: str
    methods: frozenset[str]
    route: Any
    dependant: Any | None


def iter_routes(app: FastAPI) -> Iterator[RouteInfo]:
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            for ctx in contexts():
                yield RouteInfo(
                    ctx.path_format,
                    frozenset(ctx.methods or ()),
                    ctx.original_route,
                    getattr(ctx, "dependant", None),
                )
        elif isinstance(route, APIRoute):
            yield RouteInfo(
                route.path_format, frozenset(route.methods or ()), route, route.dependant
            )
        else:
            yield RouteInfo(
                getattr(route, "path_format", getattr(route, "path", "")),
                frozenset(getattr(route, "methods", None) or ()),
                route,
                None,
            )


def route_templates(app: FastAPI) -> dict[int, str]:
    """``id(route object) -> full path template`` for every effective route."""
    return {id(info.route): info.path for info in iter_routes(app)}


# -- what each route takes at the edge ------------------------------------------------------
JSON_TYPES = frozenset({"application/json"})


@dataclass(frozen=True)
class RoutePolicy:
    """What the platform middleware enforces for one route before the route reads anything.

    ``content_types``: the media types of the route's request body as its OpenAPI operation
    declares them (empty: the route reads no body). ``max_body``: the byte limit — the large
    upload limit only for routes that declare ``multipart/form-data`` and stream it
    themselves, the JSON limit for every other route, whatever the request claims.
    ``public``: reachable without credentials (no pre-authentication of its body).
    """

    content_types: frozenset[str]
    max_body: int
    public: bool

    def accepts(self, content_type: str) -> bool:
        """Whether a body of ``content_type`` (lower-cased, no parameters) may be sent here.

        JSON routes also take ``application/<x>+json``, as FastAPI parses it as JSON; a body
        without a type is refused (FastAPI's strict content type would not parse it either).
        """
        if content_type in self.content_types:
            return True
        if self.content_types & JSON_TYPES:
            return content_type.startswith("application/") and content_type.endswith("+json")
        return False


def route_policies(
    app: FastAPI,
    *,
    public: frozenset[str],
    max_body: int,
    max_upload: int,
) -> list[tuple[Any, RoutePolicy]]:
    """``(route, policy)`` for every route, in routing order (the first full match wins).

    The request-body media types come from the OpenAPI document, so what the middleware
    accepts is exactly what the API documents.
    """
    paths: dict[str, Any] = app.openapi().get("paths", {})
    policies: list[tuple[Any, RoutePolicy]] = []
    for matcher in _matchers(app):
        path = getattr(matcher, "path_format", getattr(matcher, "path", ""))
        operations = paths.get(path, {})
        types: set[str] = set()
        for method in getattr(matcher, "methods", None) or ():
            body = operations.get(method.lower(), {}).get("requestBody", {})
            types.update(t.lower() for t in body.get("content", {}))
        # A multipart body the route streams itself (no FastAPI body field): an upload route.
        upload = "multipart/form-data" in types and getattr(matcher, "body_field", None) is None
        policy = RoutePolicy(
            content_types=frozenset(types),
            max_body=max_upload if upload else max_body,
            public=path in public,
        )
        policies.append((matcher, policy))
    return policies


def _matchers(app: FastAPI) -> Iterator[Any]:
    """Objects with ``matches(scope)``, one per effective route, in routing order."""
    for route in app.router.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            yield from contexts()
        else:
            yield route
