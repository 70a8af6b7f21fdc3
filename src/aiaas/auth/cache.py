"""In-process state on the authentication hot path: the API-key cache and the login throttle.

An API key's principal (its *effective* role: the lower of the key's and its owner's) is
cached for ``ttl`` seconds after a database lookup. Revoking or transferring a key, and
changing or removing its owner's membership, drops the affected entries from this process's
cache at once; other replicas recompute from the database within ``ttl``.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiaas.auth.principal import Principal

_MAX_ENTRIES = 50_000
_MAX_THROTTLE_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    key_expires_at: datetime | None
    cached_until: float


class ApiKeyCache:
    """Principals of recently seen API keys, by key hash, with an index by key owner.

    A lookup that started before an invalidation must not put its (possibly stale) result
    back: callers take :meth:`generation` before reading the database and pass it to
    :meth:`put`, which ignores the entry if anything was invalidated in between.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def generation(self) -> int:
        return self._generation

    def get(self, key_hash: str) -> tuple[Principal, datetime | None] | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry.cached_until < self.clock():
            return None
        return entry.principal, entry.key_expires_at

    def put(
        self,
        key_hash: str,
        principal: Principal,
        key_expires_at: datetime | None,
        *,
        generation: int | None = None,
    ) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if generation is not None and generation != self._generation:
                return  # invalidated while it was being looked up
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
                self._by_owner.clear()
            self._drop(key_hash)
            self._entries[key_hash] = _Entry(principal, key_expires_at, self.clock() + self.ttl)
            if principal.user_id is not None:
                self._by_owner.setdefault(principal.user_id, set()).add(key_hash)

    def _drop(self, key_hash: str) -> None:
        entry = self._entries.pop(key_hash, None)
        if entry is not None and (owner := entry.principal.user_id) is not None:
            hashes = self._by_owner.get(owner)
            if hashes is not None:
                hashes.discard(key_hash)
                if not hashes:
                    del self._by_owner[owner]

    def invalidate(self, key_hash: str) -> None:
        with self._lock:
            self._generation += 1
            self._drop(key_hash)

    def invalidate_owner(self, user_id: str) -> None:
        """Drop every cached key that acts for ``user_id`` (role change, removal)."""
        with self._lock:
            self._generation += 1
            for key_hash in list(self._by_owner.pop(user_id, ())):
                self._entries.pop(key_hash, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._by_owner.clear()


@dataclass(slots=True)
class _Counter:
    limit: int
    failures: list[float] = field(default_factory=list)
    in_flight: int = 0
    level: int = 0
    blocked_until: float = 0.0


def client_address(host: str | None) -> str:
    """The throttling unit of a client: its IPv4 address, or its IPv6 /64 network."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        # One end user commonly holds a whole /64: counting single addresses would let them
        # rotate through 2^64 budgets.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LoginThrottle:
    """Failed logins per client address and per (account, address) — never per account
    alone, so nobody's failures can lock anyone else out of their own account.

    - An attempt is *reserved* before its password is checked, and attempts in flight count
      against the limit: concurrent guesses cannot all be checked past it.
    - An (account, address) pair may fail ``max_failures`` times per ``window_s``; an address
      ``address_factor`` times as often over all accounts (shared NATs).
    - A key that reaches its limit is blocked for ``base_s · 2^(n-1)`` seconds (capped at
      ``max_block_s``), n counting the blocks so far: every further failure, and every
      attempt refused while blocked, doubles the wait. After a block one probe is let through.
    - A success clears the (account, address) key only: logging into one's own account does
      not reset an address's count. A key quiet for its block plus a window is forgotten.
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        address_factor: int = 5,
        base_block_s: float | None = None,
        max_block_s: float | None = None,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.address_limit = max_failures * address_factor
        self.base_block_s = base_block_s if base_block_s is not None else max(1.0, window_s / 15)
        self.max_block_s = max_block_s if max_block_s is not None else 4 * window_s
        self._counters: OrderedDict[tuple[str, ...], _Counter] = OrderedDict()
        self._lock = threading.Lock()

    def _keys(self, account: str, address: str) -> list[tuple[tuple[str, ...], int]]:
        where = client_address(address)
        return [
            (("addr", where), self.address_limit),
            (("acct", account, where), self.max_failures),
        ]

    def _counter(self, key: tuple[str, ...], limit: int, now: float) -> _Counter:
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = _Counter(limit)
        else:
            self._counters.move_to_end(key)
        counter.failures = [t for t in counter.failures if now - t < self.window_s]
        return counter

    def _idle(self, counter: _Counter, now: float) -> bool:
        return (
            counter.in_flight == 0
            and not any(now - t < self.window_s for t in counter.failures)
            and now >= counter.blocked_until + self.window_s
        )

    def _evict(self, now: float) -> None:
        for _ in range(2):  # amortised: the least recently used keys, a couple per call
            if not self._counters:
                return
            key, counter = next(iter(self._counters.items()))
            if not self._idle(counter, now):
                break
            del self._counters[key]
        while len(self._counters) > _MAX_THROTTLE_KEYS:
            self._counters.popitem(last=False)

    def _may_try(self, counter: _Counter, now: float) -> bool:
        if now < counter.blocked_until:
            return False
        if len(counter.failures) + counter.in_flight < counter.limit:
            return True
        # At the limit with its block over: one probe at a time.
        return len(counter.failures) >= counter.limit and counter.in_flight == 0

    def _block(self, counter: _Counter, now: float) -> None:
        counter.level += 1
        wait = min(self.max_block_s, self.base_block_s * 2 ** min(counter.level - 1, 64))
        counter.blocked_until = max(counter.blocked_until, now + wait)

    def reserve(self, account: str, address: str) -> int | None:
        """Reserve one attempt; None when granted, else the seconds to wait (``Retry-After``).

        A granted attempt must be :meth:`release`\\ d once its outcome is known.
        """
        now = self.clock()
        with self._lock:
            self._evict(now)
            counters = [
                self._counter(key, limit, now) for key, limit in self._keys(account, address)
            ]
            refused = [c for c in counters if not self._may_try(c, now)]
            if refused:
                for counter in refused:
                    self._block(counter, now)
                wait = max(c.blocked_until for c in refused) - now
                return max(1, math.ceil(round(wait, 3)))  # no 961 s for 960 s of float noise
            for counter in counters:
                counter.in_flight += 1
            return None

    def release(self, account: str, address: str, *, success: bool) -> None:
        now = self.clock()
        with self._lock:
            for key, _limit in self._keys(account, address):
                counter = self._counters.get(key)
                if counter is None:  # evicted meanwhile
                    continue
                counter.in_flight = max(0, counter.in_flight - 1)
                counter.failures = [t for t in counter.failures if now - t < self.window_s]
                if success:
                    if key[0] == "acct":
                        counter.failures.clear()
                        counter.level, counter.blocked_until = 0, 0.0
                    continue
                counter.failures.append(now)
                if len(counter.failures) >= counter.limit:
                    self._block(counter, now)
