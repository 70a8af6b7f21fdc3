"""In-process caches on the authentication hot path.

An API key's principal is cached for ``ttl`` seconds after a database lookup. Revoking a key
drops it from this process's cache at once; other replicas notice within ``ttl``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiaas.auth.principal import Principal

_MAX_ENTRIES = 50_000


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    key_expires_at: datetime | None
    cached_until: float


class ApiKeyCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> tuple[Principal, datetime | None] | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry.cached_until < self.clock():
            return None
        return entry.principal, entry.key_expires_at

    def put(self, key_hash: str, principal: Principal, key_expires_at: datetime | None) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = _Entry(principal, key_expires_at, self.clock() + self.ttl)

    def invalidate(self, key_hash: str) -> None:
        with self._lock:
            self._entries.pop(key_hash, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class LoginThrottle:
    """Counts failed logins per account and per client address in a sliding window."""

    def __init__(
        self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < self.window_s]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def retry_after(self, *keys: str) -> int | None:
        """Seconds until a blocked key may try again, or None when none is blocked."""
        now = self.clock()
        with self._lock:
            waits = [
                self.window_s - (now - times[0])
                for key in keys
                if len(times := self._recent(key, now)) >= self.max_failures
            ]
        return max(1, int(max(waits)) + 1) if waits else None

    def fail(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                self._recent(key, now)
                self._failures.setdefault(key, []).append(now)

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
