"""What each worker keeps in memory: the endpoints (by revision) and the loaded models.

- :class:`EndpointCache` holds an immutable view of every endpoint, replaced as a whole:
  a request takes one view and sees one revision from start to end. A background thread
  re-reads ``(id, revision)`` of all endpoints every ``refresh_s`` and reloads only those
  that changed, so a change reaches every worker of every replica within that time, and
  a prediction never queries the database. A name this worker does not know triggers a
  refresh first, so a deploy is servable as soon as it is answered (a request for a name
  that does not exist costs one small query, as a 404 does in any API).
- :class:`ModelCache` loads each version once per worker (single flight), bounded by an
  estimate of memory; the least recently used are unloaded above ``max_bytes``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio
import structlog
from sqlalchemy.orm import Session

from aiaas.serving import predictor as predictors
from aiaas.serving.predictor import ModelLoadError, Predictor
from aiaas.serving.service import load_views, revisions
from aiaas.serving.views import EndpointView, VersionView
from aiaas.storage import ArtifactStore

log = structlog.get_logger("aiaas.serving")

_FAILED_RETRY_S = 5.0


class EndpointCache:
    def __init__(
        self,
        sessions: Callable[[], Session],
        *,
        refresh_s: float,
        on_change: Callable[[list[EndpointView]], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self.refresh_s = refresh_s
        self._on_change = on_change
        self._by_name: dict[tuple[str, str], EndpointView] = {}
        self._by_id: dict[str, EndpointView] = {}
        self._revisions: dict[str, int] = {}
        self._lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, org_id: str, name: str) -> EndpointView | None:
        """The view this worker holds now (no refresh)."""
        return self._by_name.get((org_id, name.lower()))

    async def lookup(self, org_id: str, name: str) -> EndpointView | None:
        """The view of ``org_id``'s endpoint ``name``; on a miss, a refresh first (a deploy
        this worker has not seen), in a worker thread: the loop never waits for the database."""
        found = self._by_name.get((org_id, name.lower()))
        if found is not None:
            return found
        # it reads the revisions after the request arrived: it sees a deploy
        await anyio.to_thread.run_sync(self.refresh)
        return self._by_name.get((org_id, name.lower()))

    def refresh(self) -> None:
        """Re-read the revisions; reload the endpoints that changed, drop the deleted ones."""
        with self._lock:
            with self._sessions() as session:
                current = revisions(session)
                changed = [i for i, r in current.items() if self._revisions.get(i) != r]
                fresh = load_views(session, changed) if changed else []
            if not changed and len(current) == len(self._revisions):
                return
            by_id = {i: v for i, v in self._by_id.items() if i in current and i not in changed}
            by_id.update({v.id: v for v in fresh})
            self._by_id = by_id
            self._by_name = {(v.org_id, v.name.lower()): v for v in by_id.values()}
            # an endpoint whose versions are gone has no view; it is retried on its next change
            self._revisions = {i: current[i] for i in current if i in by_id or i in changed}
        if fresh and self._on_change is not None:
            self._on_change(fresh)

    def start(self) -> None:
        """Refresh now, then every ``refresh_s`` in a daemon thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="serving-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # the database may be restarting: keep serving
                log.warning("endpoint_refresh_failed", error=str(exc)[:300])
            self._stop.wait(self.refresh_s)


class ModelCache:
    def __init__(self, store: ArtifactStore, *, threads: int, max_bytes: int) -> None:
        self.store = store
        self.threads = threads
        self.max_bytes = max_bytes
        self._loaded: OrderedDict[str, Predictor] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.loads = 0
        self.last_load_s = 0.0

    def get(self, version: VersionView) -> Predictor | None:
        """The loaded predictor, or None (then :meth:`load` it, off the event loop)."""
        found = self._loaded.get(version.id)
        if found is not None and self._loaded and next(reversed(self._loaded)) != version.id:
            try:
                self._loaded.move_to_end(version.id)
            except KeyError:  # evicted meanwhile
                pass
        return found

    def load(self, version: VersionView) -> Predictor:
        """Load ``version`` once (concurrent callers wait for the same load)."""
        found = self._loaded.get(version.id)
        if found is not None:
            return found
        with self._lock:
            gate = self._loading.setdefault(version.id, threading.Lock())
        with gate:
            found = self._loaded.get(version.id)
            if found is not None:
                return found
            failed = self._failed.get(version.id)
            if failed is not None and time.monotonic() - failed[0] < _FAILED_RETRY_S:
                raise ModelLoadError(failed[1])
            started = time.perf_counter()
            try:
                loaded = predictors.load(self.store, version, threads=self.threads)
            except Exception as exc:
                reason = str(exc)[:300] or type(exc).__name__
                self._failed[version.id] = (time.monotonic(), reason)
                log.warning("model_load_failed", version_id=version.id, error=reason)
                raise ModelLoadError(reason) from exc
            self.last_load_s = time.perf_counter() - started
            self.loads += 1
            self._failed.pop(version.id, None)
            self._insert(loaded)
            log.info(
                "model_loaded",
                version_id=version.id,
                model=version.model_name,
                version=version.number,
                seconds=round(self.last_load_s, 3),
            )
        with self._lock:
            self._loading.pop(version.id, None)
        return loaded

    def _insert(self, loaded: Predictor) -> None:
        with self._lock:
            loaded_now = OrderedDict(self._loaded)
            loaded_now[loaded.id] = loaded
            total = sum(p.nbytes for p in loaded_now.values())
            while total > self.max_bytes and len(loaded_now) > 1:
                _, evicted = loaded_now.popitem(last=False)
                total -= evicted.nbytes
                log.info("model_unloaded", version_id=evicted.id, reason="memory")
            self._loaded = loaded_now  # swapped whole: readers never see a half-edited dict
            self.bytes = total

    def __len__(self) -> int:
        return len(self._loaded)
