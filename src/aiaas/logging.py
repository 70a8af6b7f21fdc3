"""Structured logging: structlog, JSON or console, with secrets redacted at the formatter.

Edges bind ``request_id``, ``org_id`` (and later ``job_id``) in contextvars; every event
then carries them. Keys that look like secrets are replaced by ``"[redacted]"`` whatever
logs them, and URL user-info passwords are masked.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|api_?key|cookie|credential", re.I)
_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]*:)[^@\s]+@")
_BEARER = re.compile(r"(Bearer\s+)\S+", re.I)


def redact_text(text: str) -> str:
    """Mask URL passwords and bearer credentials inside free text."""
    return _BEARER.sub(r"\1[redacted]", _URL_PASSWORD.sub(r"\1[redacted]@", text))


def redact(value: Any) -> Any:
    """``value`` with secrets masked: values under secret-looking keys, and credentials in text."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: "[redacted]" if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if _SECRET_KEY.search(key):
            event_dict[key] = "[redacted]"
        else:
            event_dict[key] = redact(event_dict[key])
    return event_dict


def configure_logging(*, fmt: str = "console", level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger (uvicorn, sqlalchemy) alike."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_processor,
    ]
    # Tracebacks without local variables: locals can hold keys, passwords and rows.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name("aiaas")
    root = logging.getLogger()
    # Replace our own handler (reconfiguration), keep others (pytest's capture, for one).
    root.handlers = [h for h in root.handlers if h.get_name() != "aiaas"] + [handler]
    root.setLevel(level)
    # uvicorn's own access log is replaced by ours (it has no request id and no route template).
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.access").handlers = []
    logging.getLogger("uvicorn.access").propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
