"""Keyset pagination with opaque, signed cursors (newest first).

A cursor encodes the last row's ``(created_at, id)`` and an HMAC over it, so a client cannot
forge a position; it holds nothing another organization could use, and every page query is
still scoped by the caller's organization.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from aiaas.errors import BadRequest

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of ``T``. A service returns ``Page[OrmModel]``; the route declares
    ``response_model=Page[XRead]``, which reads the ORM objects by attribute."""

    model_config = ConfigDict(arbitrary_types_allowed=True)  # T may be an ORM class
    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None
    key: bytes


def _sign(key: bytes, payload: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()[:16]).decode()


def encode_cursor(key: bytes, created_at: datetime, row_id: str) -> str:
    payload = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_sign(key, payload)}"


def decode_cursor(key: bytes, cursor: str) -> tuple[datetime, str]:
    try:
        body, sig = cursor.split(".", 1)
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if not hmac.compare_digest(sig, _sign(key, payload)):
            raise ValueError("bad signature")
        created, row_id = json.loads(payload)
        return datetime.fromisoformat(created), str(row_id)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise BadRequest("invalid pagination cursor") from exc


def paginate(session: Session, stmt: Select[Any], params: PageParams, model: Any) -> Page[Any]:
    """One page of ``stmt`` (a select of ``model``), ordered by ``created_at, id`` descending."""
    if params.cursor:
        created_at, row_id = decode_cursor(params.key, params.cursor)
        stmt = stmt.where(
            or_(
                model.created_at < created_at,
                and_(model.created_at == created_at, model.id < row_id),
            )
        )
    stmt = stmt.order_by(model.created_at.desc(), model.id.desc()).limit(params.limit + 1)
    rows = list(session.scalars(stmt))
    next_cursor = None
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        last = rows[-1]
        next_cursor = encode_cursor(params.key, last.created_at, last.id)
    return Page[Any](items=rows, next_cursor=next_cursor)
