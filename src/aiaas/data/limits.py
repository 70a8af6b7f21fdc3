"""The one place the data engines' limits are built, from the settings.

The engine dataclasses (:class:`~aiaas.data.ingest.IngestLimits`,
:class:`~aiaas.data.ingest_worker.Isolation`, :class:`~aiaas.data.profile.ProfileLimits`,
:class:`~aiaas.data.sql.SqlLimits`) have no defaults for anything an operator can set: a
limit exists once, in :class:`aiaas.settings.DataSettings`, and reaches an engine only
through these functions. Tests build theirs the same way from ``Settings()``.
:class:`~aiaas.data.recipes.RecipeContext` also carries the organization's PII hashing key,
derived from the platform secret that the app resolved once.
"""

from __future__ import annotations

from aiaas.data.ingest import IngestLimits
from aiaas.data.ingest_worker import Isolation
from aiaas.data.pii import org_hash_key
from aiaas.data.profile import ProfileLimits
from aiaas.data.recipes import RecipeContext
from aiaas.data.sql import SqlLimits
from aiaas.data.sql_import import ImportLimits
from aiaas.settings import Settings


def ingest_limits(settings: Settings) -> IngestLimits:
    d = settings.data
    return IngestLimits(
        max_columns=d.max_columns,
        max_line_bytes=d.max_line_bytes,
        max_cell_bytes=d.max_cell_bytes,
        max_rows=d.max_rows,
        max_decompressed_bytes=d.max_decompressed_bytes,
        max_compression_ratio=d.max_compression_ratio,
        memory_limit=d.duckdb_memory_limit,
        threads=d.duckdb_threads,
        preserve_order=d.ingest_preserve_order,
    )


def ingest_isolation(settings: Settings) -> Isolation:
    d = settings.data
    return Isolation(
        timeout_s=d.ingest_timeout_s,
        address_bytes=d.ingest_address_space_bytes,
        sandbox=d.ingest_sandbox,
    )


def profile_limits(settings: Settings) -> ProfileLimits:
    d = settings.data
    return ProfileLimits(
        memory_limit=d.duckdb_memory_limit,
        threads=d.duckdb_threads,
        exact_rows=d.profile_exact_rows,
    )


def sql_limits(settings: Settings) -> SqlLimits:
    d = settings.data
    return SqlLimits(
        timeout_s=d.sql_timeout_s,
        max_rows=d.sql_max_rows,
        max_bytes=d.sql_max_bytes,
        memory_limit=d.sql_memory_limit,
        threads=d.sql_threads,
        address_bytes=d.sql_address_space_bytes,
    )


def import_limits(settings: Settings) -> ImportLimits:
    d = settings.data
    return ImportLimits(
        allowed_hosts=tuple(d.import_allowed_hosts),
        max_rows=d.import_max_rows,
        statement_timeout_s=d.import_statement_timeout_s,
    )


def recipe_context(settings: Settings, secret_key: bytes, org_id: str) -> RecipeContext:
    d = settings.data
    return RecipeContext(
        hash_key=org_hash_key(secret_key, org_id),
        memory_limit=d.duckdb_memory_limit,
        threads=d.duckdb_threads,
    )
