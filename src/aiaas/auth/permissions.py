"""Roles, actions and the one permission matrix every route goes through.

A route declares the action it performs (``require(Action.X)``); anything a role is not
granted here is denied. Adding a route without an action fails the route-inventory test.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    owner = "owner"
    admin = "admin"
    developer = "developer"
    viewer = "viewer"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.viewer: 0, Role.developer: 1, Role.admin: 2, Role.owner: 3}


class Action(StrEnum):
    # identity
    ME_READ = "me:read"
    MEMBER_READ = "member:read"
    MEMBER_MANAGE = "member:manage"
    APIKEY_READ = "apikey:read"
    APIKEY_MANAGE = "apikey:manage"
    AUDIT_READ = "audit:read"
    # data
    DATASET_READ = "dataset:read"
    DATASET_WRITE = "dataset:write"
    DATASET_DELETE = "dataset:delete"
    DATASET_IMPORT = "dataset:import"
    SQL_QUERY = "sql:query"
    # training
    TRAINING_READ = "training:read"
    TRAINING_WRITE = "training:write"
    # registry
    MODEL_READ = "model:read"
    MODEL_WRITE = "model:write"
    MODEL_DELETE = "model:delete"
    # serving
    ENDPOINT_READ = "endpoint:read"
    ENDPOINT_WRITE = "endpoint:write"
    ENDPOINT_DELETE = "endpoint:delete"
    PREDICT = "endpoint:predict"
    # batch prediction
    BATCH_READ = "batch:read"
    BATCH_WRITE = "batch:write"


_VIEWER = frozenset(
    {
        Action.ME_READ,
        Action.DATASET_READ,
        Action.SQL_QUERY,
        Action.TRAINING_READ,
        Action.MODEL_READ,
        Action.ENDPOINT_READ,
        Action.PREDICT,
        Action.BATCH_READ,
    }
)
_DEVELOPER = _VIEWER | {
    Action.DATASET_WRITE,
    Action.DATASET_DELETE,
    Action.TRAINING_WRITE,
    Action.MODEL_WRITE,
    Action.MODEL_DELETE,
    Action.ENDPOINT_WRITE,
    Action.ENDPOINT_DELETE,
    Action.BATCH_WRITE,
}
_ADMIN = _DEVELOPER | {
    Action.MEMBER_READ,
    Action.MEMBER_MANAGE,
    Action.APIKEY_READ,
    Action.APIKEY_MANAGE,
    Action.AUDIT_READ,
    Action.DATASET_IMPORT,
}
_OWNER = _ADMIN

PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.viewer: _VIEWER,
    Role.developer: frozenset(_DEVELOPER),
    Role.admin: frozenset(_ADMIN),
    Role.owner: frozenset(_OWNER),
}


def allowed(role: Role, action: Action) -> bool:
    return action in PERMISSIONS[role]
