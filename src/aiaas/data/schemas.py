"""Wire types of the data domain."""

from __future__ import annotations

import math
import unicodedata
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aiaas.data.recipes import Step

_FORBIDDEN_NAME_CHARS = {"@", "/", "\\", '"', "\x00"}
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


class _Input(BaseModel):
    """A request body of the data domain: unknown fields refused, and no value that cannot
    be stored (see :func:`refuse_unstorable`) reaches a service."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        refuse_unstorable(data)
        return data


def clean_name(value: str) -> str:
    """NFC-normalise a dataset name; refuse control/bidi characters and SQL-view clashes."""
    value = unicodedata.normalize("NFC", value.strip())
    if not value:
        raise ValueError("the name is empty")
    if len(value) > 200:
        raise ValueError("the name is longer than 200 characters")
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") or ch in (
            _FORBIDDEN_NAME_CHARS
        ):
            raise ValueError(f"the name contains a forbidden character {ch!r}")
    return value


class ColumnSchema(BaseModel):
    name: str
    type: Literal["integer", "float", "boolean", "string", "categorical", "datetime"]
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


class DatasetUpdate(_Input):
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=DESCRIPTION_MAX)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else clean_name(value)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        return None if value is None else clean_description(value)


class AppendRows(BaseModel):
    """Records are checked by the service (``check_records``), which names row and column."""

    model_config = ConfigDict(extra="forbid")

    records: list[dict[str, Any]] = Field(min_length=1)


class TransformRequest(_Input):
    steps: list[Step] = Field(min_length=1, max_length=100)


class ImportRequest(_Input):
    name: str = Field(max_length=200)
    description: str | None = Field(None, max_length=DESCRIPTION_MAX)
    url: str = Field(max_length=2000, description="postgresql://user:password@host:port/db")
    query: str = Field(min_length=1, max_length=100_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return clean_name(value)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        return None if value is None else clean_description(value)


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=100_000)
    format: Literal["json", "csv"] = "json"


class SqlColumn(BaseModel):
    name: str
    type: str
    physical: str


class SqlResponse(BaseModel):
    columns: list[SqlColumn]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
