"""Wire types of the model registry (no ORM here).

A model name is a URL path segment (``/models/{name}``): ASCII letters, digits and
``_ . -``, starting with a letter or digit (the rule ``jobs.schemas.ModelName`` applies to
``model_name``). An alias is lower case, ``[a-z][a-z0-9_-]{0,63}``, and never ``latest``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    computed_field,
    model_validator,
)

from aiaas.data.schemas import (
    VERSION_MAX,
    Description,
    clean_description,
    refuse_unstorable,
    text_problem,
)
from aiaas.errors import InvalidInput
from aiaas.schemas import NAME_MAX, StrictModel, clean_name

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


# --------------------------------------------------------------------------- ONNX uploads

#: The tasks an uploaded model can have (``task`` form field; inferred when absent).
UPLOAD_TASKS = ("binary", "multiclass", "regression")
UploadTask = Literal["binary", "multiclass", "regression"]
UPLOAD_FIELDS = ("signature", "task", "description")  # besides the ``file`` part
SIGNATURE_COLUMNS_MAX = 10_000  # columns an uploaded model's signature may name
CLASSES_MAX = 1_000  # classes of an uploaded classifier


def column_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a column of a signature (it is used as it is: no stripping)."""
    try:
        cleaned = clean_name(name)
    except ValueError as exc:
        return str(exc)
    if cleaned != name:
        return "the name has leading or trailing spaces or is not NFC-normalised"
    return None


def _clean_column(name: str) -> str:
    if problem := column_name_problem(name):
        raise ValueError(problem)
    return name


def _clean_class(label: int | str) -> int | str:
    if isinstance(label, str):
        if not 1 <= len(label) <= NAME_MAX:
            raise ValueError(f"a class label has 1 to {NAME_MAX} characters")
        if problem := text_problem(label):
            raise ValueError(f"a class label contains {problem}")
    return label


ColumnName = Annotated[str, AfterValidator(_clean_column)]
ClassLabel = Annotated[StrictInt | StrictStr, AfterValidator(_clean_class)]


class SignatureColumn(StrictModel):
    """One column of an uploaded model's ``signature`` part (its type is checked against
    the graph's, when given)."""

    name: ColumnName
    type: str | None = Field(None, max_length=32)


class SignatureHint(_RegistryInput):
    """The ``signature`` part of ``POST /models/{name}/versions`` (JSON text): the names of
    the columns (``inputs`` with types, or just ``columns``) and the classes."""

    inputs: list[SignatureColumn] | None = Field(None, max_length=SIGNATURE_COLUMNS_MAX)
    columns: list[ColumnName] | None = Field(None, max_length=SIGNATURE_COLUMNS_MAX)
    classes: list[ClassLabel] | None = Field(None, min_length=2, max_length=CLASSES_MAX)

    @model_validator(mode="after")
    def _one_list(self) -> SignatureHint:
        if self.inputs is not None and self.columns is not None:
            raise ValueError("give the columns either as 'inputs' or as 'columns', not both")
        names = self.names
        if names is not None:
            if not names:
                raise ValueError("the signature names no column")
            if len({n.lower() for n in names}) != len(names):
                raise ValueError("the signature names a column twice (regardless of case)")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("the signature names a class twice")
        return self

    @property
    def names(self) -> list[str] | None:
        """The column names it gives, in order (None: it names none)."""
        if self.inputs is not None:
            return [c.name for c in self.inputs]
        return list(self.columns) if self.columns is not None else None

    @property
    def types(self) -> dict[str, str]:
        """Column → the type it says (only those that say one)."""
        return {c.name: c.type for c in self.inputs or [] if c.type is not None}


class OnnxUploadForm(StrictModel):
    """The form fields of ``POST /models/{name}/versions`` beside the ``file`` part."""

    signature: SignatureHint | None = None
    task: UploadTask | None = None
    description: Description | None = None


def _error_text(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def onnx_upload_form(fields: dict[str, str]) -> OnnxUploadForm:
    """The upload's form fields, checked; 422 naming the field (and the part of the
    signature) that is wrong."""
    unknown = sorted(set(fields) - set(UPLOAD_FIELDS))
    if unknown:
        allowed = ", ".join(("file", *UPLOAD_FIELDS))
        raise InvalidInput(f"unknown form field {unknown[0][:100]!r} (the fields are {allowed})")
    hint = None
    if (text := fields.get("signature", "").strip()) != "":
        try:
            hint = SignatureHint.model_validate_json(text)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise InvalidInput("invalid signature: it is not valid JSON") from None
            raise InvalidInput(f"invalid signature: {_error_text(exc)}") from None
    task: UploadTask | None = None
    if raw_task := fields.get("task"):
        if raw_task not in UPLOAD_TASKS:
            raise InvalidInput(f"invalid task: it is one of {', '.join(UPLOAD_TASKS)}")
        task = cast(UploadTask, raw_task)
    try:
        description = fields.get("description") or None
        description = None if description is None else clean_description(description)
    except ValueError as exc:
        raise InvalidInput(f"invalid description: {exc}") from None
    return OnnxUploadForm.model_construct(signature=hint, task=task, description=description)


# --------------------------------------------------------------------------- quantization


class VersionQuantize(_RegistryInput):
    """``POST …/versions/{n}/quantize``: the reference dataset the quantized graph is
    measured on, and its target column."""

    dataset_id: str = Field(min_length=1, max_length=64, description="The reference dataset.")
    dataset_version: int | None = Field(
        None, ge=1, le=VERSION_MAX, description="Its version (default: the latest)."
    )
    target: ColumnName | None = Field(
        None,
        description="The column with the true label or value (default: the target the "
        "version was trained on; required for an uploaded version).",
    )
