"""Admission to the data domain's heavy work: ingest slots (fair per organization) and SQL.

Conversion (in its ingest process), profiling, appends, recipes and imports each hold a
DuckDB connection with its own memory limit; without a cap, N parallel requests would use N
times that. The gates are part of the app's state (one :class:`DataGates` per app, built from
the settings), never module globals, so their limits are exactly the app's settings.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiaas.errors import TooManyRequests
from aiaas.settings import DataSettings


class FairGate:
    """At most ``total`` holders at once, at most ``per_key`` of them with the same key.

    Waiting requests are admitted fairly across keys (organizations): each waiter gets a
    *round* when it arrives — the current round for a key with nothing running or waiting,
    else one after that key's previous request — and a free slot goes to the waiter with the
    lowest (round, arrival) whose key is below ``per_key``. So one key's second request never
    goes before another key's first, a key that is at its cap never blocks the others, and a
    new key is served as soon as a slot is free (round-robin; no key can starve another).
    Thread-safe; waiters block on one condition variable.
    """

    def __init__(self, total: int, per_key: int) -> None:
        if total < 1 or not 1 <= per_key <= total:
            raise ValueError(f"need 1 <= per_key <= total (got {per_key}, {total})")
        self.total, self.per_key = total, per_key
        self._cond = threading.Condition()
        self._running: dict[str, int] = {}
        self._waiting: list[_Waiter] = []
        self._next_round: dict[str, int] = {}
        self._round = 0  # the round of the waiter admitted last
        self._arrivals = itertools.count()

    def acquire(self, key: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a slot; False if none became free."""
        deadline = time.monotonic() + timeout
        with self._cond:
            round_ = max(self._round, self._next_round.get(key, 0))
            self._next_round[key] = round_ + 1
            waiter = _Waiter(key, round_, next(self._arrivals))
            self._waiting.append(waiter)
            self._dispatch()
            try:
                while not waiter.admitted:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._waiting.remove(waiter)
                        self._forget(key)
                        return False
                    self._cond.wait(remaining)
            except BaseException:  # interrupted while waiting: give back what we may hold
                if waiter.admitted:
                    self._release(key)
                else:
                    self._waiting.remove(waiter)
                    self._forget(key)
                raise
            return True

    def release(self, key: str) -> None:
        with self._cond:
            self._release(key)

    @contextmanager
    def slot(self, key: str, timeout: float) -> Iterator[bool]:
        """``with gate.slot(key, t) as ok:`` — ``ok`` says whether a slot was obtained."""
        ok = self.acquire(key, timeout)
        try:
            yield ok
        finally:
            if ok:
                self.release(key)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{"running": {key: n}, "waiting": {key: n}}`` (for tests, logs and metrics)."""
        with self._cond:
            waiting: dict[str, int] = {}
            for w in self._waiting:
                waiting[w.key] = waiting.get(w.key, 0) + 1
            return {"running": dict(self._running), "waiting": waiting}

    def _release(self, key: str) -> None:
        count = self._running.get(key, 0)
        if count <= 0:
            raise RuntimeError(f"release of {key!r} without a slot")
        if count == 1:
            del self._running[key]
        else:
            self._running[key] = count - 1
        self._forget(key)
        self._dispatch()

    def _forget(self, key: str) -> None:
        """A key with nothing running or waiting starts at the current round next time."""
        if key not in self._running and not any(w.key == key for w in self._waiting):
            self._next_round.pop(key, None)

    def _dispatch(self) -> None:
        admitted = False
        while sum(self._running.values()) < self.total:
            eligible = [w for w in self._waiting if self._running.get(w.key, 0) < self.per_key]
            if not eligible:
                break
            chosen = min(eligible, key=lambda w: (w.round, w.arrival))
            self._waiting.remove(chosen)
            self._running[chosen.key] = self._running.get(chosen.key, 0) + 1
            self._round = max(self._round, chosen.round)
            chosen.admitted = admitted = True
        if admitted:
            self._cond.notify_all()


@dataclass
class _Waiter:
    key: str
    round: int
    arrival: int
    admitted: bool = False


class SqlGate:
    """At most ``per_org`` queries of one organization at once; one more is refused (429),
    not queued: a query holds a process and a spool file, and a client can simply retry."""

    def __init__(self, per_org: int) -> None:
        if per_org < 1:
            raise ValueError(f"need per_org >= 1 (got {per_org})")
        self.per_org = per_org
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def try_acquire(self, org_id: str) -> bool:
        with self._lock:
            count = self._running.get(org_id, 0)
            if count >= self.per_org:
                return False
            self._running[org_id] = count + 1
            return True

    def release(self, org_id: str) -> None:
        with self._lock:
            count = self._running.pop(org_id)
            if count > 1:
                self._running[org_id] = count - 1

    @contextmanager
    def slot(self, org_id: str) -> Iterator[None]:
        if not self.try_acquire(org_id):
            raise TooManyRequests(f"at most {self.per_org} queries per organization run at once")
        try:
            yield
        finally:
            self.release(org_id)


@dataclass(frozen=True)
class DataGates:
    """The app's admission gates for heavy data work (see the module docstring)."""

    ingest: FairGate
    sql: SqlGate
    settings: DataSettings  # the queue timeout is read per call; the sizes are fixed here

    @classmethod
    def from_settings(cls, d: DataSettings) -> DataGates:
        return cls(
            ingest=FairGate(d.max_concurrent_ingests, d.ingest_slots_per_org),
            sql=SqlGate(d.sql_max_concurrent_per_org),
            settings=d,
        )

    @contextmanager
    def ingest_slot(self, org_id: str) -> Iterator[None]:
        """Hold one ingest slot for ``org_id`` (429 after ``ingest_queue_timeout_s``).

        The cap per organization keeps at least one slot for everyone else.
        """
        with self.ingest.slot(org_id, self.settings.ingest_queue_timeout_s) as ok:
            if not ok:
                raise TooManyRequests("too many uploads and transforms in progress; retry later")
            yield
