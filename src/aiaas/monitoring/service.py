"""Monitoring use cases: ground-truth feedback in, live quality per version out."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.auth import audit
from aiaas.auth.principal import Principal
from aiaas.data.models import DatasetVersion
from aiaas.db.base import utcnow
from aiaas.errors import Conflict, InvalidInput, ServiceUnavailable
from aiaas.monitoring import drift, logs, quality
from aiaas.monitoring.models import Feedback
from aiaas.monitoring.schemas import (
    ColumnDriftRead,
    DriftRead,
    FeedbackCreate,
    FeedbackRead,
    MonitoringRead,
    QualityPoint,
    VersionQuality,
)
from aiaas.registry.models import ModelVersion
from aiaas.serving import service as serving_service
from aiaas.serving.models import Endpoint
from aiaas.storage import ArtifactStore

_UNITS = {"m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_S = 90 * 86400
MAX_BUCKETS = 1000
_CHUNK = 1000  # ids per IN (...) query


# --------------------------------------------------------------------------- feedback


def record_feedback(
    session: Session, principal: Principal, name: str, body: FeedbackCreate
) -> FeedbackRead:
    """Store the actual outcome of each item's prediction (a repeat replaces the earlier)."""
    endpoint = serving_service.get_endpoint(session, principal, name)
    audit.set_resource("endpoint", endpoint.id, name=endpoint.name, feedback=len(body.items))
    checker = _actual_checker(session, endpoint)
    actual: dict[str, Any] = {}
    for i, item in enumerate(body.items):
        actual[item.prediction_id] = checker(i, item.actual)  # the last of repeats wins
    now = utcnow()
    ids = list(actual)
    known: dict[str, str] = {}
    for at in range(0, len(ids), _CHUNK):
        chunk = ids[at : at + _CHUNK]
        stmt = select(Feedback.prediction_id, Feedback.id).where(
            Feedback.endpoint_id == endpoint.id, Feedback.prediction_id.in_(chunk)
        )
        known.update({pid: fid for pid, fid in session.execute(stmt)})  # noqa: C416
    fresh = [
        {"org_id": endpoint.org_id, "endpoint_id": endpoint.id, "prediction_id": pid,
         "actual": value, "received_at": now}
        for pid, value in actual.items() if pid not in known
    ]  # fmt: skip
    replaced = [
        {"id": known[pid], "actual": value, "received_at": now}
        for pid, value in actual.items()
        if pid in known
    ]
    try:
        if fresh:
            session.execute(insert(Feedback), fresh)
        if replaced:
            session.execute(update(Feedback), replaced)
        session.flush()
    except IntegrityError:  # another request stored feedback for one of these meanwhile
        raise Conflict(
            "feedback for these predictions arrived concurrently; send it again"
        ) from None
    return FeedbackRead(received=len(body.items), new=len(fresh), replaced=len(replaced))


def _actual_checker(session: Session, endpoint: Endpoint) -> Any:
    """``check(i, actual)``: the stored form of item ``i``'s actual, or a 422 naming it.
    The labels are those of the version the endpoint serves (every version it serves or
    shadows has the same, the deploy checked), not of the model's newest version."""
    version = _served_version(session, endpoint)
    if version.task == "regression":

        def number(i: int, actual: Any) -> float:
            if type(actual) not in (int, float) or not math.isfinite(actual):
                raise InvalidInput(f"items[{i}].actual: a regression model takes a finite number")
            return float(actual)

        return number
    labels = {str(_plain(c)): c for c in (version.signature or {}).get("classes") or []}

    def label(i: int, actual: Any) -> Any:
        found = labels.get(str(_plain(actual)))
        if found is None:
            shown = ", ".join(list(labels)[:20])
            raise InvalidInput(
                f"items[{i}].actual: {str(actual)[:100]!r} is not one of the model's classes "
                f"({shown})"
            )
        return found

    return label


def _plain(value: Any) -> Any:
    """1.0 and 1 are the same label."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --------------------------------------------------------------------------- quality


def seconds(text: str) -> int:
    """``"15m"``, ``"24h"``, ``"7d"`` in seconds (the schema checked the form)."""
    return int(text[:-1]) * _UNITS[text[-1]]


def _span(window: str) -> int:
    span = seconds(window)
    if not 60 <= span <= MAX_WINDOW_S:
        raise InvalidInput(f"window must be between 1m and 90d, not {window}")
    return span


def _logged(
    store: ArtifactStore, endpoint: Endpoint, span: int, now: datetime | None
) -> tuple[datetime, datetime, Any]:
    """The window ``[now - span, now)`` and the endpoint's log rows in it (or None)."""
    end = (now or datetime.now(UTC)).astimezone(UTC)
    start = end - timedelta(seconds=span)
    try:
        return start, end, logs.read(store, endpoint.org_id, endpoint.id, start, end)
    except logs.TooMuchLog as exc:
        raise ServiceUnavailable(f"the window holds too much log to read at once ({exc})") from None


