"""What every data use case needs besides the session and the caller: one object per app."""

from __future__ import annotations

from dataclasses import dataclass

from aiaas.data.gates import DataGates
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore


@dataclass(frozen=True)
class DataContext:
    """The data domain's share of the app state, built once in ``create_app``.

    ``secret_key`` is the platform secret already resolved by the app (PII hashing keys are
    derived from it per organization); nothing in the data domain reads it from disk again.
    """

    settings: Settings
    store: ArtifactStore
    gates: DataGates
    secret_key: bytes

    @classmethod
    def build(cls, settings: Settings, store: ArtifactStore, secret_key: bytes) -> DataContext:
        return cls(settings, store, DataGates.from_settings(settings.data), secret_key)
