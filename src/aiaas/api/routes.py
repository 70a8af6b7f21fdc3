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
