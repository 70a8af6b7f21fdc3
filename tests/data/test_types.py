"""The column-type vocabulary (aiaas.data.types): exact mappings, and agreement with the
DuckDB and Arrow types the engine actually sees."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args, get_type_hints

import duckdb
import pyarrow as pa
import pytest

from aiaas.data.types import (
    BASE_TYPES,
    CAST_TYPES,
    COLUMN_TYPES,
    FLOAT_TYPES,
    INT_TYPES,
    NUMERIC_TYPES,
    STORED_INT_TYPES,
    WIDE_INT_TYPES,
    BaseType,
    CastType,
    ColumnType,
    arrow_kind,
    base_type,
    is_numeric,
)

#: DuckDB type as written -> (what DESCRIBE calls it, base_type, arrow_kind of its Arrow type)
DUCKDB_TYPES = {
    "TINYINT": ("TINYINT", "integer", "integer"),
    "SMALLINT": ("SMALLINT", "integer", "integer"),
    "INTEGER": ("INTEGER", "integer", "integer"),
    "BIGINT": ("BIGINT", "integer", "integer"),
    # Arrow has no 128-bit integer: DuckDB hands HUGEINT to Arrow as decimal128(38, 0), so a
    # SQL result (sum() of a BIGINT is a HUGEINT) says "float" where the profile says "integer"
    "HUGEINT": ("HUGEINT", "integer", "float"),
    "UTINYINT": ("UTINYINT", "integer", "integer"),
    "USMALLINT": ("USMALLINT", "integer", "integer"),
    "UINTEGER": ("UINTEGER", "integer", "integer"),
    "UBIGINT": ("UBIGINT", "integer", "integer"),
    "UHUGEINT": ("UHUGEINT", "string", "float"),  # never stored: ingest makes it DOUBLE
    "FLOAT": ("FLOAT", "float", "float"),
    "REAL": ("FLOAT", "float", "float"),
    "DOUBLE": ("DOUBLE", "float", "float"),
    "DECIMAL(10,2)": ("DECIMAL(10,2)", "float", "float"),
    "DECIMAL(38,4)": ("DECIMAL(38,4)", "float", "float"),
    "BOOLEAN": ("BOOLEAN", "boolean", "boolean"),
    "DATE": ("DATE", "datetime", "datetime"),
    "TIMESTAMP": ("TIMESTAMP", "datetime", "datetime"),
    "TIMESTAMP_S": ("TIMESTAMP_S", "datetime", "datetime"),
    "TIMESTAMP_MS": ("TIMESTAMP_MS", "datetime", "datetime"),
    "TIMESTAMP_NS": ("TIMESTAMP_NS", "datetime", "datetime"),
    "TIMESTAMPTZ": ("TIMESTAMP WITH TIME ZONE", "datetime", "datetime"),
    "TIME": ("TIME", "string", "string"),
    "INTERVAL": ("INTERVAL", "string", "string"),
    "VARCHAR": ("VARCHAR", "string", "string"),
    "BLOB": ("BLOB", "string", "string"),
    "UUID": ("UUID", "string", "string"),
    "JSON": ("JSON", "string", "string"),
    "INTEGER[]": ("INTEGER[]", "string", "string"),
    "STRUCT(a INTEGER)": ("STRUCT(a INTEGER)", "string", "string"),
    "MAP(VARCHAR, INTEGER)": ("MAP(VARCHAR, INTEGER)", "string", "string"),
}


def test_the_literals():
    assert get_args(ColumnType) == (
        "integer",
        "float",
        "boolean",
        "string",
        "categorical",
        "datetime",
    )
    assert get_args(BaseType) == ("integer", "float", "boolean", "string", "datetime")
    assert get_args(CastType) == (*get_args(ColumnType), "date")
    assert frozenset(get_args(ColumnType)) == COLUMN_TYPES
    assert frozenset(get_args(BaseType)) == BASE_TYPES == COLUMN_TYPES - {"categorical"}
    assert NUMERIC_TYPES == {"integer", "float"}


def test_the_physical_type_sets():
    assert INT_TYPES == {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
    }
    assert WIDE_INT_TYPES == {"UBIGINT", "HUGEINT", "UHUGEINT"}
    assert STORED_INT_TYPES == {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
    }
    assert FLOAT_TYPES == {"FLOAT", "DOUBLE", "REAL"}


def test_cast_table():
    assert CAST_TYPES == {
        "integer": "BIGINT",
        "float": "DOUBLE",
        "boolean": "BOOLEAN",
        "string": "VARCHAR",
        "categorical": "VARCHAR",
        "datetime": "TIMESTAMP",
        "date": "DATE",
    }
    assert tuple(CAST_TYPES) == get_args(CastType)
    # a cast lands on the schema type it names (categorical is a refinement of string)
    for kind, duck in CAST_TYPES.items():
        expected = {"categorical": "string", "date": "datetime"}.get(kind, kind)
        assert base_type(duck) == expected, kind


@pytest.mark.parametrize("written", sorted(DUCKDB_TYPES))
def test_duckdb_types(written):
    described, base, arrow = DUCKDB_TYPES[written]
    con = duckdb.connect()
    sql = f"SELECT CAST(NULL AS {written}) AS x"
    assert con.execute(f"DESCRIBE {sql}").fetchall()[0][1] == described
    assert base_type(described) == base
    assert base_type(described.lower()) == base  # case does not matter
    assert is_numeric(described) == (base in ("integer", "float"))
    assert arrow_kind(con.sql(sql).to_arrow_table().schema[0].type) == arrow


@pytest.mark.parametrize(
    ("arrow_type", "kind"),
    [
        (pa.bool_(), "boolean"),
        (pa.int8(), "integer"),
        (pa.int64(), "integer"),
        (pa.uint64(), "integer"),
        (pa.float16(), "float"),
        (pa.float32(), "float"),
        (pa.float64(), "float"),
        (pa.decimal128(10, 2), "float"),
        (pa.date32(), "datetime"),
        (pa.date64(), "datetime"),
        (pa.timestamp("ns"), "datetime"),
        (pa.timestamp("us", tz="UTC"), "datetime"),
        (pa.time64("us"), "string"),
        (pa.duration("s"), "string"),
        (pa.string(), "string"),
        (pa.large_string(), "string"),
        (pa.binary(), "string"),
        (pa.list_(pa.int32()), "string"),
        (pa.struct([("a", pa.int32())]), "string"),
        (pa.null(), "string"),
    ],
)
def test_arrow_kind(arrow_type, kind):
    assert arrow_kind(arrow_type) == kind


def test_ingest_stores_only_types_the_vocabulary_knows():
    """Every integer DuckDB type is stored as an integer the profile knows, or as DOUBLE."""
    from aiaas.data.ingest import _normalise

    con = duckdb.connect()
    for duck in sorted(INT_TYPES | WIDE_INT_TYPES):
        expr = _normalise("x", duck)
        stored = con.execute(f"DESCRIBE SELECT {expr} FROM (SELECT CAST(1 AS {duck}) AS x)")
        physical = stored.fetchall()[0][1]
        assert physical == (duck if duck in STORED_INT_TYPES else "DOUBLE"), duck
        assert base_type(physical) in NUMERIC_TYPES


def test_wire_schema_uses_the_vocabulary():
    from aiaas.data.schemas import ColumnSchema

    assert get_args(get_type_hints(ColumnSchema)["type"]) == get_args(ColumnType)


def test_no_duckdb_or_pyarrow_import():
    """The wire types import this module: it must stay light."""
    code = (
        "import sys; import aiaas.data.types; "
        "print(sorted(m for m in ('duckdb', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
