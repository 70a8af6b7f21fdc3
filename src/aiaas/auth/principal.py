"""Who is calling: one organization, one role, and the credential that proved it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiaas.auth.permissions import Action, Role, allowed


@dataclass(frozen=True, slots=True)
class Principal:
    org_id: str
    org_slug: str
    role: Role
    actor_type: Literal["user", "api_key", "system"]
    actor_id: str
    #: The member the credential acts for: the user, or an API key's owner. None for
    #: organization-owned (service) keys and the system.
    user_id: str | None = None

    def can(self, action: Action) -> bool:
        return allowed(self.role, action)
