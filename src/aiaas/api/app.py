"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

import aiaas
from aiaas.api.deps import bearer_token, principal_of
from aiaas.api.errors import install_error_handlers
from aiaas.api.health import router as health_router
from aiaas.api.middleware import PlatformMiddleware
from aiaas.api.route_table import iter_routes, route_policies, route_templates
from aiaas.api.routers import ROUTERS
from aiaas.api.state import AppState, app_state
from aiaas.auth.cache import ApiKeyCache, LoginThrottle
from aiaas.auth.passwords import Passwords
from aiaas.data.context import DataContext
from aiaas.db import get_session_factory
from aiaas.jobs.context import JobsContext
from aiaas.logging import configure_logging
from aiaas.monitoring.metrics import HttpMetrics
from aiaas.serving import oip
from aiaas.serving.core import Serving
from aiaas.serving.gateway import ServingGateway
from aiaas.serving.oip_router import router as oip_router
from aiaas.settings import Settings, get_settings
from aiaas.storage import get_store

API_PREFIX = "/api/v1"
#: Routes reachable without credentials. Everything else must depend on ``require(...)``.
PUBLIC_ROUTES: frozenset[str] = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        f"{API_PREFIX}/auth/token",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
    }
)
#: POSTs that change nothing (predictions: their record is the prediction log): audited
#: only when denied.
QUIET_ROUTES: frozenset[str] = frozenset(
    {
        f"{API_PREFIX}/endpoints/{{name}}/predict",
        f"{API_PREFIX}/endpoints/{{name}}/invocations",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }
)


def private_data_dir(settings: Settings) -> None:
    """Create the data dir readable by its owner only (its database, keys and datasets).

    An existing dir is tightened too: a mode-0700 directory hides every file below it,
    whatever the files' own modes (``aiaas serve`` also sets umask 077 for new files).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.data_dir.stat().st_mode & 0o077:
        settings.data_dir.chmod(0o700)


def build_state(settings: Settings) -> AppState:
    """Everything the routes share, built once per app from ``settings``."""
    secret_key = settings.secret_key()
    store = get_store(settings.resolved_artifacts_url)
    auth = settings.auth
    session_factory = get_session_factory(settings.resolved_database_url)
    metrics = HttpMetrics()
    return AppState(
        settings=settings,
        secret_key=secret_key,
        session_factory=session_factory,
        store=store,
        passwords=Passwords(auth.argon2_time_cost, auth.argon2_memory_kib, auth.argon2_parallelism),
        api_key_cache=ApiKeyCache(auth.api_key_cache_ttl_s),
        login_throttle=LoginThrottle(auth.login_max_failures, auth.login_window_s),
        metrics=metrics,
        data=DataContext.build(settings, store, secret_key),
        jobs=JobsContext.build(settings, store),
        serving=Serving(settings, store, session_factory, metrics.registry),
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Stop the serving threads (and flush the prediction log) when the server stops."""
    yield
    app_state(app).serving.stop()


class AiaasApp(FastAPI):
    """FastAPI, with predictions answered in front of its middleware stack.

    A prediction (``POST …/predict``, ``…/invocations``, ``/v2/…/infer``) goes to its own
    short chain, the platform middleware around the serving gateway, and skips what
    FastAPI and Starlette wrap around every request (their error, telemetry and body-limit
    layers, ~20 µs); the gateway catches its own errors and the platform middleware turns
    anything else into a 500 problem. Everything else is FastAPI as usual.
    """

    serving_gateway: ServingGateway | None = None
    serving_front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.serving_gateway
        if gateway is not None and self.serving_front is not None and gateway.handles(scope):
            scope["app"] = self  # what Starlette sets: Request(scope).app finds the state
            await self.serving_front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _serving_gateway(app: FastAPI, state: AppState) -> ServingGateway:
    """The gateway that answers predictions (pure ASGI, see :mod:`aiaas.serving.gateway`)."""
    from aiaas.api.deps import get_principal

    names = {
        f"{API_PREFIX}/endpoints/{{name}}/predict": "predict",
        f"{API_PREFIX}/endpoints/{{name}}/invocations": "invocations",
        "/v2/models/{name}/infer": "infer",
        "/v2/models/{name}/versions/{version}/infer": "infer_version",
    }
    routes = {names[i.path]: i.route for i in iter_routes(app) if i.path in names}

    def serving() -> Serving:
        state.serving.start()
        return state.serving

    async def unreachable(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError(f"the serving gateway does not answer {scope['path']!r}")

    return ServingGateway(
        unreachable,
        serving=serving,
        authenticate=get_principal,
        routes=routes,
        infer=oip.infer,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app for ``settings`` (migrations are applied by the caller)."""
    settings = settings or get_settings()
    if not structlog.is_configured():
        # Never the library default: its tracebacks print local variables (secrets).
        configure_logging(fmt=settings.log_format, level=settings.log_level)
    private_data_dir(settings)
    app = AiaasApp(
        title="aiaas",
        version=aiaas.__version__,
        description="Self-hosted AI-as-a-Service: data, AutoML, registry, serving, monitoring.",
        swagger_ui_init_oauth={"usePkceWithAuthorizationCodeGrant": False},
    )
    state = build_state(settings)
    app.state.aiaas = state
    app.router.lifespan_context = _lifespan

    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(oip_router)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    limits = settings.limits

    async def authenticate(scope: Scope, headers: dict[bytes, bytes]) -> None:
        # What the route's dependency does (get_principal), without a Request: the principal
        # stays in the request state, where the dependency and the serving gateway find it.
        raw = headers.get(b"authorization")
        token = bearer_token(raw.decode("latin-1") if raw is not None else None)
        scope["state"]["principal"] = await principal_of(state, token)

    platform: dict[str, Any] = {
        "max_body_bytes": limits.max_body_bytes,
        "max_public_body_bytes": limits.max_public_body_bytes,
        "body_timeout_s": limits.body_timeout_s,
        "policies": lambda: route_policies(
            app,
            public=PUBLIC_ROUTES,
            max_body=limits.max_body_bytes,
            max_upload=limits.max_upload_bytes,
        ),
        "authenticate": authenticate,
        "metrics": state.metrics,
        "session_factory": lambda: state.session_factory,
        "templates": route_templates(app),
        "quiet_routes": QUIET_ROUTES,
    }
    app.add_middleware(PlatformMiddleware, **platform)
    if settings.serving.fast_path:
        app.serving_gateway = _serving_gateway(app, state)
        app.serving_front = PlatformMiddleware(app.serving_gateway, **platform)
    return app
