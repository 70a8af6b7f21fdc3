"""JSON request bodies parsed strictly (orjson), for every route of every domain router.

The standard library's parser accepts what no JSON peer should send and what breaks later
layers: lone UTF-16 surrogates (``"\\ud800"`` cannot be encoded to UTF-8, so PostgreSQL,
argon2 and file writes fail with a 500), ``NaN``/``Infinity`` literals and numbers that
overflow to infinity (``1e400``). orjson refuses all of them (and nesting deeper than 1,024)
with a ``JSONDecodeError``, which FastAPI answers as a 422 ``json_invalid`` problem. Integers
beyond 64 bits are the models' job: every integer field has explicit bounds.

Every domain router is built with ``route_class=StrictJSONRoute``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive, request._send))

        return strict
