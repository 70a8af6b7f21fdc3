"""Turn an uploaded file into one normalised Parquet file, with bounded memory.

Pipeline (pure: no DB, no HTTP, no settings import):

1. sniff the first bytes: gzip is decompressed to a sibling file in a streamed loop that
   enforces an absolute size cap and a compression-ratio cap (gzip bombs → 413); zip and other
   archives, and binary junk, are refused (415);
2. decide the format from the content (Parquet magic, JSON object/array, else delimited text)
   and, for text, the encoding (BOM, UTF-8 check, Latin-1 fallback), delimiter, quote and
   header — each overridable;
3. read the header record in Python to enforce the column cap and refuse duplicate names
   *before* DuckDB sees a 100,000-column file;
4. convert with DuckDB ``COPY (SELECT …) TO … (FORMAT parquet)`` under a memory limit, on a
   locked connection that may only touch the work directory. Nested, binary and other exotic
   types are normalised to text; decimals to double.

Every failure is an :class:`~aiaas.errors.AiaasError` (4xx) with a message naming the problem;
the caller owns the work directory and deletes it on every path.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import errno
import gzip
import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb

from aiaas.data.duck import clean_error, connect, qident, qstr
from aiaas.data.types import FLOAT_TYPES, STORED_INT_TYPES, WIDE_INT_TYPES
from aiaas.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

MiB = 1024 * 1024
OUTPUT_NAME = "data.parquet"  # convert_to_parquet writes work_dir / OUTPUT_NAME
Format = Literal["csv", "parquet", "jsonl"]
Encoding = Literal["utf-8", "utf-16", "latin-1"]

_CHUNK = 4 * MiB
csv.field_size_limit(2**31 - 1)  # our own byte limits apply before the csv module sees a record
_SAMPLE = 256 * 1024
_DELIMITERS = (",", "\t", ";", "|")
_SAMPLED = "sample_size=20480"  # rows the type sniffer reads (DuckDB's default)
_FULL_SCAN = "sample_size=-1"  # every row; used only when a later value broke a sniffed type
_LABELS: dict[Format, str] = {"csv": "CSV", "jsonl": "JSON", "parquet": "Parquet"}
_NOT_RECORDS = "JSON input must be objects (records): one object per line, or one array of objects"


@dataclass(frozen=True)
class IngestLimits:
    """Caps applied while converting one file (built by :mod:`aiaas.data.limits`)."""

    max_columns: int
    max_line_bytes: int
    max_cell_bytes: int
    max_rows: int
    max_decompressed_bytes: int
    max_compression_ratio: float
    memory_limit: str
    threads: int
    preserve_order: bool


@dataclass(frozen=True)
class IngestOptions:
    """Client overrides; ``None`` means detect."""

    format: Format | None = None
    delimiter: str | None = None
    quote: str | None = None
    escape: str | None = None
    header: bool | None = None
    encoding: Encoding | None = None


@dataclass
class IngestResult:
    parquet_path: Path
    row_count: int
    columns: list[tuple[str, str]]
    source_format: Format
    compression: str | None
    detected: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- sniffing


def _read_head(path: Path, n: int = _SAMPLE) -> bytes:
    with path.open("rb") as handle:
        return handle.read(n)


def gunzip_bounded(src: Path, dest: Path, limits: IngestLimits) -> int:
    """Decompress ``src`` (gzip, possibly multi-member) into ``dest`` with size/ratio caps."""
    compressed = max(src.stat().st_size, 1)
    total = 0
    try:
        with gzip.open(src, "rb") as zin, dest.open("wb") as out:
            while chunk := zin.read(_CHUNK):
                total += len(chunk)
                if total > limits.max_decompressed_bytes:
                    raise PayloadTooLarge(
                        f"decompressed size exceeds {limits.max_decompressed_bytes} bytes"
                    )
                if total > 64 * MiB and total / compressed > limits.max_compression_ratio:
                    raise PayloadTooLarge(
                        "compression ratio exceeds "
                        f"{limits.max_compression_ratio:g}:1 (possible gzip bomb)"
                    )
                out.write(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.EFBIG, errno.ENOSPC):
            raise  # our write failed (file size limit, disk full), not the input
        raise InvalidInput(f"the gzip stream is corrupt: {type(exc).__name__}") from None
    return total


def detect_format(head: bytes, filename: str | None) -> Format:
    """Decide the format from content (magic bytes first; the name only breaks ties)."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith((b"PK\x03\x04", b"7z\xbc\xaf", b"Rar!", b"BZh", b"\xfd7zXZ")):
        raise UnsupportedMediaType("archives are not supported; upload CSV, Parquet or JSON Lines")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "csv"  # UTF-16 text; only delimited text is accepted in UTF-16
    if b"\x00" in head:
        raise UnsupportedMediaType("the file looks binary, not CSV, Parquet or JSON Lines")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    name = (filename or "").lower().removesuffix(".gz")
    if text.startswith((b"{", b"[")) or name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    control = sum(1 for b in head[:4096] if b < 9 or 13 < b < 32)
    if control > 8:
        raise UnsupportedMediaType("the file looks binary, not CSV, Parquet or JSON Lines")
    return "csv"


