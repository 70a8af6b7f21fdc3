"""Endpoints: the use cases (deploy, change traffic, roll back, delete) and the serving view.

Request functions take ``(session, principal, …)``; :func:`load_views` and
:func:`revisions` are system functions for the serving cache (they read every
organization's endpoints, by design: one process serves them all). Invariants (see also
:mod:`aiaas.serving.models`):

- every tenant query starts from ``scoped(select(...), principal)``: another
  organization's endpoint is a 404 on every route, never a 403;
- a deploy names versions of the caller's own model, and their signatures must be
  compatible: one task, one set of classes, and one type per input column across the
  served versions; a shadow needs no column the served versions do not take;
- every change locks the endpoint row, increases ``revision`` by one and appends the new
  spec to ``endpoint_revisions`` in the same transaction;
- the registry refuses to delete a version an endpoint serves or shadows, and to delete
  or move (to an incompatible version) the alias an endpoint follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth.principal import Principal
from aiaas.db.base import scoped, utcnow
from aiaas.db.pagination import Page, PageParams, paginate
from aiaas.errors import Conflict, Forbidden, InvalidInput, NotFound
from aiaas.registry import service as registry
from aiaas.registry.models import ModelAlias, ModelVersion, RegisteredModel
from aiaas.registry.schemas import alias_problem
from aiaas.serving.models import Endpoint, EndpointRevision
from aiaas.serving.schemas import TOTAL_WEIGHT, EndpointCreate, EndpointUpdate
from aiaas.serving.views import EndpointView, VersionView

_NAME_MAX = 100


# --------------------------------------------------------------------------- reads


def get_endpoint(
    session: Session, principal: Principal, name: str, *, for_update: bool = False
) -> Endpoint:
    """One endpoint of the caller's organization by name (compared regardless of case)."""
    if not name or len(name) > _NAME_MAX:
        raise NotFound("endpoint", name[:_NAME_MAX])
    stmt = scoped(select(Endpoint), principal).where(Endpoint.name_folded == name.lower())
    if for_update:
        stmt = stmt.with_for_update(of=Endpoint)
    if (endpoint := session.scalar(stmt)) is None:
        raise NotFound("endpoint", name)
    return endpoint


def list_endpoints(
    session: Session, principal: Principal, params: PageParams, *, model: str | None = None
) -> Page[Endpoint]:
    """The organization's endpoints, newest first (``model``: only those serving it)."""
    stmt = scoped(select(Endpoint), principal)
    if model:
        stmt = stmt.join(RegisteredModel, RegisteredModel.id == Endpoint.model_id).where(
            RegisteredModel.name_folded == model.lower()
        )
    return paginate(session, stmt, params, Endpoint)


def list_revisions(
    session: Session, principal: Principal, name: str, params: PageParams
) -> Page[EndpointRevision]:
    """An endpoint's revisions, newest first."""
    endpoint = get_endpoint(session, principal, name)
    stmt = scoped(select(EndpointRevision), principal).where(
        EndpointRevision.endpoint_id == endpoint.id
    )
    return paginate(session, stmt, params, EndpointRevision)


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class _Spec:
    """What an endpoint serves, checked: traffic by version, or an alias; a shadow."""

    traffic: list[dict[str, int]]
    alias: str | None
    shadow_version: int | None


def create_endpoint(
    session: Session, principal: Principal, body: EndpointCreate, *, max_per_org: int
) -> Endpoint:
    """Deploy ``body.model`` to a new endpoint (201); the name must be free (409)."""
    audit.set_resource("endpoint", None, name=body.name, model=body.model)
    count = session.scalar(scoped(select(func.count(Endpoint.id)), principal)) or 0
    if count >= max_per_org:
        raise Forbidden(f"an organization may have at most {max_per_org} endpoints")
    if _exists(session, principal, body.name):
        raise Conflict(f"an endpoint named {body.name!r} exists")
    model = registry.get_model(session, principal, body.model)
    spec = _checked_spec(
        session,
        principal,
        model,
        version=body.version,
        alias=body.alias,
        traffic=_traffic(body),
        shadow=body.shadow.version if body.shadow else None,
    )
    endpoint = Endpoint(
        org_id=principal.org_id,
        name=body.name,
        description=body.description,
        model_id=model.id,
        traffic=spec.traffic,
        alias=spec.alias,
        shadow_version=spec.shadow_version,
        unknown_categories=body.unknown_categories,
        revision=1,
        created_by=principal.actor_id,
        updated_by=principal.actor_id,
    )
    endpoint.model = model
    session.add(endpoint)
    session.flush()
    audit.set_resource("endpoint", endpoint.id, name=endpoint.name, model=model.name)
    _record_revision(session, principal, endpoint, "deploy")
    return endpoint


