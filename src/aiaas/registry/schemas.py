"""Wire types of the model registry (no ORM here).

A model name is a URL path segment (``/models/{name}``): ASCII letters, digits and
``_ . -``, starting with a letter or digit (the rule ``jobs.schemas.ModelName`` applies to
``model_name``). An alias is lower case, ``[a-z][a-z0-9_-]{0,63}``, and never ``latest``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field, model_validator

from aiaas.data.schemas import VERSION_MAX, Description, refuse_unstorable, text_problem
from aiaas.schemas import NAME_MAX, StrictModel

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
ALIAS_PATTERN = r"^[a-z][a-z0-9_\-]{0,63}$"
ALIAS_MAX = 64
#: Alias names with a meaning of their own: ``latest`` is always the newest version.
RESERVED_ALIASES = frozenset({"latest"})
TAGS_MAX = 50  # tags per model or version
TAG_KEY_PATTERN = r"^[A-Za-z0-9_.:/\-]{1,100}$"
TAG_VALUE_MAX = 500
ONNX_FILE = "model.onnx"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)


def model_name_problem(name: str) -> str | None:
    """Why ``name`` is not a model name, or None."""
    if not 1 <= len(name) <= NAME_MAX:
        return f"a model name has 1 to {NAME_MAX} characters"
    if not _MODEL_NAME.fullmatch(name):
        return "a model name holds only ASCII letters, digits and _ . - (starting with one)"
    return None


def alias_problem(alias: str) -> str | None:
    """Why ``alias`` is not an alias name, or None."""
    if not _ALIAS.fullmatch(alias):
        return "an alias is lower case: a letter, then up to 63 of a-z 0-9 _ -"
    if alias in RESERVED_ALIASES:
        return f"{alias!r} is reserved (it always means the newest version)"
    return None


def _clean_tag_value(value: str) -> str:
    if problem := text_problem(value):
        raise ValueError(f"a tag value contains {problem}")
    return value


def _clean_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > TAGS_MAX:
        raise ValueError(f"at most {TAGS_MAX} tags")
    return tags


TagKey = Annotated[str, Field(pattern=TAG_KEY_PATTERN)]
TagValue = Annotated[str, Field(max_length=TAG_VALUE_MAX), AfterValidator(_clean_tag_value)]
Tags = Annotated[dict[TagKey, TagValue], AfterValidator(_clean_tags)]


class _RegistryInput(StrictModel):
    """A request body: unknown fields refused (422), nothing that cannot be stored."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        refuse_unstorable(data)
        return data


class ModelUpdate(_RegistryInput):
    """``PATCH /models/{name}``: a model's description and tags (``tags`` replaces them all)."""

    description: Description | None = None
    tags: Tags | None = None


class ModelVersionUpdate(_RegistryInput):
    """``PATCH …/versions/{n}``: only the tags (replaced as a whole); versions are immutable."""

    tags: Tags


class AliasSet(_RegistryInput):
    """``PUT …/aliases/{alias}``: the version the alias names from now on."""

    version: int = Field(ge=1, le=VERSION_MAX, description="Version number (1, 2, ...).")


class ModelAliasRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    alias: str
    version: int = Field(validation_alias="version_number")
    version_id: str
    updated_by: str | None
    updated_at: datetime


class RegisteredModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str | None
    tags: dict[str, str]
    latest_version: int = Field(description="The newest version's number (0: it has none).")
    aliases: list[ModelAliasRead]
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class ArtifactRead(BaseModel):
    path: str
    size: int
    sha256: str


class ModelVersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: str
    model_id: str
    model_name: str
    number: int
    task: str
    metric: str
    metrics: dict[str, Any]
    signature: dict[str, Any]
    lineage: dict[str, Any]
    job_id: str | None
    feature_importance: list[dict[str, Any]] | None
    artifacts: list[ArtifactRead]
    size_bytes: int
    tags: dict[str, str]
    aliases: list[str] = Field(validation_alias="alias_names")
    card: str
    created_by: str | None
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def has_onnx(self) -> bool:
        """Whether ``GET …/onnx`` has a graph to download."""
        return any(a.path == ONNX_FILE for a in self.artifacts)
