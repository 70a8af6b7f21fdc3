"""Downloads of a stored version: its Parquet file as it is, or CSV converted on the fly.

CSV is converted in record batches (bounded memory), safe to open in a spreadsheet.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiaas.data.duck import clean_error, connect, qstr
from aiaas.data.models import DatasetVersion
from aiaas.data.sql import csv_text
from aiaas.data.versions import local_parquet
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore

_BLOCK = 1024 * 1024
_BATCH_ROWS = 65536
_FORMULA_RE = r"^([=+\-@\t\r])"  # a text cell starting with one of sql.FORMULA_PREFIXES


def parquet_chunks(store: ArtifactStore, version: DatasetVersion) -> Iterator[bytes]:
    """The version's Parquet file, in 1 MiB blocks."""
    with store.open(version.org_id, version.storage_key) as handle:
        while block := handle.read(_BLOCK):
            yield block


def csv_chunks(
    store: ArtifactStore, settings: Settings, version: DatasetVersion
) -> Iterator[bytes]:
    """The version as CSV, converted in record batches (bounded memory)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = local_parquet(store, settings, version)
    con = connect(
        allowed_paths=[path],
        memory_limit=settings.data.duckdb_memory_limit,
        threads=settings.data.duckdb_threads,
    )
    try:
        sql = f"SELECT * FROM read_parquet({qstr(str(path))})"
        reader = con.sql(sql).to_arrow_reader(_BATCH_ROWS)
        assert reader is not None
        first = True
        for batch in reader:
            sink = pa.BufferOutputStream()
            casted = csv_safe(batch)
            pacsv.write_csv(casted, sink, write_options=pacsv.WriteOptions(include_header=first))
            first = False
            yield sink.getvalue().to_pybytes()
        if first:  # no batches: header only
            sink = pa.BufferOutputStream()
            pacsv.write_csv(csv_safe(reader.schema.empty_table()), sink)
            yield sink.getvalue().to_pybytes()
    except Exception as exc:  # the response has started; end it with a readable marker
        yield f"\n# error: {clean_error(exc)}\n".encode()
    finally:
        con.close()


def csv_safe(batch: Any) -> Any:
    """A record batch (or table) as CSV can carry it, and safe to open in a spreadsheet.

    CSV cannot carry time zones: zoned timestamps are written as UTC wall time. Text that a
    spreadsheet would run as a formula (a cell or column name starting with ``=``, ``+``,
    ``-``, ``@``, tab or CR — OWASP CSV injection) gets a leading ``'``; numbers are untouched.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = []
    for column in batch.columns:
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = pc.cast(column, pa.timestamp(column.type.unit))
        if pa.types.is_dictionary(column.type):
            column = pc.cast(column, column.type.value_type)
        if pa.types.is_string_view(column.type):
            column = pc.cast(column, pa.string())
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.replace_substring_regex(
                column, pattern=_FORMULA_RE, replacement="'\\1", max_replacements=1
            )
        arrays.append(column)
    names = [csv_text(name) for name in batch.schema.names]
    return type(batch).from_arrays(arrays, names=names)
