"""Registered models, their versions and aliases: the use cases of the registry.

Request functions take ``(session, principal, …)`` (and the artifact ``store`` where bytes
are read, written or deleted; :func:`register_uploaded` adds a version from an ONNX upload
checked by :mod:`aiaas.registry.upload`; :func:`quantize_version` adds a quantized copy of
a version, made and measured by :mod:`aiaas.registry.quantize`); :func:`register_trained`
and :func:`purge_files` are system functions for the jobs worker. Invariants (see also
:mod:`aiaas.registry.models`):

- every tenant query starts from ``scoped(select(...), principal)``: another organization's
  model is a 404, never a 403, and never listed;
- a version's files are stored under ``models/<model id>/<version id>/`` before its row is
  added (bytes first, row second); if the row is not added they are deleted again, and a
  crash in between leaves files without a row, which :func:`aiaas.registry.sweep.sweep_orphans`
  removes;
- a deleted version's (or model's) files are deleted only after the commit that removed
  its row: a failed commit keeps row and files together, never a row without files;
- a version in use (an alias names it, or a check added by :func:`register_in_use_check`
  says so) is not deleted (409); a model is deleted only when none of its versions is in
  use, and then with all its versions and files;
- version numbers are never reused (``last_number``); an alias moves by one row update.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import structlog
from sqlalchemy import event, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth.principal import Principal
from aiaas.data.schemas import VERSION_MAX
from aiaas.data.scratch import work_dir
from aiaas.db.base import new_id, scoped, utcnow
from aiaas.db.pagination import Page, PageParams, paginate
from aiaas.errors import Conflict, InvalidInput, NotFound
from aiaas.registry import artifacts
from aiaas.registry.card import CardInput, render_card
from aiaas.registry.models import ModelAlias, ModelVersion, RegisteredModel
from aiaas.registry.schemas import ONNX_FILE, alias_problem, model_name_problem
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore

if TYPE_CHECKING:
    from aiaas.registry.quantize import QuantizedOnnx
    from aiaas.registry.upload import CheckedOnnx

log = structlog.get_logger()

#: Says why a version is in use (``"endpoint 'churn' serves it"``), or None when it is not.
InUseCheck = Callable[[Session, ModelVersion], str | None]
_IN_USE_CHECKS: list[InUseCheck] = []
#: Versions register_trained found already registered: purge_files leaves their files alone.
_FOUND: weakref.WeakSet[ModelVersion] = weakref.WeakSet()
_CHUNK = 1024 * 1024
_MEDIA_TYPES = {".json": "application/json", ".onnx": "application/octet-stream"}
#: The ``metric`` of an uploaded version: nobody here scored it.
UPLOADED_METRIC = "none"


# --------------------------------------------------------------------------- in use


def register_in_use_check(check: InUseCheck) -> InUseCheck:
    """Add a check that can refuse the deletion of a version (serving adds "an endpoint
    serves it"). Checks run in the deleting transaction, after the version row is locked."""
    if check not in _IN_USE_CHECKS:
        _IN_USE_CHECKS.append(check)
    return check


@register_in_use_check
def _aliased(session: Session, version: ModelVersion) -> str | None:
    stmt = select(ModelAlias.alias).where(ModelAlias.version_id == version.id)
    names = list(session.scalars(stmt.order_by(ModelAlias.alias)))
    if not names:
        return None
    if len(names) == 1:
        return f"the alias {names[0]} names it"
    return f"the aliases {', '.join(names)} name it"


#: Runs when an alias moves (``version``: its new target) or is deleted (``version`` None),
#: in the same transaction; may raise (serving refuses a move its endpoints cannot serve).
AliasHook = Callable[[Session, RegisteredModel, str, ModelVersion | None], None]
_ALIAS_HOOKS: list[AliasHook] = []


def register_alias_hook(hook: AliasHook) -> AliasHook:
    """Add a hook that sees every alias move and deletion (serving bumps the revision of
    the endpoints that follow the alias)."""
    if hook not in _ALIAS_HOOKS:
        _ALIAS_HOOKS.append(hook)
    return hook


def in_use_reasons(session: Session, version: ModelVersion) -> list[str]:
    """Why ``version`` must not be deleted (empty: it may be)."""
    return [reason for check in _IN_USE_CHECKS if (reason := check(session, version))]


# --------------------------------------------------------------------------- reads


def get_model(
    session: Session, principal: Principal, name: str, *, for_update: bool = False
) -> RegisteredModel:
    """One model of the caller's organization by name (compared regardless of case)."""
    if model_name_problem(name):
        raise NotFound("model", name[:200])
    stmt = scoped(select(RegisteredModel), principal).where(
        RegisteredModel.name_folded == name.lower()
    )
    if for_update:
        stmt = stmt.with_for_update()
    if (model := session.scalar(stmt)) is None:
        raise NotFound("model", name)
    return model


def list_models(
    session: Session, principal: Principal, params: PageParams, *, name_prefix: str | None = None
) -> Page[RegisteredModel]:
    """The organization's models, newest first (``name_prefix``: regardless of case)."""
    stmt = scoped(select(RegisteredModel), principal)
    if name_prefix:
        stmt = stmt.where(
            RegisteredModel.name_folded.startswith(name_prefix.lower(), autoescape=True)
        )
    return paginate(session, stmt, params, RegisteredModel)


def _version_of(
    session: Session, principal: Principal, model: RegisteredModel, number: int, *, lock: bool
) -> ModelVersion:
    if not 1 <= number <= VERSION_MAX:  # the column is a 32-bit integer on every backend
        raise InvalidInput(f"version numbers are 1 to {VERSION_MAX}")
    stmt = scoped(select(ModelVersion), principal).where(
        ModelVersion.model_id == model.id, ModelVersion.number == number
    )
    if lock:
        stmt = stmt.with_for_update(of=ModelVersion)
    if (version := session.scalar(stmt)) is None:
        raise NotFound("model version", f"{model.name}@{number}")
    return version


def get_version(session: Session, principal: Principal, name: str, number: int) -> ModelVersion:
    """Version ``number`` of model ``name``."""
    return _version_of(session, principal, get_model(session, principal, name), number, lock=False)


def list_versions(
    session: Session, principal: Principal, name: str, params: PageParams
) -> Page[ModelVersion]:
    """The versions of a model, newest first."""
    model = get_model(session, principal, name)
    stmt = scoped(select(ModelVersion), principal).where(ModelVersion.model_id == model.id)
    return paginate(session, stmt, params, ModelVersion)


def resolve_alias(session: Session, principal: Principal, name: str, alias: str) -> ModelVersion:
    """The version an alias names; ``latest`` is always the newest version."""
    model = get_model(session, principal, name)
    if alias == "latest":
        if not model.latest_version:
            raise NotFound(f"model {model.name!r} has no version")
        return _version_of(session, principal, model, model.latest_version, lock=False)
    row = _alias_row(session, principal, model, alias)
    return _version_of(session, principal, model, row.version_number, lock=False)


def _alias_row(
    session: Session, principal: Principal, model: RegisteredModel, alias: str
) -> ModelAlias:
    stmt = scoped(select(ModelAlias), principal).where(
        ModelAlias.model_id == model.id, ModelAlias.alias == alias
    )
    if (row := session.scalar(stmt)) is None:
        raise NotFound("alias", f"{model.name}:{alias[:64]}")
    return row


@dataclass(frozen=True)
class ArtifactDownload:
    """An open stored file of a version, ready to stream."""

    chunks: Iterator[bytes]
    size: int
    sha256: str
    filename: str
    media_type: str


def open_artifact(
    session: Session, principal: Principal, store: ArtifactStore, name: str, number: int, path: str
) -> ArtifactDownload:
    """Open one of a version's files (``path`` must be one its ``artifacts`` list)."""
    version = get_version(session, principal, name, number)
    entry = next((a for a in version.artifacts if a.get("path") == path), None)
    if entry is None:
        if path == ONNX_FILE:
            raise NotFound(f"ONNX graph of version {number} of model {version.model_name!r}")
        raise NotFound("artifact", path[:200])
    try:
        handle = store.open(version.org_id, f"{version.storage_prefix}/{path}")
    except FileNotFoundError:  # the invariants make this impossible; still no 500
        log.error("model_artifact_missing", version_id=version.id, path=path)
        raise NotFound("artifact", path) from None
    return ArtifactDownload(
        chunks=_chunks(handle),
        size=int(entry["size"]),
        sha256=str(entry["sha256"]),
        filename=_download_name(version, path),
        media_type=_MEDIA_TYPES.get(Path(path).suffix, "application/octet-stream"),
    )


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while block := handle.read(_CHUNK):
            yield block


def _download_name(version: ModelVersion, path: str) -> str:
    """``<model>-v<n>-<file>``: model names and file names are already header-safe."""
    return f"{version.model_name}-v{version.number}-{path}"


# --------------------------------------------------------------------------- writes


def update_model(
    session: Session,
    principal: Principal,
    name: str,
    *,
    description: str | None,
    tags: dict[str, str] | None,
) -> RegisteredModel:
    """Change a model's description and/or replace its tags."""
    model = get_model(session, principal, name)
    audit.set_resource("model", model.id, name=model.name)
    if description is not None:
        model.description = description
    if tags is not None:
        model.tags = dict(tags)
    model.updated_at = utcnow()
    session.flush()
    return model


def update_version(
    session: Session, principal: Principal, name: str, number: int, *, tags: dict[str, str]
) -> ModelVersion:
    """Replace a version's tags (the only thing of a version that changes)."""
    version = get_version(session, principal, name, number)
    audit.set_resource("model_version", version.id, model=version.model_name, number=number)
    version.tags = dict(tags)
    session.flush()
    return version


def set_alias(
    session: Session, principal: Principal, name: str, alias: str, *, version: int
) -> ModelAlias:
    """Point ``alias`` at version ``version``: created, or moved by one atomic upsert."""
    if problem := alias_problem(alias):
        raise InvalidInput(problem)
    model = get_model(session, principal, name)
    target = _version_of(session, principal, model, version, lock=True)  # not deleted meanwhile
    audit.set_resource("model_alias", model.id, model=model.name, alias=alias, version=version)
    values = {
        "id": new_id("mal"),
        "model_id": model.id,
        "org_id": principal.org_id,
        "alias": alias,
        "version_id": target.id,
        "version_number": target.number,
        "updated_by": principal.actor_id,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    moved = ("version_id", "version_number", "updated_by", "updated_at")
    insert = _dialect_insert(session)(ModelAlias).values(**values)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["model_id", "alias"], set_={k: insert.excluded[k] for k in moved}
        )
    )
    row = session.scalar(
        select(ModelAlias)
        .where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
        .execution_options(populate_existing=True)
    )
    assert row is not None  # just written in this transaction
    for hook in _ALIAS_HOOKS:
        hook(session, model, alias, target)
    return row


