"""The app's state: one typed, frozen object, built once by ``create_app``.

Routes never read ``request.app.state``; they get each part through a typed dependency of
:mod:`aiaas.api.deps`, which is the only reader of :func:`app_state`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp

from aiaas.auth.cache import ApiKeyCache, LoginThrottle
from aiaas.auth.passwords import Passwords
from aiaas.data.context import DataContext
from aiaas.jobs.context import JobsContext
from aiaas.monitoring.metrics import HttpMetrics
from aiaas.serving.core import Serving
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore


@dataclass(frozen=True)
class AppState:
    settings: Settings
    secret_key: bytes  # resolved once (settings.secret_key() may read a file)
    session_factory: sessionmaker[Session]
    store: ArtifactStore
    passwords: Passwords
    api_key_cache: ApiKeyCache
    login_throttle: LoginThrottle
    metrics: HttpMetrics
    data: DataContext
    jobs: JobsContext
    serving: Serving


def app_state(app: ASGIApp) -> AppState:
    """The :class:`AppState` of an app made by ``create_app`` (also for tests and tools)."""
    state = getattr(getattr(app, "state", None), "aiaas", None)
    if not isinstance(state, AppState):
        raise RuntimeError("not an app made by aiaas.api.app.create_app")
    return state
