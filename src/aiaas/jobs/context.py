"""What every jobs use case needs besides the session and the caller: one object per app."""

from __future__ import annotations

from dataclasses import dataclass

from aiaas.jobs.limits import queue_policy
from aiaas.jobs.queue import QueuePolicy
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore


@dataclass(frozen=True)
class JobsContext:
    """The jobs domain's share of the app state (and of a worker), built once."""

    settings: Settings
    store: ArtifactStore
    policy: QueuePolicy

    @classmethod
    def build(cls, settings: Settings, store: ArtifactStore) -> JobsContext:
        return cls(settings, store, queue_policy(settings))
