"""Wire types of the data domain."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import PurePath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from aiaas.data.recipes import Step
from aiaas.data.types import ColumnType
from aiaas.errors import InvalidInput
from aiaas.schemas import NAME_MAX, StrictModel
from aiaas.schemas import clean_name as clean_display_name

#: Characters a dataset name cannot hold on top of :data:`aiaas.schemas.Name`'s rules: they
#: would clash with SQL view names (``name@N``) and quoting.
_FORBIDDEN_NAME_CHARS = frozenset({"@", "/", "\\", '"'})
DESCRIPTION_MAX = 2000  # characters of a dataset description (the column is String(2000))
VERSION_MAX = 2**31 - 1  # version numbers are 32-bit integers in the database
_INT64 = (-(2**63), 2**63 - 1)


def has_lone_surrogate(value: str) -> bool:
    """True if ``value`` holds a UTF-16 surrogate on its own (JSON ``"\\ud800"``): such a
    string has no UTF-8 form, so no database, file or DuckDB query can take it."""
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_problem(value: str) -> str | None:
    """Why a text input cannot be stored (a lone surrogate, a NUL character), or None."""
    if has_lone_surrogate(value):
        return "a lone surrogate"
    if "\x00" in value:  # PostgreSQL text and C strings (DuckDB's query text) end there
        return "a NUL character"
    return None


def clean_description(value: str) -> str:
    """A dataset description: at most DESCRIPTION_MAX characters, no NUL, no lone surrogate."""
    if len(value) > DESCRIPTION_MAX:
        raise ValueError(f"the description is longer than {DESCRIPTION_MAX} characters")
    if problem := text_problem(value):
        raise ValueError(f"the description contains {problem}")
    return value


def refuse_unstorable(value: Any, where: str = "") -> None:
    """Raise ValueError naming the first value of a JSON document that cannot be stored or
    put into a query as it is: a string (or key) with a lone surrogate or a NUL, an integer
    outside 64 bits, NaN or ±Infinity (JSON parsers read ``1e400`` as infinity)."""
    problem: str | None = None
    if isinstance(value, str):
        problem = text_problem(value)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            problem = "an integer outside the 64-bit range"
    elif isinstance(value, float):
        if not math.isfinite(value):
            problem = "not a finite number"
    elif isinstance(value, list):
        for i, item in enumerate(value):
            refuse_unstorable(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            shown = str(key)[:100].encode("utf-8", "backslashreplace").decode()
            if isinstance(key, str) and (key_problem := text_problem(key)):
                raise ValueError(f"{where or 'the body'}: the key {shown!r} contains {key_problem}")
            refuse_unstorable(item, f"{where}.{shown}" if where else shown)
    if problem:
        raise ValueError(f"{where or 'the body'}: {problem}")


class _StorableInput(StrictModel):
    """A request body of the data domain: unknown fields refused, and no value that cannot
    be stored (see :func:`refuse_unstorable`) reaches a service."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        refuse_unstorable(data)
        return data


def clean_name(value: str) -> str:
    """A dataset name: a :data:`~aiaas.schemas.Name` that is also a usable SQL view name."""
    value = clean_display_name(value)
    for ch in value:
        if ch in _FORBIDDEN_NAME_CHARS:
            raise ValueError(f"the name contains a forbidden character {ch!r}")
    return value


#: A :data:`~aiaas.schemas.Name` that is also a usable SQL view name (checked once, by clean_name).
DatasetName = Annotated[str, Field(min_length=1, max_length=NAME_MAX), AfterValidator(clean_name)]
Description = Annotated[str, Field(max_length=DESCRIPTION_MAX), AfterValidator(clean_description)]


class ColumnSchema(BaseModel):
    name: str
    type: ColumnType
    physical: str
    nullable: bool


class DatasetVersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: str
    number: int
    row_count: int
    column_count: int
    bytes: int
    sha256: str
    schema_: list[ColumnSchema] = Field(
        validation_alias="columns_schema", serialization_alias="schema"
    )
    source: dict[str, Any]
    parent_version: int | None
    recipe: list[dict[str, Any]] | None
    quality_score: float | None
    created_at: datetime


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime
    version: DatasetVersionRead | None


class DatasetCreate(StrictModel):
    """The form fields of ``POST /datasets`` beside the file (see :func:`dataset_create_form`)."""

    name: DatasetName
    description: Description | None = None


def dataset_create_form(fields: dict[str, str], filename: str | None) -> DatasetCreate:
    """Name and description of a new dataset from an upload's form fields; the name
    defaults to the file's stem. 422 naming the field that is wrong."""
    try:
        name = clean_name(fields.get("name") or PurePath(filename or "").stem)
    except ValueError as exc:
        raise InvalidInput(f"invalid dataset name: {exc}") from None
    try:
        description = fields.get("description") or None
        description = None if description is None else clean_description(description)
    except ValueError as exc:
        raise InvalidInput(f"invalid description: {exc}") from None
    return DatasetCreate.model_construct(name=name, description=description)


class DatasetUpdate(_StorableInput):
    name: DatasetName | None = None
    description: Description | None = None


class RowsAppend(StrictModel):
    """Records are checked by the service (``check_records``), which names row and column."""

    records: list[dict[str, Any]] = Field(min_length=1)


class VersionTransform(_StorableInput):
    steps: list[Step] = Field(min_length=1, max_length=100)


class DatasetImport(_StorableInput):
    name: DatasetName
    description: Description | None = None
    url: str = Field(max_length=2000, description="postgresql://user:password@host:port/db")
    query: str = Field(min_length=1, max_length=100_000)


class SqlQuery(StrictModel):
    query: str = Field(min_length=1, max_length=100_000)
    format: Literal["json", "csv"] = "json"


class SqlColumnRead(BaseModel):
    name: str
    type: str
    physical: str


class SqlResultRead(BaseModel):
    columns: list[SqlColumnRead]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
