"""DuckDB helpers shared by ingest, profiling, recipes and the SQL sandbox.

Every connection here is a fresh in-memory database (never DuckDB's module-level default
connection), created locked down: extensions cannot be installed or auto-loaded, Python
replacement scans are off, and once the caller-given paths are allowed, external access is
switched off and the configuration locked — in that order (SECURITY-CHECKLIST Part 2).
Identifiers and string literals that reach generated SQL go through :func:`qident` /
:func:`qstr`; values are bound as parameters wherever DuckDB allows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb


def qident(name: str) -> str:
    """Quote an identifier for DuckDB (double quotes, inner quotes doubled)."""
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


def qstr(value: str) -> str:
    """Quote a string literal for DuckDB (single quotes, inner quotes doubled)."""
    if "\x00" in value:
        raise ValueError("literal contains NUL")
    return "'" + value.replace("'", "''") + "'"


def qlist(paths: Iterable[str | Path]) -> str:
    return "[" + ", ".join(qstr(str(p)) for p in paths) + "]"


def connect(
    *,
    allowed_directories: Sequence[str | Path] = (),
    allowed_paths: Sequence[str | Path] = (),
    memory_limit: str,
    threads: int,
    temp_directory: str | Path | None = None,
    max_temp_bytes: int = 0,
    max_execution_ms: int = 0,
    preserve_insertion_order: bool = True,
) -> duckdb.DuckDBPyConnection:
    """A locked-down in-memory connection that can touch only the given files/directories."""
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    statements = []
    if allowed_directories:
        dirs = [str(d).rstrip("/") + "/" for d in allowed_directories]
        statements.append(f"SET allowed_directories={qlist(dirs)}")
    if allowed_paths:
        statements.append(f"SET allowed_paths={qlist(allowed_paths)}")
    statements += [
        "SET autoinstall_known_extensions=false",
        "SET autoload_known_extensions=false",
        "SET allow_community_extensions=false",
        "SET python_enable_replacements=false",
        "SET enable_external_file_cache=false",
        "SET enable_progress_bar=false",
        f"SET memory_limit={qstr(memory_limit)}",
        f"SET threads={int(threads)}",
        f"SET preserve_insertion_order={'true' if preserve_insertion_order else 'false'}",
    ]
    if temp_directory is not None:
        statements.append(f"SET temp_directory={qstr(str(temp_directory))}")
        statements.append(f"SET max_temp_directory_size='{int(max_temp_bytes)}B'")
    else:
        statements.append("SET temp_directory=''")
    if max_execution_ms:
        statements.append(f"SET max_execution_time={int(max_execution_ms)}")
    statements += ["SET enable_external_access=false", "SET lock_configuration=true"]
    try:
        for stmt in statements:
            con.execute(stmt)
    except Exception:
        con.close()
        raise
    return con


_LOCKED = {
    "enable_external_access": "false",
    "lock_configuration": "true",
    "autoinstall_known_extensions": "false",
    "autoload_known_extensions": "false",
    "allow_community_extensions": "false",
    "allow_unsigned_extensions": "false",
    "python_enable_replacements": "false",
}


class SandboxMisconfigured(RuntimeError):
    """The connection is not locked down as expected: refuse to run tenant SQL on it."""


def verify_locked(con: duckdb.DuckDBPyConnection, allowed_paths: Sequence[str | Path]) -> None:
    """Pre-flight check of the effective settings before any tenant SQL runs (SQL-02).

    Guards against an upgrade changing a default or the setup order going wrong (e.g.
    ``allowed_paths`` set after the external-access switch): any difference refuses.
    """
    names = [*_LOCKED, "allowed_directories", "allowed_paths"]
    placeholders = ", ".join("?" for _ in names)
    rows = con.execute(
        f"SELECT name, value FROM duckdb_settings() WHERE name IN ({placeholders})", names
    ).fetchall()
    actual = {str(name): str(value).lower() for name, value in rows}
    for name, expected in _LOCKED.items():
        if actual.get(name) != expected:
            raise SandboxMisconfigured(f"{name} is {actual.get(name)!r}, expected {expected!r}")
    if actual.get("allowed_directories") not in ("[]", ""):
        raise SandboxMisconfigured("allowed_directories must be empty for tenant SQL")
    listed = actual.get("allowed_paths", "")
    for path in allowed_paths:
        if str(path).lower().rsplit("/", 1)[-1] not in listed:
            raise SandboxMisconfigured(f"allowed_paths lacks {path}")


_PATH_RE = re.compile(r"(?:[A-Za-z]:)?/[^\s\"'`,)/]+/[^\s\"'`,)]+")
_STOP = ("Possible", "LINE ", "  file =", "The search space", "* ")


def clean_error(exc: BaseException, *, replacements: dict[str, str] | None = None) -> str:
    """A DuckDB error message fit for a client: no server paths or raw lines, bounded."""
    text = str(exc)
    for old, new in (replacements or {}).items():
        text = text.replace(old, new)
    kept: list[str] = []
    for line in text.splitlines():
        if line.startswith(_STOP):
            break
        if not line.strip() or line.startswith("Original Line"):
            continue
        kept.append(line.strip())
    text = _PATH_RE.sub("<path>", " ".join(kept[:4]))
    return text[:400]