def endpoint_monitoring(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    name: str,
    *,
    window: str,
    bucket: str | None,
    now: datetime | None = None,
) -> MonitoringRead:
    """Live quality of each version an endpoint served (or shadowed) in the last ``window``."""
    endpoint = serving_service.get_endpoint(session, principal, name)
    span = _span(window)
    step = seconds(bucket) if bucket else (3600 if span <= 2 * 86400 else 86400)
    if step < 60 or span / step > MAX_BUCKETS:
        raise InvalidInput(f"a {window} window has at most {MAX_BUCKETS} buckets (and each ≥ 1m)")
    start, end, table = _logged(store, endpoint, span, now)
    received = session.scalar(
        select(func.count()).where(
            Feedback.endpoint_id == endpoint.id, Feedback.received_at >= start
        )
    )
    versions = _versions(session, endpoint)
    found = []
    if table is not None and table.num_rows:
        actual = _feedback(session, endpoint, start)
        for (number, role), rows in _groups(table).items():
            version = versions.get(number)
            if version is not None:
                found.append(_quality(version, role, rows, actual, step))
    return MonitoringRead(
        endpoint=endpoint.name,
        window=window,
        start=start,
        end=end,
        bucket_s=step,
        feedback_received=int(received or 0),
        versions=sorted(found, key=lambda v: (v.role != "primary", v.version)),
    )


def _versions(session: Session, endpoint: Endpoint) -> dict[int, ModelVersion]:
    stmt = select(ModelVersion).where(ModelVersion.model_id == endpoint.model_id)
    return {v.number: v for v in session.scalars(stmt)}


def _feedback(session: Session, endpoint: Endpoint, start: datetime) -> dict[str, Any]:
    """prediction id → actual, for feedback received since ``start`` (feedback always comes
    after its prediction, so this holds every label of the window's predictions)."""
    stmt = select(Feedback.prediction_id, Feedback.actual).where(
        Feedback.endpoint_id == endpoint.id, Feedback.received_at >= start
    )
    return {pid: value for pid, value in session.execute(stmt)}  # noqa: C416 (a Result has keys())


def _groups(table: Any) -> dict[tuple[int, str], dict[str, Any]]:
    """The log's columns as numpy/Python values, by (version, role)."""
    columns = {
        name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names
    }
    keys = list(zip(columns["version"].tolist(), columns["role"].tolist(), strict=True))
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for key in dict.fromkeys(keys):
        mask = np.array([k == key for k in keys])
        out[(int(key[0]), str(key[1]))] = {name: values[mask] for name, values in columns.items()}
    return out