def detect_encoding(head: bytes, *, complete: bool) -> Encoding:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    sample = head
    if not complete:  # the sample may end inside a multi-byte character
        cut = sample.rfind(b"\n")
        sample = sample[: cut + 1] if cut > 0 else sample[:-4]
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _decode_sample(head: bytes, encoding: Encoding) -> str:
    codec = {"utf-8": "utf-8-sig", "utf-16": "utf-16", "latin-1": "latin-1"}[encoding]
    if codec == "utf-16" and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec = "utf-16-le"  # Python's utf-16 decoder insists on a BOM
    decoder = codecs.getincrementaldecoder(codec)(errors="replace")
    return decoder.decode(head, final=False)


def sniff_delimiter(text: str, quote: str) -> str:
    """Choose the delimiter whose field count is consistent over the sample's records."""
    best, best_score = ",", (0, 0)
    for delim in _DELIMITERS:
        try:
            rows = list(_records(text, delim, quote, limit=200))
        except csv.Error:
            continue
        if len(rows) > 1 and not text.endswith("\n"):
            rows = rows[:-1]  # the last record of a sample may be cut off
        counts = [len(r) for r in rows if r]
        if not counts or max(counts) < 2:
            continue
        mode = max(set(counts), key=counts.count)
        if mode < 2:
            continue
        score = (counts.count(mode), mode)
        if score > best_score:
            best, best_score = delim, score
    return best


def _records(text: str, delim: str, quote: str, limit: int) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, quotechar=quote)
    out: list[list[str]] = []
    for row in reader:
        out.append(row)
        if len(out) >= limit:
            break
    return out


def read_header(path: Path, encoding: Encoding, delim: str, quote: str, limit: int) -> list[str]:
    """The first record of a delimited file, read within ``limit`` bytes."""
    with path.open("rb") as handle:
        head = handle.read(limit + 1)
    text = _decode_sample(head[:limit], encoding)
    if "\n" not in text and "\r" not in text and len(head) > limit:
        raise InvalidInput(f"the header line is longer than {limit} bytes")
    try:
        rows = _records(text, delim, quote, limit=2)
    except csv.Error as exc:
        raise InvalidInput(f"the header line cannot be parsed: {exc}") from None
    if not rows or (len(rows) == 1 and len(head) > limit):
        raise InvalidInput(f"the header line is longer than {limit} bytes")
    return rows[0]


def _check_ragged(text: str, delim: str, quote: str, width: int, *, complete: bool) -> None:
    """A clear message for rows of the wrong width in the sample (DuckDB's is generic)."""
    try:
        rows = _records(text, delim, quote, limit=2000)
    except csv.Error:
        return  # DuckDB will report it
    if not complete and len(rows) > 1:
        rows = rows[:-1]  # the sample's last record may be cut off
    for number, row in enumerate(rows[1:], start=2):
        if row and len(row) != width:
            raise InvalidInput(
                f"record {number} has {len(row)} fields; the first record has {width}"
            )