def update_endpoint(
    session: Session, principal: Principal, name: str, body: EndpointUpdate
) -> Endpoint:
    """Change traffic, shadow, the unknown-category policy or the description."""
    endpoint = get_endpoint(session, principal, name, for_update=True)
    audit.set_resource("endpoint", endpoint.id, name=endpoint.name)
    fields = body.model_fields_set
    if "description" in fields:
        endpoint.description = body.description
    routing = body.version is not None or body.alias is not None or body.traffic is not None
    changes_spec = routing or "shadow" in fields or body.unknown_categories is not None
    if not changes_spec:
        session.flush()
        return endpoint
    if routing:
        version, alias, traffic = body.version, body.alias, _traffic(body)
    else:
        version, alias, traffic = None, endpoint.alias, list(endpoint.traffic)
    shadow = (body.shadow.version if body.shadow else None) if "shadow" in fields else None
    if "shadow" not in fields:
        shadow = endpoint.shadow_version
    spec = _checked_spec(
        session,
        principal,
        endpoint.model,
        version=version,
        alias=alias,
        traffic=traffic if alias is None else None,
        shadow=shadow,
    )
    if body.unknown_categories is not None:
        endpoint.unknown_categories = body.unknown_categories
    _apply(session, principal, endpoint, spec, "update")
    return endpoint


def rollback_endpoint(
    session: Session, principal: Principal, name: str, *, revision: int | None
) -> Endpoint:
    """Serve again what revision ``revision`` served (default: the one before the current),
    as a new revision."""
    endpoint = get_endpoint(session, principal, name, for_update=True)
    audit.set_resource("endpoint", endpoint.id, name=endpoint.name, rollback_to=revision)
    target = revision if revision is not None else endpoint.revision - 1
    if target < 1:
        raise Conflict("the endpoint has no earlier revision to roll back to")
    if target == endpoint.revision:
        raise Conflict(f"revision {target} is the current revision")
    row = session.scalar(
        scoped(select(EndpointRevision), principal).where(
            EndpointRevision.endpoint_id == endpoint.id, EndpointRevision.revision == target
        )
    )
    if row is None:
        raise NotFound("endpoint revision", f"{endpoint.name}@{target}")
    old = row.spec
    alias = old.get("alias")
    spec = _checked_spec(
        session,
        principal,
        endpoint.model,
        version=None,
        alias=alias,
        traffic=None if alias else [dict(t) for t in old.get("traffic") or []],
        shadow=old.get("shadow_version"),
    )
    endpoint.unknown_categories = str(old.get("unknown_categories") or "ignore")
    _apply(session, principal, endpoint, spec, f"rollback:{target}")
    return endpoint


def delete_endpoint(session: Session, principal: Principal, name: str) -> None:
    """Remove an endpoint; its versions stay in the registry."""
    endpoint = get_endpoint(session, principal, name, for_update=True)
    audit.set_resource("endpoint", endpoint.id, name=endpoint.name)
    session.delete(endpoint)
    session.flush()


def _exists(session: Session, principal: Principal, name: str) -> bool:
    stmt = scoped(select(Endpoint.id), principal).where(Endpoint.name_folded == name.lower())
    return session.scalar(stmt) is not None


def _traffic(body: EndpointCreate | EndpointUpdate) -> list[dict[str, int]] | None:
    if body.version is not None:
        return [{"version": body.version, "weight": TOTAL_WEIGHT}]
    if body.traffic is not None:
        return [{"version": t.version, "weight": t.weight} for t in body.traffic]
    return None


def _apply(
    session: Session, principal: Principal, endpoint: Endpoint, spec: _Spec, reason: str
) -> None:
    endpoint.traffic = spec.traffic
    endpoint.alias = spec.alias
    endpoint.shadow_version = spec.shadow_version
    endpoint.revision += 1
    endpoint.updated_by = principal.actor_id
    endpoint.updated_at = utcnow()
    session.flush()
    _record_revision(session, principal, endpoint, reason)


