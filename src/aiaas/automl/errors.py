"""Typed errors of the AutoML library.

The library is pure (it imports nothing else of aiaas), so it has its own small tree::

    AutoMLError(ValueError)          base class; ``code`` is a stable machine-readable name
    ├── InvalidData                  unusable feature table (too few rows, no usable column …)
    ├── InvalidTarget                missing/degenerate target column (single class, inf …)
    ├── InvalidConfig                bad argument (unknown task/metric, budget <= 0 …)
    ├── SearchFailed                 no trial finished inside the time budget
    └── ArtifactError                a saved model cannot be written or read
        └── ArtifactIntegrityError   a saved model's files do not match their manifest

Callers (the platform's job runner, the CLI) map these to their own errors; every message is
one line and safe to show to the user.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ArtifactError",
    "ArtifactIntegrityError",
    "AutoMLError",
    "InvalidConfig",
    "InvalidData",
    "InvalidTarget",
    "SearchFailed",
]


class AutoMLError(ValueError):
    """Base class of every error the AutoML library raises on purpose."""

    code: ClassVar[str] = "automl_error"


class InvalidData(AutoMLError):
    """The feature table cannot be used for training or prediction."""

    code = "invalid_data"


class InvalidTarget(AutoMLError):
    """The target column is missing or cannot be learned."""

    code = "invalid_target"


class InvalidConfig(AutoMLError):
    """An argument of ``fit``/``predict`` is not valid."""

    code = "invalid_config"


class SearchFailed(AutoMLError):
    """The search produced no usable model (e.g. every trial failed or the budget was too small)."""

    code = "search_failed"


class ArtifactError(AutoMLError):
    """A saved model cannot be written or read."""

    code = "artifact_error"


class ArtifactIntegrityError(ArtifactError):
    """A saved model's files do not match the SHA-256 hashes of its manifest (tampered/corrupt)."""

    code = "artifact_integrity"
