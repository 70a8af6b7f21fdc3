"""Per-request cost of authentication with a cached API key, against the same route without auth.

Both routes run through the full app (middleware, routing, FastAPI dependency resolution,
JSON response) in one process, driven at the ASGI level so no socket noise hides the
difference. Requests alternate between the two routes; medians over many rounds.

    python benchmarks/auth.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from aiaas.api.app import create_app
from aiaas.api.deps import require
from aiaas.auth import service as auth_service
from aiaas.auth.permissions import Action, Role
from aiaas.auth.principal import Principal
from aiaas.db import get_session_factory
from aiaas.db.migrate import upgrade
from aiaas.logging import configure_logging
from aiaas.settings import Settings

RESULTS = Path(__file__).parent / "results" / "auth.md"


def build(tmp: str) -> tuple[object, str]:
    settings = Settings(data_dir=tmp, _env_file=None)
    upgrade(settings.resolved_database_url)
    with get_session_factory(settings.resolved_database_url)() as session, session.begin():
        org = auth_service.create_org(session, "bench")
        _, key = auth_service.issue_api_key(session, org, role=Role.viewer, name="bench")
    app = create_app(settings)

    @app.get("/bench/open")
    async def open_route() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/bench/authed")
    async def authed_route(principal: Principal = require(Action.ME_READ)) -> dict[str, bool]:
        return {"ok": True}

    return app, key


async def call(app: object, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    status = 0
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]

    await app(scope, receive, send)  # type: ignore[operator]
    return status


async def measure(app: object, key: str, n: int) -> tuple[list[float], list[float]]:
    auth = [(b"authorization", f"Bearer {key}".encode())]
    assert await call(app, "/bench/authed", auth) == 200  # warms the key cache
    assert await call(app, "/bench/authed", []) == 401
    open_t, authed_t = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        await call(app, "/bench/open", auth)
        t1 = time.perf_counter()
        await call(app, "/bench/authed", auth)
        t2 = time.perf_counter()
        open_t.append(t1 - t0)
        authed_t.append(t2 - t1)
    return open_t, authed_t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    configure_logging(level="WARNING")  # no access-log lines: same for both routes
    with tempfile.TemporaryDirectory() as tmp:
        app, key = build(tmp)
        open_t, authed_t = asyncio.run(measure(app, key, args.requests))
    us = 1e6
    o_med, a_med = statistics.median(open_t) * us, statistics.median(authed_t) * us
    o_p99 = statistics.quantiles(open_t, n=100)[98] * us
    a_p99 = statistics.quantiles(authed_t, n=100)[98] * us
    table = (
        "| route | median µs | p99 µs |\n|---|---:|---:|\n"
        f"| no auth (`/bench/open`) | {o_med:.1f} | {o_p99:.1f} |\n"
        f"| cached API key (`require(...)`) | {a_med:.1f} | {a_p99:.1f} |\n"
        f"| **added by authentication** | **{a_med - o_med:.1f}** | |\n"
    )
    text = (
        f"# Authentication cost ({args.requests} requests each, in-process ASGI)\n\n{table}\n"
        f"Target: under 100 µs added. Result: {'met' if a_med - o_med < 100 else 'NOT met'}.\n"
    )
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
