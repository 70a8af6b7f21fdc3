"""Wire types of the data domain."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiaas.data.recipes import Step

_FORBIDDEN_NAME_CHARS = {"@", "/", "\\", '"', "\x00"}
DESCRIPTION_MAX = 2000  # characters of a dataset description (the column is String(2000))


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


class DatasetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=DESCRIPTION_MAX)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else clean_name(value)


class AppendRows(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[dict[str, Any]] = Field(min_length=1)


class TransformRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[Step] = Field(min_length=1, max_length=100)


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200)
    description: str | None = Field(None, max_length=DESCRIPTION_MAX)
    url: str = Field(max_length=2000, description="postgresql://user:password@host:port/db")
    query: str = Field(min_length=1, max_length=100_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return clean_name(value)


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
