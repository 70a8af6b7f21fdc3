"""Import a query result from an external SQL database (PostgreSQL) into a JSON Lines file.

The URL is a SQLAlchemy URL, but only its structured parts are used: dialect (allow-list),
user, password, host, port, database. Any query-string parameter is refused — that is where
libpq's file-reading and socket options live (``host=/var/run/postgresql``, ``sslkey=``,
``passfile=``, ``service=``). The host must be on the configured allow-list (names, IPs or
CIDR networks; every address it resolves to is checked) and the connection is pinned to the
checked address (``hostaddr``), so DNS rebinding cannot redirect it. The session is
read-only with connect and statement timeouts; rows are streamed with a server-side cursor
and capped. Connection failures all read the same, so the import is no port scanner.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, CursorResult, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from aiaas.errors import InvalidInput, PayloadTooLarge

_DRIVERS = {"postgresql": "postgresql+psycopg", "postgresql+psycopg": "postgresql+psycopg"}


@dataclass(frozen=True)
class ImportLimits:
    allowed_hosts: Sequence[str] = ()
    max_rows: int = 10_000_000
    max_bytes: int = 2 * 1024 * 1024 * 1024
    connect_timeout_s: int = 5
    statement_timeout_s: int = 300


def _allowed(host: str, addresses: list[str], allow: Sequence[str]) -> bool:
    names = {a.lower() for a in allow}
    if host.lower() in names:
        return True
    nets = []
    for entry in allow:
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    if not addresses or not nets:
        return False
    return all(any(ipaddress.ip_address(a) in n for n in nets) for a in addresses)


def validate_url(raw: str, limits: ImportLimits) -> tuple[URL, str]:
    """Return the URL to connect to and the pinned IP address, or raise 422."""
    if raw.lower().startswith(("file:", "sqlite", "duckdb")) or "\x00" in raw:
        raise InvalidInput("only PostgreSQL URLs are accepted (postgresql://user@host/db)")
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise InvalidInput("the database URL cannot be parsed") from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise InvalidInput(f"database dialect {url.drivername!r} is not allowed; use postgresql")
    if url.query:
        raise InvalidInput("URL query parameters are not allowed (host, port, database only)")
    host = url.host or ""
    if not host or host.startswith(("/", "@")) or "," in host or "%" in host:
        raise InvalidInput("a TCP host name is required (no sockets or host lists)")
    if not url.database:
        raise InvalidInput("the URL must name a database")
    if not limits.allowed_hosts:
        raise InvalidInput("SQL import is disabled: no database hosts are allowed")
    port = url.port or 5432
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise InvalidInput(f"host {host!r} is not on the import allow-list") from None
    addresses = sorted({str(i[4][0]) for i in infos})
    if not _allowed(host, addresses, limits.allowed_hosts):
        raise InvalidInput(f"host {host!r} is not on the import allow-list")
    return url.set(drivername=driver, port=port), addresses[0]


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def import_query(raw_url: str, query: str, dest: Path, limits: ImportLimits) -> int:
    """Run ``query`` on the database at ``raw_url``; write rows to ``dest`` as JSON Lines."""
    url, address = validate_url(raw_url, limits)
    if not query.strip():
        raise InvalidInput("the query is empty")
    engine = _engine(url, address, limits)
    try:
        try:
            conn = engine.connect()
        except SQLAlchemyError:
            raise InvalidInput("could not connect to the database") from None
        with conn, dest.open("wb") as out:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            try:
                result = conn.execution_options(stream_results=True, yield_per=5000).execute(
                    text(query)
                )
            except DBAPIError as exc:
                raise _query_failed(exc) from None
            rows = _write_rows(result, out, limits)
    except DBAPIError as exc:
        raise _query_failed(exc) from None
    finally:
        engine.dispose()
    if rows == 0:
        raise InvalidInput("the query returned no rows")
    return rows


def _engine(url: URL, address: str, limits: ImportLimits) -> Engine:
    """An engine pinned to the checked ``address``: no pool, no password file, and a
    read-only session with a statement timeout."""
    return create_engine(
        url,
        poolclass=NullPool,
        connect_args={
            "hostaddr": address,
            "connect_timeout": limits.connect_timeout_s,
            "passfile": "/dev/null",
            "application_name": "aiaas-import",
            "options": (
                f"-c statement_timeout={int(limits.statement_timeout_s * 1000)} "
                "-c default_transaction_read_only=on"
            ),
        },
    )


def _write_rows(result: CursorResult[Any], out: BinaryIO, limits: ImportLimits) -> int:
    """Stream the result to ``out``, one JSON object per line, within the row and byte caps."""
    if not result.returns_rows:
        raise InvalidInput("the query returned no result set")
    keys = list(result.keys())
    if len(set(keys)) != len(keys):
        raise InvalidInput("the query returns duplicate column names")
    rows = nbytes = 0
    for partition in result.partitions():
        for row in partition:
            line = orjson.dumps(
                dict(zip(keys, row, strict=True)),
                default=_default,
                option=orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY,
            )
            out.write(line)
            out.write(b"\n")
            rows += 1
            nbytes += len(line) + 1
            if rows > limits.max_rows:
                raise PayloadTooLarge(f"the query returns more than {limits.max_rows} rows")
            if nbytes > limits.max_bytes:
                raise PayloadTooLarge(f"the query result exceeds {limits.max_bytes} bytes")
    return rows


def _query_failed(exc: DBAPIError) -> InvalidInput:
    first = str(exc.orig).splitlines()[0] if exc.orig else "query failed"
    return InvalidInput(f"the query failed: {first[:200]}")
