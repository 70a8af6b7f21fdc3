"""Wire types of identity routes. Requests forbid unknown fields; responses are allow-lists."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from aiaas.auth.permissions import Role
from aiaas.schemas import Name, StrictModel

Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        max_length=320,
        pattern=r"^[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f]{1,255}$",
    ),
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^\x00]+$")]


class OrgRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    slug: str
    name: str


class MeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    organization: OrgRead
    role: Role
    actor_type: str
    actor_id: str
    email: str | None = None
    api_key_name: str | None = None


class TokenRead(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str
    organization: str


class MemberRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    user_id: str
    email: str
    role: Role
    created_at: datetime


class MemberCreate(StrictModel):
    email: Email
    role: Role
    password: Password = Field(description="Initial password of the new user account.")


class MemberUpdate(StrictModel):
    role: Role


class ApiKeyCreate(StrictModel):
    name: Name
    role: Role = Role.developer
    expires_at: AwareDatetime | None = Field(None, description="When the key stops working.")


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    role: Role = Field(description="The key's own role; it acts at most at its owner's role.")
    prefix: str
    owner_user_id: str | None = Field(
        description="The member the key acts for; null: the organization's (a service key)."
    )
    owner_email: str | None = Field(description="The owner's e-mail, while they are a member.")
    effective_role: Role | None = Field(
        description="The role the key acts with now (the lower of its own and its owner's); "
        "null when its owner is no longer a member and the key authenticates nothing."
    )
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyTransfer(StrictModel):
    owner_user_id: Annotated[str, StringConstraints(max_length=40)] | None = Field(
        description="A member's user id, or null to give the key to the organization."
    )


class ApiKeyWithSecretRead(ApiKeyRead):
    key: str = Field(description="The secret key. Shown once; store it now.")


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    actor_type: str | None
    actor_id: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    outcome: str
    status_code: int
    request_id: str | None
    client_ip: str | None
    details: dict[str, object] | None
    created_at: datetime
