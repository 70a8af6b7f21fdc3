"""The column-type vocabulary of the data domain, in one place.

A stored version's columns have a DuckDB *physical* type (``BIGINT``, ``VARCHAR``,
``TIMESTAMP WITH TIME ZONE`` …) and a *schema* type, one of :data:`ColumnType`, which is what
the API shows and what recipes and AutoML reason about:

- :func:`base_type` maps a DuckDB type to a schema type; the profile then refines ``string``
  to ``categorical`` for a text column with few distinct values;
- :func:`arrow_kind` does the same for an Arrow type (the result of a SQL query);
- :data:`CAST_TYPES` is what a recipe's ``cast`` step may ask for, and the DuckDB type it
  casts to.

No DuckDB or pyarrow import here: the wire types (``data/schemas.py``) import this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import pyarrow as pa

#: A column's schema type, as the API shows it (``ColumnSchema.type``).
ColumnType = Literal["integer", "float", "boolean", "string", "categorical", "datetime"]
#: What :func:`base_type` and :func:`arrow_kind` return: no ``categorical``, which needs
#: statistics, not just the type.
BaseType = Literal["integer", "float", "boolean", "string", "datetime"]
#: A recipe's ``cast`` target: a schema type, or a plain ``date``.
CastType = Literal[ColumnType, "date"]

COLUMN_TYPES: frozenset[str] = frozenset(get_args(ColumnType))
BASE_TYPES: frozenset[str] = frozenset(get_args(BaseType))
NUMERIC_TYPES: frozenset[str] = frozenset({"integer", "float"})

#: DuckDB integer types (schema type ``integer``). ``UHUGEINT`` is not one: ingest stores it as
#: DOUBLE (see :data:`WIDE_INT_TYPES`), so no stored version has it.
INT_TYPES: frozenset[str] = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "HUGEINT",
    }
)
#: Integers wider than a signed 64-bit column: ingest stores them as DOUBLE.
WIDE_INT_TYPES: frozenset[str] = frozenset({"UBIGINT", "HUGEINT", "UHUGEINT"})
#: Integer types a stored version keeps as they are.
STORED_INT_TYPES: frozenset[str] = INT_TYPES - WIDE_INT_TYPES
#: DuckDB floating-point types (schema type ``float``, as are ``DECIMAL(p, s)``).
FLOAT_TYPES: frozenset[str] = frozenset({"FLOAT", "DOUBLE", "REAL"})

#: A recipe's cast target → the DuckDB type it casts to.
CAST_TYPES: dict[CastType, str] = {
    "integer": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "string": "VARCHAR",
    "categorical": "VARCHAR",
    "datetime": "TIMESTAMP",
    "date": "DATE",
}


def base_type(physical: str) -> BaseType:
    """The schema type of a DuckDB physical type (before the categorical refinement)."""
    upper = physical.upper()
    if upper in INT_TYPES:
        return "integer"
    if upper in FLOAT_TYPES or upper.startswith("DECIMAL"):
        return "float"
    if upper == "BOOLEAN":
        return "boolean"
    if upper == "DATE" or upper.startswith("TIMESTAMP"):
        return "datetime"
    return "string"


def is_numeric(physical: str) -> bool:
    """Whether a DuckDB physical type is an ``integer`` or ``float`` column."""
    return base_type(physical) in NUMERIC_TYPES


def arrow_kind(t: pa.DataType) -> BaseType:
    """The schema type of an Arrow type."""
    import pyarrow as pa  # only callers that hold Arrow types pay for the import

    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return "string"
