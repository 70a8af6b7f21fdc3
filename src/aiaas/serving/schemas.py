"""Wire types of endpoints (no ORM here).

An endpoint name is a URL path segment (``/endpoints/{name}``, ``/v2/models/{name}``): the
model-name rule (ASCII letters, digits, ``_ . -``, starting with a letter or digit), at
most 100 characters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from aiaas.data.schemas import VERSION_MAX, Description
from aiaas.registry.schemas import ALIAS_PATTERN, MODEL_NAME_PATTERN
from aiaas.schemas import StrictModel

ENDPOINT_NAME_MAX = 100
MAX_TRAFFIC_ENTRIES = 10
TOTAL_WEIGHT = 100

EndpointName = Annotated[
    str, Field(min_length=1, max_length=ENDPOINT_NAME_MAX, pattern=MODEL_NAME_PATTERN)
]
ModelRef = Annotated[str, Field(min_length=1, max_length=200, pattern=MODEL_NAME_PATTERN)]
VersionNumber = Annotated[int, Field(ge=1, le=VERSION_MAX)]
AliasName = Annotated[str, Field(min_length=1, max_length=64, pattern=ALIAS_PATTERN)]
UnknownCategories = Literal["ignore", "error"]


class TrafficEntry(StrictModel):
    version: VersionNumber
    weight: Annotated[int, Field(ge=0, le=TOTAL_WEIGHT)]


def _check_traffic(traffic: list[TrafficEntry]) -> list[TrafficEntry]:
    if not traffic:
        raise ValueError("traffic names at least one version")
    if len(traffic) > MAX_TRAFFIC_ENTRIES:
        raise ValueError(f"traffic names at most {MAX_TRAFFIC_ENTRIES} versions")
    versions = [t.version for t in traffic]
    if len(set(versions)) != len(versions):
        raise ValueError("a version appears twice in traffic")
    if sum(t.weight for t in traffic) != TOTAL_WEIGHT:
        raise ValueError(f"traffic weights must sum to {TOTAL_WEIGHT}")
    return traffic


Traffic = Annotated[list[TrafficEntry], AfterValidator(_check_traffic)]


class ShadowSpec(StrictModel):
    version: VersionNumber


class _Routing(StrictModel):
    """Exactly one of ``version``, ``alias``, ``traffic`` says what is served."""

    version: VersionNumber | None = None
    alias: AliasName | None = None
    traffic: Traffic | None = None

    def _routing_given(self) -> int:
        return sum(x is not None for x in (self.version, self.alias, self.traffic))


class EndpointCreate(_Routing):
    """``POST /endpoints``: a name, a model, and one of version / alias / traffic."""

    name: EndpointName
    model: ModelRef
    shadow: ShadowSpec | None = None
    description: Description | None = None
    unknown_categories: UnknownCategories = "ignore"

    @model_validator(mode="after")
    def _one_routing(self) -> EndpointCreate:
        if self._routing_given() != 1:
            raise ValueError("give exactly one of version, alias or traffic")
        return self


class EndpointUpdate(_Routing):
    """``PATCH /endpoints/{name}``: new traffic (or version / alias), shadow, description.

    ``shadow: null`` removes the shadow; leaving it out keeps it.
    """

    shadow: ShadowSpec | None = None
    description: Description | None = None
    unknown_categories: UnknownCategories | None = None

    @model_validator(mode="after")
    def _at_most_one_routing(self) -> EndpointUpdate:
        if self._routing_given() > 1:
            raise ValueError("give at most one of version, alias or traffic")
        if not self.model_fields_set:
            raise ValueError("nothing to change")
        return self


class EndpointRollback(StrictModel):
    """``POST /endpoints/{name}/rollback``: back to ``revision`` (default: the previous one)."""

    revision: Annotated[int, Field(ge=1)] | None = None


class TrafficRead(BaseModel):
    version: int
    weight: int


class EndpointRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str | None
    model: str = Field(validation_alias="model_name")
    traffic: list[TrafficRead]
    alias: str | None
    shadow_version: int | None
    unknown_categories: str
    revision: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class EndpointRevisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    revision: int
    spec: dict[str, Any]
    reason: str
    created_by: str | None
    created_at: datetime