def _record_revision(
    session: Session, principal: Principal | None, endpoint: Endpoint, reason: str
) -> None:
    session.add(
        EndpointRevision(
            endpoint_id=endpoint.id,
            org_id=endpoint.org_id,
            revision=endpoint.revision,
            spec=endpoint.spec(),
            reason=reason,
            created_by=principal.actor_id if principal else None,
        )
    )
    session.flush()


# --------------------------------------------------------------------------- checks


def _checked_spec(
    session: Session,
    principal: Principal,
    model: RegisteredModel,
    *,
    version: int | None,
    alias: str | None,
    traffic: list[dict[str, int]] | None,
    shadow: int | None,
) -> _Spec:
    """The spec, once every version exists in ``model`` and their signatures agree."""
    if alias is not None:
        if problem := alias_problem(alias):
            raise InvalidInput(problem)
        served = [registry.resolve_alias(session, principal, model.name, alias)]
        traffic = []
    else:
        if traffic is None:
            assert version is not None
            traffic = [{"version": version, "weight": TOTAL_WEIGHT}]
        served = [
            registry.get_version(session, principal, model.name, t["version"]) for t in traffic
        ]
    shadowed = (
        None if shadow is None else registry.get_version(session, principal, model.name, shadow)
    )
    check_compatible(served, shadowed)
    return _Spec(traffic=traffic, alias=alias, shadow_version=shadow)


def _inputs(version: ModelVersion) -> dict[str, str]:
    """Required input column → type of a version's signature."""
    found: dict[str, str] = {}
    for col in (version.signature or {}).get("inputs") or []:
        if isinstance(col, dict) and col.get("required", col.get("used", True)):
            found[str(col.get("name"))] = str(col.get("type"))
    return found


def check_compatible(served: list[ModelVersion], shadow: ModelVersion | None) -> None:
    """422 unless the versions share a task and classes and agree on every column's type,
    and the shadow needs no column the served versions do not take."""
    versions = [*served, *([shadow] if shadow else [])]
    first = versions[0]
    classes = (first.signature or {}).get("classes")
    columns: dict[str, tuple[str, int]] = {}
    for v in versions:
        if v.task != first.task:
            raise InvalidInput(
                f"version {v.number} is a {v.task} model, version {first.number} a {first.task} one"
            )
        if (v.signature or {}).get("classes") != classes:
            raise InvalidInput(f"versions {first.number} and {v.number} predict different classes")
        for name, kind in _inputs(v).items():
            seen = columns.get(name)
            if seen is not None and _family(seen[0]) != _family(kind):
                raise InvalidInput(
                    f"column {name!r} is {seen[0]} in version {seen[1]} but {kind} in "
                    f"version {v.number}"
                )
            if v is not shadow:
                columns.setdefault(name, (kind, v.number))
    if shadow is not None:
        extra = sorted(set(_inputs(shadow)) - set(columns))
        if extra:
            raise InvalidInput(
                f"the shadow version {shadow.number} needs columns the served versions do "
                f"not take: {', '.join(map(repr, extra[:10]))}"
            )


_NUMBER_KINDS = ("int", "uint", "float", "double", "number", "numeric", "bool", "decimal")
_TEXT_KINDS = ("str", "string", "object", "category", "utf8", "large_string")


def _family(kind: str) -> str:
    """Column types that the same JSON value fits, in the type names of trained signatures
    (pandas: ``float64``, ``Int64``, ``object``) and uploaded ones (ONNX: ``float``,
    ``int64``, ``string``): an int column takes a float's value, text is text."""
    lowered = kind.lower()
    if lowered.startswith(_NUMBER_KINDS):
        return "number"
    if lowered.startswith(_TEXT_KINDS):
        return "text"
    if lowered.startswith(("datetime", "date", "timestamp")):
        return "datetime"
    return lowered


# --------------------------------------------------------------------------- registry hooks


