"""JWT access tokens (PyJWT, HS256 pinned) and opaque API keys / refresh tokens.

API keys look like ``aiaas_<43 url-safe chars>``; only their SHA-256 and a visible prefix are
stored. Access tokens carry the user, the organization and the user's ``token_version``;
the role is always read from the database, never trusted from the token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

API_KEY_PREFIX = "aiaas_"
ALGORITHM = "HS256"
ISSUER = "aiaas"
AUDIENCE = "aiaas-api"
MAX_TOKEN_LENGTH = 4096


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """Return ``(key, visible_prefix, sha256)`` for a fresh API key."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:14], sha256_hex(key)


def new_refresh_token() -> tuple[str, str]:
    token = "rt_" + secrets.token_urlsafe(32)
    return token, sha256_hex(token)


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    org_id: str
    token_version: int


def issue_access_token(
    key: bytes, *, user_id: str, org_id: str, token_version: int, ttl_s: int
) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id,
        "org": org_id,
        "ver": token_version,
        "typ": "access",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(seconds=ttl_s),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def decode_access_token(key: bytes, token: str) -> AccessClaims | None:
    """The token's claims, or None for any invalid token (no reason given to the caller)."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access":
        return None
    sub, org, ver = claims.get("sub"), claims.get("org"), claims.get("ver")
    if not isinstance(sub, str) or not isinstance(org, str) or not isinstance(ver, int):
        return None
    return AccessClaims(user_id=sub, org_id=org, token_version=ver)