def _parquet_names(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:  # a footer pyarrow refuses is the file's fault
        raise InvalidInput(f"cannot parse Parquet: {type(exc).__name__}") from None


def _json_keys(head: bytes, *, complete: bool) -> list[str]:
    """Keys of the records in the sample, in first-seen order (duplicates kept)."""
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    records: list[Any] = []
    if text.startswith("["):
        if complete:
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                return []  # DuckDB reports the syntax error or the nesting
            records = parsed if isinstance(parsed, list) else []
    else:
        lines = text.splitlines()
        if not complete:
            lines = lines[:-1]  # the sample's last line may be cut off
        for line in lines:
            try:
                records.append(json.loads(line))
            except (ValueError, RecursionError):
                continue
    keys: dict[str, None] = {}
    for record in records:
        if isinstance(record, dict):
            keys.update(dict.fromkeys(record))
    return list(keys)


def _refuse_renamed(names: Sequence[str], seen: set[str]) -> None:
    """DuckDB suffixes a key that differs from another only in case ("A" → "A_1")."""
    folded = {n.casefold(): n for n in reversed(names)}  # the first spelling wins
    for name in names:
        base, _, number = name.rpartition("_")
        other = folded.get(base.casefold())
        if number.isdigit() and base and name not in seen and other is not None:
            raise InvalidInput(
                f"duplicate column name {base!r} (also {other!r}; names that differ only in "
                "case are one column in SQL)"
            )


def check_column_names(names: Sequence[str], limits: IngestLimits) -> list[str]:
    """Enforce the column cap; refuse duplicates (case-insensitive, as SQL sees them)."""
    if len(names) > limits.max_columns:
        raise InvalidInput(
            f"the file has {len(names)} columns; at most {limits.max_columns} are allowed"
        )
    out = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(names):
        name = raw.strip() or f"column{i}"
        if "\x00" in name:
            raise InvalidInput(f"column {i} has a NUL character in its name")
        if len(name.encode()) > 1024:
            raise InvalidInput(f"column {i} has a name longer than 1024 bytes")
        key = name.casefold()
        if key in seen:
            raise InvalidInput(f"duplicate column name {name!r} (also {seen[key]!r})")
        seen[key] = name
        out.append(name)
    return out


# --------------------------------------------------------------------------- conversion


def _normalise(name: str, dtype: str) -> str:
    """A select expression turning ``name`` of DuckDB type ``dtype`` into a storable type."""
    col = qident(name)
    upper = dtype.upper()
    if upper == "JSON":
        return f"json_extract_string({col}, '$') AS {col}"
    if upper.startswith("DECIMAL") or upper in WIDE_INT_TYPES:
        return f"CAST({col} AS DOUBLE) AS {col}"
    if upper in STORED_INT_TYPES or upper in FLOAT_TYPES or upper in ("BOOLEAN", "DATE", "VARCHAR"):
        return col
    if upper.startswith("TIMESTAMP WITH TIME ZONE"):
        return col
    if upper.startswith("TIMESTAMP"):
        return f"CAST({col} AS TIMESTAMP) AS {col}"
    if upper.startswith(("STRUCT", "MAP", "UNION")) or upper.endswith("]"):
        return f"CAST(to_json({col}) AS VARCHAR) AS {col}"
    # binary, uuid, interval, time, enum…: stored as text
    return f"CAST({col} AS VARCHAR) AS {col}"


def _describe(con: duckdb.DuckDBPyConnection, source_sql: str) -> list[tuple[str, str]]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {source_sql}").fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def csv_buffer_bytes(limits: IngestLimits) -> int:
    """DuckDB's CSV read buffer: room for two maximal lines, at least 16 MiB."""
    return max(16 * MiB, 2 * int(limits.max_line_bytes))


@dataclass(frozen=True)
class ParquetSource:
    path: Path
    label = "Parquet"

    def sql(self) -> str:
        return f"read_parquet({qstr(str(self.path))})"


@dataclass(frozen=True)
class JsonSource:
    path: Path
    max_object_bytes: int
    full_scan: bool = False  # the type sniffer reads every row, not a sample
    label = "JSON"

    def sql(self) -> str:
        return (
            f"read_json({qstr(str(self.path))}, format='auto', records=true, "
            f"maximum_object_size={int(self.max_object_bytes)}, "
            f"{_FULL_SCAN if self.full_scan else _SAMPLED})"
        )


@dataclass(frozen=True)
class CsvSource:
    """A ``read_csv(…)`` call, rendered from its options: a retry changes an option (the
    encoding, the type scan) with :func:`dataclasses.replace`, never the SQL text."""

    path: Path
    delim: str
    quote: str
    escape: str
    header: bool
    encoding: Encoding
    names: tuple[str, ...]  # the header's names, checked in Python: DuckDB takes them as given
    max_line_bytes: int
    buffer_bytes: int
    full_scan: bool = False  # the type sniffer reads every row, not a sample
    label = "CSV"

    def sql(self) -> str:
        opts = [
            f"delim={qstr(self.delim)}",
            f"quote={qstr(self.quote)}",
            f"escape={qstr(self.escape)}",
            f"header={'true' if self.header else 'false'}",
            f"encoding={qstr(self.encoding)}",
            "allow_quoted_nulls=false",
            "strict_mode=true",
            "null_padding=false",
            f"max_line_size={int(self.max_line_bytes)}",
            # DuckDB's default buffer is 16 x max_line_size (128 MiB per buffer for 8 MiB
            # lines), which under a 512 MB limit made the conversion 1.6x slower and twice as
            # large.
            f"buffer_size={int(self.buffer_bytes)}",
            _FULL_SCAN if self.full_scan else _SAMPLED,
            "names=[" + ", ".join(qstr(n) for n in self.names) + "]",
        ]
        return f"read_csv({qstr(str(self.path))}, {', '.join(opts)})"


Source = ParquetSource | JsonSource | CsvSource


@dataclass
class _Conversion:
    """One conversion: the input as sniffed, its options and limits, and what was detected."""

    con: duckdb.DuckDBPyConnection
    src: Path
    out: Path
    head: bytes
    size: int
    fmt: Format
    compression: str | None
    options: IngestOptions
    limits: IngestLimits
    replacements: dict[str, str]  # server paths -> what messages show instead
    detected: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether ``head`` is the whole file."""
        return self.size <= len(self.head)

    def describe(self, source: Source) -> list[tuple[str, str]]:
        return _safe_describe(self.con, source.sql(), self.replacements, source.label)


def convert_to_parquet(
    src: Path,
    work_dir: Path,
    *,
    filename: str | None = None,
    options: IngestOptions | None = None,
    limits: IngestLimits,
) -> IngestResult:
    """Convert ``src`` (inside ``work_dir``) to ``work_dir/data.parquet``."""
    options = options or IngestOptions()
    size = src.stat().st_size
    if size == 0:
        raise InvalidInput("the file is empty")
    head = _read_head(src)
    compression = None
    if head.startswith(b"\x1f\x8b"):
        compression = "gzip"
        plain = work_dir / "decompressed"
        if gunzip_bounded(src, plain, limits) == 0:
            raise InvalidInput("the file is empty (after decompression)")
        src, head = plain, _read_head(plain)
        size = plain.stat().st_size
        if head.startswith(b"\x1f\x8b"):
            raise UnsupportedMediaType("nested compression is not supported")
    fmt = options.format or detect_format(head, filename)
    out = work_dir / OUTPUT_NAME
    con = connect(
        allowed_directories=[work_dir],
        memory_limit=limits.memory_limit,
        threads=limits.threads,
        temp_directory=work_dir / "spill",
        max_temp_bytes=4 * 1024 * MiB,
        preserve_insertion_order=limits.preserve_order,
    )
    replacements = {str(src): "<upload>", str(work_dir): "<work>"}
    job = _Conversion(con, src, out, head, size, fmt, compression, options, limits, replacements)
    try:
        return _convert(job)
    except duckdb.Error as exc:  # anything DuckDB refuses about the file is the file's fault
        detail = clean_error(exc, replacements=replacements)
        raise InvalidInput(f"cannot read the file: {detail}") from None
    except (UnicodeError, csv.Error) as exc:
        raise InvalidInput(f"cannot decode the file: {exc}") from None
    finally:
        con.close()


def _convert(job: _Conversion) -> IngestResult:
    opened = {"parquet": _open_parquet, "jsonl": _open_json, "csv": _open_csv}[job.fmt]
    source, columns = opened(job)
    rows = _copy(job, source, columns)
    final_columns = _describe(job.con, f"read_parquet({qstr(str(job.out))})")
    if rows == 0:
        raise InvalidInput("the file has no data rows")
    if rows > job.limits.max_rows:
        raise PayloadTooLarge(
            f"the file has {rows} rows; at most {job.limits.max_rows} are allowed"
        )
    return IngestResult(
        parquet_path=job.out,
        row_count=rows,
        columns=final_columns,
        source_format=job.fmt,
        compression=job.compression,
        detected=job.detected,
    )


def _open_parquet(job: _Conversion) -> tuple[Source, list[tuple[str, str]]]:
    source = ParquetSource(job.src)
    # the footer states the row count: refuse a "Parquet bomb" before decoding anything
    meta = job.con.execute(
        f"SELECT sum(num_rows) FROM parquet_file_metadata({qstr(str(job.src))})"
    ).fetchall()
    declared = int(meta[0][0] or 0) if meta else 0
    if declared > job.limits.max_rows:
        raise PayloadTooLarge(
            f"the file has {declared} rows; at most {job.limits.max_rows} are allowed"
        )
    columns = job.describe(source)
    # DuckDB renames a second "A" next to "a" to "A_1"; the file's own names decide
    check_column_names(_parquet_names(job.src), job.limits)
    return source, columns


def _open_json(job: _Conversion) -> tuple[Source, list[tuple[str, str]]]:
    source = JsonSource(job.src, max_object_bytes=job.limits.max_line_bytes)
    if job.complete and job.head.strip(b"\xef\xbb\xbf \t\r\n") in (b"[]", b"{}"):
        raise InvalidInput("the file has no data rows")
    seen = _json_keys(job.head, complete=job.complete)
    check_column_names(seen, job.limits)
    columns = job.describe(source)
    check_column_names([c[0] for c in columns], job.limits)
    _refuse_renamed([c[0] for c in columns], set(seen))
    return source, columns


def _open_csv(job: _Conversion) -> tuple[Source, list[tuple[str, str]]]:
    options, limits = job.options, job.limits
    encoding = options.encoding or detect_encoding(job.head, complete=job.complete)
    text = _decode_sample(job.head, encoding)
    quote = options.quote or '"'
    delim = options.delimiter or sniff_delimiter(text, quote)
    escape = options.escape or quote
    header = True if options.header is None else options.header
    job.detected.update(
        delimiter=delim, quote=quote, escape=escape, header=header, encoding=encoding
    )
    first = read_header(job.src, encoding, delim, quote, limits.max_line_bytes)
    if header and not any(name.strip() for name in first):
        raise InvalidInput(
            "the header line has no column names (send header=false if the file has no header)"
        )
    if header:
        names = check_column_names(first, limits)
    else:
        names = check_column_names([f"column{i}" for i in range(len(first))], limits)
    _check_ragged(text, delim, quote, len(first), complete=job.complete)
    source = CsvSource(
        job.src,
        delim=delim,
        quote=quote,
        escape=escape,
        header=header,
        encoding=encoding,
        names=tuple(names),
        max_line_bytes=limits.max_line_bytes,
        buffer_bytes=csv_buffer_bytes(limits),
    )
    try:
        return source, job.describe(source)
    except InvalidInput as exc:
        latin1 = _latin1_fallback(job, source, exc.detail)
        if latin1 is None:
            raise
        return latin1, job.describe(latin1)


def _latin1_fallback(job: _Conversion, source: CsvSource, message: str) -> CsvSource | None:
    """Non-UTF-8 bytes after the sample of a file taken for UTF-8: read it as Latin-1
    (always decodable) instead, unless the caller chose the encoding."""
    if job.options.encoding or source.encoding != "utf-8" or "unicode" not in message.lower():
        return None
    job.detected["encoding"] = "latin-1"
    return dataclasses.replace(source, encoding="latin-1")


def _copy(job: _Conversion, source: Source, columns: list[tuple[str, str]]) -> int:
    """``COPY`` the source to ``job.out`` as Parquet; return the row count.

    Up to three retries fix what only the full read shows: non-UTF-8 bytes after the sample,
    or a value after the type sniffer's sample that breaks the sniffed type ("n/a" in a
    column of numbers: the sniffer then reads the whole file).
    """
    for attempt in range(4):
        select = ", ".join(_normalise(name, dtype) for name, dtype in columns)
        try:
            result = job.con.execute(
                f"COPY (SELECT {select} FROM {source.sql()}) TO {qstr(str(job.out))} "
                "(FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE 122880)"
            ).fetchall()[0]
            return int(result[0]) if result else 0
        except duckdb.Error as exc:
            message = str(exc).lower()
            retry: Source | None = None
            if attempt < 3 and isinstance(source, CsvSource):
                retry = _latin1_fallback(job, source, message)
            if retry is None and attempt < 3 and _is_type_error(message):
                if isinstance(source, JsonSource | CsvSource) and not source.full_scan:
                    retry = dataclasses.replace(source, full_scan=True)
                    columns = job.describe(retry)
                    job.detected["types_from"] = "whole file"
            if retry is None:
                raise _parse_error(job.fmt, exc, job.replacements) from None
            source = retry
    raise AssertionError("unreachable")  # pragma: no cover - the last attempt raises


def _is_type_error(message: str) -> bool:
    markers = ("could not convert", "auto-detect", "conversion error", "failed to cast")
    return any(marker in message for marker in markers)


def _parse_error(fmt: Format, exc: BaseException, replacements: dict[str, str]) -> InvalidInput:
    return _explained(_LABELS[fmt], clean_error(exc, replacements=replacements))


def _explained(label: str, text: str) -> InvalidInput:
    """DuckDB's message, or plain words where it would suggest options the caller lacks."""
    lower = text.lower()
    if "maximum line size" in lower or "max_line_size" in lower:
        return InvalidInput(f"cannot parse {label}: a line or cell exceeds the size limit")
    if "expected records" in lower or "non-record json" in lower:
        return InvalidInput(_NOT_RECORDS)
    text = text.split(" Try setting ", 1)[0].split(" Try increasing ", 1)[0]
    return InvalidInput(f"cannot parse {label}: {text}")


def _safe_describe(
    con: duckdb.DuckDBPyConnection, source_sql: str, replacements: dict[str, str], label: str
) -> list[tuple[str, str]]:
    try:
        columns = _describe(con, source_sql)
    except duckdb.Error as exc:
        raise _explained(label, clean_error(exc, replacements=replacements)) from None
    if not columns:
        raise InvalidInput(f"the {label} file has no columns")
    return columns


def write_records_jsonl(records: Sequence[dict[str, Any]], work_dir: Path) -> Path:
    """Write JSON records (the append path) as JSON Lines for the normal ingest pipeline."""
    import orjson

    path = work_dir / "records.jsonl"
    with path.open("wb") as handle:
        for record in records:
            handle.write(orjson.dumps(record))
            handle.write(b"\n")
    return path