@registry.register_in_use_check
def _served(session: Session, version: ModelVersion) -> str | None:
    """A version an endpoint serves or shadows is in use."""
    names = []
    for endpoint in session.scalars(select(Endpoint).where(Endpoint.model_id == version.model_id)):
        numbers = {int(t["version"]) for t in endpoint.traffic}
        if version.number in numbers or endpoint.shadow_version == version.number:
            names.append(endpoint.name)
        elif endpoint.alias is not None and _alias_target(session, endpoint) == version.id:
            names.append(endpoint.name)
    if not names:
        return None
    return f"endpoint {', '.join(repr(n) for n in sorted(names))} serves it"


def _alias_target(session: Session, endpoint: Endpoint) -> str | None:
    stmt = select(ModelAlias.version_id).where(
        ModelAlias.model_id == endpoint.model_id, ModelAlias.alias == endpoint.alias
    )
    return session.scalar(stmt)


@registry.register_alias_hook
def _alias_moved(
    session: Session, model: RegisteredModel, alias: str, version: ModelVersion | None
) -> None:
    """Endpoints that follow ``alias`` serve its new version (a new revision), or refuse."""
    stmt = (
        select(Endpoint)
        .where(Endpoint.model_id == model.id, Endpoint.alias == alias)
        .with_for_update(of=Endpoint)
    )
    for endpoint in session.scalars(stmt):
        if version is None:
            raise Conflict(
                f"endpoint {endpoint.name!r} follows the alias {alias}; point it elsewhere first"
            )
        shadow = None
        if endpoint.shadow_version is not None:
            shadow = session.scalar(
                select(ModelVersion).where(
                    ModelVersion.model_id == model.id,
                    ModelVersion.number == endpoint.shadow_version,
                )
            )
        try:
            check_compatible([version], shadow)
        except InvalidInput as exc:
            raise Conflict(
                f"endpoint {endpoint.name!r} follows the alias {alias}: {exc.detail}"
            ) from None
        endpoint.revision += 1
        endpoint.updated_at = utcnow()
        session.flush()
        _record_revision(session, None, endpoint, f"alias:{alias}->{version.number}")


# --------------------------------------------------------------------------- serving view


def revisions(session: Session) -> dict[str, int]:
    """Every endpoint's id → revision (system function: all organizations)."""
    rows = session.execute(select(Endpoint.id, Endpoint.revision)).all()
    return {str(row[0]): int(row[1]) for row in rows}


def load_views(session: Session, ids: list[str] | None = None) -> list[EndpointView]:
    """The serving view of every endpoint (or of ``ids``), all organizations."""
    stmt = select(Endpoint)
    if ids is not None:
        stmt = stmt.where(Endpoint.id.in_(ids))
    views = []
    for endpoint in session.scalars(stmt):
        view = _view(session, endpoint)
        if view is not None:
            views.append(view)
    return views


def _view(session: Session, endpoint: Endpoint) -> EndpointView | None:
    versions = {
        v.number: v
        for v in session.scalars(
            select(ModelVersion).where(ModelVersion.model_id == endpoint.model_id)
        )
    }
    if endpoint.alias is not None:
        target = _alias_target(session, endpoint)
        chosen = [v for v in versions.values() if v.id == target]
        weighted = [(chosen[0], TOTAL_WEIGHT)] if chosen else []
    else:
        weighted = [
            (versions[int(t["version"])], int(t["weight"]))
            for t in endpoint.traffic
            if int(t["version"]) in versions
        ]
    routes: list[tuple[VersionView, int]] = []
    total = 0
    for version, weight in weighted:
        if weight <= 0:
            continue
        total += weight
        routes.append((_version_view(endpoint, version), total))
    if not routes:
        return None
    shadow = versions.get(endpoint.shadow_version) if endpoint.shadow_version else None
    return EndpointView(
        id=endpoint.id,
        org_id=endpoint.org_id,
        name=endpoint.name,
        model_name=endpoint.model.name,
        revision=endpoint.revision,
        routes=tuple(routes),
        shadow=_version_view(endpoint, shadow) if shadow else None,
        unknown_categories=endpoint.unknown_categories,
    )


def _version_view(endpoint: Endpoint, version: ModelVersion) -> VersionView:
    return VersionView(
        id=version.id,
        org_id=version.org_id,
        model_name=endpoint.model.name,
        number=version.number,
        task=version.task,
        signature=dict(version.signature or {}),
        artifacts=tuple(str(a.get("path")) for a in version.artifacts or []),
        storage_prefix=version.storage_prefix,
        size_bytes=int(version.size_bytes or 0),
    )