def delete_alias(session: Session, principal: Principal, name: str, alias: str) -> None:
    """Remove an alias (its version stays)."""
    if problem := alias_problem(alias):
        raise InvalidInput(problem)
    model = get_model(session, principal, name)
    row = _alias_row(session, principal, model, alias)
    audit.set_resource("model_alias", model.id, model=model.name, alias=alias)
    for hook in _ALIAS_HOOKS:
        hook(session, model, alias, None)
    session.delete(row)
    session.flush()


def register_uploaded(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    name: str,
    checked: CheckedOnnx,
) -> ModelVersion:
    """Register an uploaded ONNX file, already checked in the sandbox, as the next version
    of model ``name`` (created when the organization has none of that name).

    Bytes first, row second: ``model.onnx`` is stored (atomically) under a fresh prefix
    before the row is added, and deleted again if adding it fails; a failed commit leaves
    files without a row, which :func:`aiaas.registry.sweep.sweep_orphans` removes.
    """
    audit.set_resource("model_version", None, model=name[:200], source="upload")
    if problem := model_name_problem(name):
        raise InvalidInput(problem)
    model = _model_for(session, principal.org_id, name, principal.actor_id)
    version_id = new_id("mv")  # the key needs the id before the row exists
    prefix = f"models/{model.id}/{version_id}"
    try:
        store.put_file(principal.org_id, f"{prefix}/{ONNX_FILE}", checked.path)
        number = _next_number(session, model)
        version = _version_row(_uploaded_content(checked), model, number, version_id, prefix)
        version.created_by = principal.actor_id
        session.add(version)
        session.flush()
        # loaded here, in the caller's thread: the response reads it after the session closed
        session.refresh(version, attribute_names=["aliases"])
    except BaseException:
        _discard(store, principal.org_id, prefix)
        raise
    audit.set_resource(
        "model_version", version.id, model=model.name, number=number, source="upload"
    )
    log.info("model_version_uploaded", model_id=model.id, number=number, bytes=checked.size)
    return version


