"""ASGI entry point for uvicorn workers: ``aiaas.api.asgi:app`` (settings from the environment)."""

from aiaas.api.app import create_app
from aiaas.logging import configure_logging
from aiaas.settings import get_settings

_settings = get_settings()
configure_logging(fmt=_settings.log_format, level=_settings.log_level)
app = create_app(_settings)