def training_metrics(version: ModelVersion) -> dict[str, float]:
    """The version's scores from training: the holdout's per metric when the report has
    them, else its training metric's holdout score, else its cross-validated one."""
    metrics = version.metrics or {}
    found = {
        str(k): float(v)
        for k, v in (metrics.get("scores") or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    for key in ("holdout_score", "cv_score"):
        value = metrics.get(key)
        if version.metric and version.metric not in found and isinstance(value, int | float):
            if math.isfinite(value):
                found[version.metric] = float(value)
    return found


def _quality(
    version: ModelVersion,
    role: str,
    rows: dict[str, Any],
    actual: dict[str, Any],
    step: int,
) -> VersionQuality:
    ts = rows["ts"].astype("datetime64[us]").astype(np.int64)
    bucket = ts // (step * 1_000_000)  # aligned to whole multiples of the step (UTC)
    labelled = np.array([pid in actual for pid in rows["prediction_id"]], dtype=bool)
    classes = [str(c) for c in (version.signature or {}).get("classes") or []]
    regression = version.task == "regression"

    def metrics(mask: Any) -> dict[str, float | None]:
        chosen = mask & labelled
        ids = rows["prediction_id"][chosen]
        if regression:
            got = np.asarray(rows["value"][chosen], dtype=np.float64)
            return quality.regression(got, np.array([actual[i] for i in ids], dtype=np.float64))
        probs = np.column_stack(
            [np.asarray(rows[f"p.{c}"][chosen], dtype=np.float64) for c in classes]
        ) if classes else np.empty((0, 0))  # fmt: skip
        index = {c: j for j, c in enumerate(classes)}
        truth = np.array([index[str(actual[i])] for i in ids], dtype=np.int64)
        return quality.classification(probs, truth)

    everything = np.ones(len(ts), dtype=bool)
    series = []
    for b in np.unique(bucket):
        mask = bucket == b
        series.append(
            QualityPoint(
                start=datetime.fromtimestamp(int(b) * step, UTC),
                predictions=int(mask.sum()),
                labelled=int((mask & labelled).sum()),
                metrics=metrics(mask),
            )
        )
    return VersionQuality(
        version=version.number,
        role=role,
        predictions=len(ts),
        labelled=int(labelled.sum()),
        metrics=metrics(everything),
        training_metrics=training_metrics(version),
        series=series,
    )


# --------------------------------------------------------------------------- drift

#: Rows of the training data a reference is frozen from (a seeded sample above that).
REFERENCE_ROWS = 200_000


def endpoint_drift(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    name: str,
    *,
    window: str,
    now: datetime | None = None,
) -> DriftRead:
    """Drift of the inputs an endpoint answered in the last ``window`` against the training
    data of the version it serves (the first of its traffic split)."""
    endpoint = serving_service.get_endpoint(session, principal, name)
    span = _span(window)
    version = _served_version(session, endpoint)
    ref = _reference(session, store, version)
    start, end, table = _logged(store, endpoint, span, now)
    columns: dict[str, Any] = {}
    if table is not None and table.num_rows:
        primary = table.filter(_equal(table.column("role"), "primary"))
        columns = {
            n: primary.column(n).to_numpy(zero_copy_only=False) for n in primary.column_names
        }
    rows = len(columns.get("role", ()))
    counts = {
        c.name: drift.histogram(c, columns.get(f"in.{c.name}", np.empty(0))) for c in ref.columns
    }
    report = drift.compare(ref, counts)
    return DriftRead(
        endpoint=endpoint.name,
        version=version.number,
        window=window,
        start=start,
        end=end,
        rows=rows,
        drifted=report.drifted,
        share=report.share,
        drifted_share=report.drifted_share,
        columns=[ColumnDriftRead(**asdict(c)) for c in report.columns],
    )


def _equal(column: Any, value: str) -> Any:
    """An Arrow mask: ``column == value``."""
    import pyarrow.compute as pc

    return pc.equal(column, value)


def _served_version(session: Session, endpoint: Endpoint) -> ModelVersion:
    views = serving_service.load_views(session, [endpoint.id])
    if not views:
        raise Conflict(f"endpoint {endpoint.name!r} serves no version")
    served = views[0].routes[0][0]
    version = session.get(ModelVersion, served.id)
    if version is None:  # deleted between the two reads
        raise Conflict(f"endpoint {endpoint.name!r} serves no version")
    return version


def _reference(session: Session, store: ArtifactStore, version: ModelVersion) -> drift.Reference:
    """The version's frozen reference: computed from its training data on first use, then
    kept in the store (``drift/reference/<version id>.json``) and never recomputed."""
    key = f"drift/reference/{version.id}.json"
    if store.exists(version.org_id, key):
        return drift.Reference.from_dict(json.loads(store.get_bytes(version.org_id, key)))
    lineage = version.lineage or {}
    data = session.scalar(
        select(DatasetVersion).where(
            DatasetVersion.org_id == version.org_id,
            DatasetVersion.dataset_id == str(lineage.get("dataset_id")),
            DatasetVersion.number == _int(lineage.get("dataset_version")),
        )
    )
    if data is None:
        raise Conflict(
            f"version {version.number} has no training data to compare with (an uploaded "
            "model, or its dataset version was deleted)"
        )
    kinds = {
        str(c["name"]): ("numeric" if c.get("kind") == "numeric" else "categorical")
        for c in (version.signature or {}).get("inputs") or []
        if c.get("required", True) and c.get("kind") in ("numeric", "categorical")
    }
    ref = drift.reference(_training_columns(store, data, list(kinds)), kinds)
    store.put_bytes(version.org_id, key, json.dumps(ref.to_dict()).encode())
    return ref


def _int(value: Any) -> int:
    return value if isinstance(value, int) else -1


def _training_columns(
    store: ArtifactStore, data: DatasetVersion, names: list[str]
) -> dict[str, Any]:
    import pyarrow.parquet as pq

    with store.open(data.org_id, data.storage_key) as handle:
        present = [n for n in names if n in pq.ParquetFile(handle).schema_arrow.names]
        handle.seek(0)
        table = pq.read_table(handle, columns=present)
    if table.num_rows > REFERENCE_ROWS:
        keep = np.sort(
            np.random.default_rng(0).choice(table.num_rows, REFERENCE_ROWS, replace=False)
        )
        table = table.take(keep)
    return {n: table.column(n).to_numpy(zero_copy_only=False) for n in present}