def quantize_version(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    settings: Settings,
    name: str,
    number: int,
    *,
    dataset_id: str,
    dataset_version: int | None = None,
    target: str | None = None,
) -> ModelVersion:
    """Quantize version ``number`` of model ``name`` (its ONNX graph's weights as 8-bit
    integers) into the model's next version, measured against the source on a reference
    dataset version (:mod:`aiaas.registry.quantize`; the work runs in a sandboxed child).

    422 for a version without an ONNX graph, a graph with nothing to quantize, a dataset
    without a column the model takes or without the target, or no target to measure
    with; 404 for another organization's model or dataset. Bytes first, row second, as
    :func:`register_uploaded`; nothing is written before the child has answered.
    """
    from aiaas.registry import quantize  # the upload check and the data domain: on demand

    audit.set_resource("model_version", None, model=name[:200], source="quantized")
    source = get_version(session, principal, name, number)
    if not any(a.get("path") == ONNX_FILE for a in source.artifacts or []):
        raise InvalidInput(
            f"version {number} of model {source.model_name!r} has no ONNX graph to quantize"
        )
    ref = quantize.reference_for(
        session, principal, store, settings, source,
        dataset_id=dataset_id, dataset_version=dataset_version, target=target,
    )  # fmt: skip
    with work_dir(settings) as work:
        quantized = quantize.quantize_in_sandbox(settings, store, source, ref, work)
        version = _register_quantized(session, principal, store, quantized)
    audit.set_resource(
        "model_version", version.id, model=source.model_name, number=version.number,
        source="quantized", from_version=number,
    )  # fmt: skip
    log.info(
        "model_version_quantized",
        model_id=source.model_id,
        number=version.number,
        from_version=number,
        bytes=quantized.size,
        source_bytes=quantized.source_size,
    )
    return version


