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
    memory_limit: str = "1GB",
    threads: int = 2,
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