def _register_quantized(
    session: Session, principal: Principal, store: ArtifactStore, q: QuantizedOnnx
) -> ModelVersion:
    """Store the quantized graph (and a trained source's ``encoding.json``), then add the
    version row; the files go again if the row is not added."""
    model = q.source.model
    version_id = new_id("mv")
    prefix = f"models/{model.id}/{version_id}"
    try:
        store.put_file(principal.org_id, f"{prefix}/{ONNX_FILE}", q.path)
        copied = _copy_files(store, q.source, prefix, (artifacts.ENCODING,))
        number = _next_number(session, model)
        version = _version_row(_quantized_content(q, copied), model, number, version_id, prefix)
        version.created_by = principal.actor_id
        session.add(version)
        session.flush()
        session.refresh(version, attribute_names=["aliases"])
    except BaseException:
        _discard(store, principal.org_id, prefix)
        raise
    return version


def _copy_files(
    store: ArtifactStore, source: ModelVersion, prefix: str, names: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Copy those of the source version's files named ``names`` to ``prefix`` (store to
    store, checked against their SHA-256); their ``artifacts`` entries."""
    copied = []
    for entry in source.artifacts or []:
        if entry.get("path") not in names:
            continue
        data = store.get_bytes(source.org_id, f"{source.storage_prefix}/{entry['path']}")
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise Conflict(f"the stored file {entry['path']!r} of the source version changed")
        store.put_bytes(source.org_id, f"{prefix}/{entry['path']}", data)
        copied.append(dict(entry))
    return copied


def delete_version(
    session: Session, principal: Principal, store: ArtifactStore, name: str, number: int
) -> None:
    """Delete a version that is not in use (409 otherwise), then, after the commit, its files."""
    model = get_model(session, principal, name, for_update=True)
    version = _version_of(session, principal, model, number, lock=True)
    audit.set_resource("model_version", version.id, model=model.name, number=number)
    if reasons := in_use_reasons(session, version):
        raise Conflict(f"version {number} of model {model.name!r} is in use: {'; '.join(reasons)}")
    session.delete(version)
    session.flush()
    newest = session.scalar(
        select(func.max(ModelVersion.number)).where(ModelVersion.model_id == model.id)
    )
    model.latest_version = int(newest or 0)
    model.updated_at = utcnow()
    session.flush()
    _delete_after_commit(session, store, principal.org_id, version.storage_prefix)


def delete_model(session: Session, principal: Principal, store: ArtifactStore, name: str) -> None:
    """Delete a model with all its versions and files; 409 while any version is in use."""
    model = get_model(session, principal, name, for_update=True)
    audit.set_resource("model", model.id, name=model.name)
    stmt = select(ModelVersion).where(ModelVersion.model_id == model.id)
    for version in session.scalars(
        stmt.order_by(ModelVersion.number).with_for_update(of=ModelVersion)
    ):
        if reasons := in_use_reasons(session, version):
            raise Conflict(
                f"version {version.number} of model {model.name!r} is in use: "
                f"{'; '.join(reasons)} (delete or move what uses it first)"
            )
    session.delete(model)  # versions and aliases go by ON DELETE CASCADE
    session.flush()
    _delete_after_commit(session, store, principal.org_id, f"models/{model.id}")


def _delete_after_commit(session: Session, store: ArtifactStore, org_id: str, prefix: str) -> None:
    def delete_files(_session: Session) -> None:
        # only once the rows are gone for good: a failed commit keeps files and rows together
        try:
            store.delete_prefix(org_id, prefix)
        except Exception as exc:  # the rows are gone; sweep_orphans removes the files later
            log.warning("model_files_not_deleted", prefix=prefix, error=str(exc))

    event.listen(session, "after_commit", delete_files, once=True)


# --------------------------------------------------------------------------- system


def register_trained(
    session: Session,
    store: ArtifactStore,
    *,
    org_id: str,
    model_name: str,
    model_dir: Path,
    lineage: dict[str, Any],
    job_id: str,
    created_by: str | None,
    extra_metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    """Register a saved AutoML model directory as the next version of ``model_name``.

    A system function for the jobs worker: it runs in the worker's transaction and only
    flushes. Idempotent by ``job_id`` (a retried job gets the version it registered). The
    files are stored before the row is added and deleted again if adding it fails; if the
    caller's commit fails, the caller calls :func:`purge_files` with the result.
    """
    if (found := _by_job(session, org_id, job_id)) is not None:
        _FOUND.add(found)
        return found
    if problem := model_name_problem(model_name):
        raise InvalidInput(problem)
    saved = artifacts.read_saved_model(model_dir)
    model = _model_for(session, org_id, model_name, created_by)
    version_id = new_id("mv")  # the keys need the id before the row exists
    prefix = f"models/{model.id}/{version_id}"
    try:
        artifacts.upload(store, org_id, prefix, saved.files)
        number = _next_number(session, model)
        content = _trained_content(saved, lineage, extra_metrics)
        version = _version_row(content, model, number, version_id, prefix)
        version.job_id, version.created_by = job_id, created_by
        session.add(version)
        session.flush()
    except IntegrityError:
        _discard(store, org_id, prefix)
        raise Conflict("this job's model version was registered at the same time") from None
    except BaseException:
        _discard(store, org_id, prefix)
        raise
    audit.set_resource("model_version", version.id, model=model.name, number=number, job=job_id)
    log.info("model_version_registered", model_id=model.id, number=number, job_id=job_id)
    return version


def _by_job(session: Session, org_id: str, job_id: str) -> ModelVersion | None:
    # unscoped on purpose (job ids are unique across organizations), then checked
    version = session.scalar(select(ModelVersion).where(ModelVersion.job_id == job_id))
    if version is not None and version.org_id != org_id:
        raise Conflict("the job id belongs to another organization's model version")
    return version


def _dialect_insert(session: Session) -> Any:
    """The INSERT … ON CONFLICT construct of the session's database."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _model_for(session: Session, org_id: str, name: str, created_by: str | None) -> RegisteredModel:
    """Get or create the model ``name`` (regardless of case) of ``org_id``.

    Race-safe without a savepoint: two creators run ``INSERT … ON CONFLICT DO NOTHING``
    (the unique index on ``(org_id, lower(name))`` decides) and both read the one row. A
    SAVEPOINT is avoided because pysqlite releases an outermost one as a COMMIT.
    """
    now = utcnow()
    session.execute(
        _dialect_insert(session)(RegisteredModel)
        .values(
            id=new_id("mdl"),
            org_id=org_id,
            name=name,
            tags={},
            latest_version=0,
            last_number=0,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )
    stmt = select(RegisteredModel).where(
        RegisteredModel.org_id == org_id, RegisteredModel.name_folded == name.lower()
    )
    model = session.scalar(stmt.execution_options(populate_existing=True))
    if model is None:  # only if the conflict was another constraint
        raise Conflict(f"model {name!r} cannot be created")
    return model


def _next_number(session: Session, model: RegisteredModel) -> int:
    """Take the next number with one UPDATE: it locks the model row until the commit."""
    session.execute(
        update(RegisteredModel)
        .where(RegisteredModel.id == model.id)
        .values(
            last_number=RegisteredModel.last_number + 1,
            latest_version=RegisteredModel.last_number + 1,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(model)
    return model.last_number


@dataclass(frozen=True)
class _Content:
    """What a new version row holds besides its keys, and what its card is written from."""

    task: str
    metric: str
    metrics: dict[str, Any]
    signature: dict[str, Any]
    lineage: dict[str, Any]
    report: dict[str, Any]  # kept with the version
    card_report: dict[str, Any]  # what the card reads (a trained model's full report)
    feature_importance: list[dict[str, Any]]
    leaderboard: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]
    size_bytes: int


def _trained_content(
    saved: artifacts.SavedModel, lineage: dict[str, Any], extra_metrics: dict[str, Any] | None
) -> _Content:
    return _Content(
        task=str(saved.manifest["task"]),
        metric=str(saved.manifest["metric"]),
        metrics=artifacts.metrics(saved, extra_metrics),
        signature=artifacts.signature(saved),
        lineage=artifacts.storable(dict(lineage)),
        report=artifacts.version_report(saved),
        card_report=saved.report,
        feature_importance=saved.feature_importance,
        leaderboard=saved.leaderboard,
        artifacts=[f.entry() for f in saved.files],
        size_bytes=saved.size_bytes,
    )


def _uploaded_content(checked: CheckedOnnx) -> _Content:
    report = artifacts.storable(checked.report())
    return _Content(
        task=checked.task,
        metric=UPLOADED_METRIC,
        metrics={},
        signature=artifacts.storable(checked.signature),
        lineage=artifacts.storable(checked.lineage()),
        report=report,
        card_report=report,
        feature_importance=[],
        leaderboard=[],
        artifacts=[checked.entry()],
        size_bytes=checked.size,
    )


def _quantized_content(q: QuantizedOnnx, copied: list[dict[str, Any]]) -> _Content:
    report = artifacts.storable(q.report())
    files = [q.entry(), *copied]
    return _Content(
        task=q.source.task,
        metric=q.metric,
        metrics=artifacts.storable(q.metrics()),
        signature=dict(q.source.signature or {}),
        lineage=artifacts.storable(q.lineage()),
        report=report,
        card_report=report,
        feature_importance=[],
        leaderboard=[],
        artifacts=sorted(files, key=lambda f: str(f["path"])),
        size_bytes=sum(int(f["size"]) for f in files),
    )


def _version_row(
    content: _Content, model: RegisteredModel, number: int, version_id: str, prefix: str
) -> ModelVersion:
    c = content
    card = CardInput(
        model.name, number, c.task, c.metric, c.metrics, c.card_report, c.lineage, c.signature,
        c.feature_importance, c.leaderboard,
    )  # fmt: skip
    return ModelVersion(
        id=version_id,
        model=model,
        model_id=model.id,
        org_id=model.org_id,
        number=number,
        task=c.task,
        metric=c.metric,
        metrics=c.metrics,
        signature=c.signature,
        lineage=c.lineage,
        feature_importance=c.feature_importance or None,
        card=render_card(card),
        report=c.report,
        artifacts=c.artifacts,
        size_bytes=c.size_bytes,
        storage_prefix=prefix,
        tags={},
    )


def _discard(store: ArtifactStore, org_id: str, prefix: str) -> None:
    try:
        store.delete_prefix(org_id, prefix)
    except Exception as exc:  # the files stay until sweep_orphans finds them without a row
        log.warning("model_files_not_deleted", prefix=prefix, error=str(exc))


def purge_files(store: ArtifactStore, mv: ModelVersion) -> None:
    """Delete every stored file of ``mv``: best effort, never raises (a missing file is fine).

    For a version whose row did not commit (the jobs worker after a failed commit). A
    version that :func:`register_trained` found already registered is left alone: it was
    committed before, and deleting its files would leave a row without files.
    """
    if mv in _FOUND:
        log.info("model_files_kept", reason="registered by an earlier attempt")
        return
    values = inspect(mv).dict  # no database access: the instance may be detached or expired
    org_id, prefix = values.get("org_id"), values.get("storage_prefix")
    if not isinstance(org_id, str) or not isinstance(prefix, str):
        log.warning("model_files_not_purged", reason="the version's keys are not loaded")
        return
    _discard(store, org_id, prefix)
