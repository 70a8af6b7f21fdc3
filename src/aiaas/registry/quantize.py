"""Dynamic quantization of a model version on request, measured on a reference dataset.

``POST /models/{name}/versions/{n}/quantize`` (:func:`aiaas.registry.service.quantize_version`)
makes a new version of the same model whose ``model.onnx`` is the source graph with its
``MatMul`` / ``Gemm`` / ``Conv`` weights stored as 8-bit integers
(``onnxruntime.quantization.quantize_dynamic``, ``QInt8`` weights: ONNX Runtime's default
and its recommended U8S8 format on x86-64 CPUs), and reports what that changed on a
reference dataset. This module is the blocking part the parent runs:

- :func:`reference_for`: the reference dataset version (the caller's organization's:
  another's is a 404; its latest version unless one is named), the target (given, else the
  one recorded for the source version: its lineage's, a quantized version's reference
  target, or its training job's; an uploaded version has none: then it is required), and
  the check that the dataset has every column the model takes and the target (422 naming
  the column);
- :func:`quantize_in_sandbox`: copies the source version's serving files (``model.onnx``,
  and ``encoding.json`` for a trained version, whose graph takes the encoded matrix) into
  a work directory and runs :mod:`aiaas.registry.quantize_worker` in the sandbox (it reads
  those files and the reference Parquet, writes only its own folder). Its answer is
  re-validated field by field, its output accepted only as a fresh regular file
  (:func:`~aiaas.sandbox.claim_output`), then loaded, checked and run by the upload's own
  sandboxed check (:func:`aiaas.registry.upload.check_onnx`: standard operator domains, no
  external data) and held to the source's serving contract (the same signature), so the
  new version is served exactly as the source is.

The measurements (the version's ``metrics``): the first ``quantize_reference_rows`` rows of
the reference dataset (``AIAAS_REGISTRY__QUANTIZE_REFERENCE_ROWS``, 20 000 by default, in
the dataset's own order; rows without a target are predicted but not scored), scored with
both graphs (classification: accuracy, and ROC AUC for a binary model; regression: RMSE
and MAE), how often both predict the same class and the largest difference of their
outputs; the median and p99 milliseconds of ``predict`` calls of 1 row and of 64 rows of
each (the serving predictor, one thread, both called alternately on the same rows); and
the size of both files.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from aiaas.auth.principal import Principal
from aiaas.data import service as data_service
from aiaas.data.versions import local_parquet
from aiaas.db.base import scoped
from aiaas.errors import InvalidInput, NotFound, ServiceUnavailable
from aiaas.registry.artifacts import ENCODING
from aiaas.registry.limits import quantize_limits, quantize_reference_rows
from aiaas.registry.models import ModelVersion
from aiaas.registry.schemas import ONNX_FILE, SignatureHint
from aiaas.registry.upload import GraphInfo, build_signature, check_onnx
from aiaas.sandbox import ChildLimits, ChildPaths, ChildRun, claim_output, last_json_line, run_child
from aiaas.settings import Settings
from aiaas.storage import ArtifactStore

log = structlog.get_logger()

WORKER = "aiaas.registry.quantize_worker"
NOTHING_TO_QUANTIZE = "nothing to quantize: the graph has no MatMul/Gemm/Conv weights"
NOT_QUANTIZED = "the version could not be quantized"
TARGET_REQUIRED = (
    "name the target: the reference dataset's column with the true label or value (version "
    "{number} has no recorded target)"
)
QUANTIZED_WARNING = (
    "a quantized copy of version {number}: its scores were measured on the reference "
    "dataset named in its metrics, not on training data"
)
METHOD = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "activation_type": "QUInt8 (quantized at run time)",
    "per_channel": False,
    "reduce_range": False,
    "op_types": ["MatMul", "Conv"],  # Gemm with a constant weight is rewritten as MatMul
}
SOURCE_DIR = "source"  # the source version's files (the child reads them)
#: The child's own folder, made by the parent: it writes only there, the quantized graph
#: straight into it (a link the child made there is refused by ``claim_output``; it cannot
#: replace the folder itself, whose parent it may not write).
CHILD_DIR = "child"
QUANT_PREFIX = CHILD_DIR
TMP_PREFIX = f"{CHILD_DIR}/tmp"
LATENCY_KEYS = ("1_row", "64_rows")
#: The scores a reply may carry by task, and their upper bounds.
CLASS_SCORES = {"accuracy": 1.0, "roc_auc": 1.0}
VALUE_SCORES = {"rmse": math.inf, "mae": math.inf}
_CALLS_MAX = 100_000
_COPY_BLOCK = 4 * 1024 * 1024
_TEXT_MAX = 2000


# --------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class Reference:
    """The dataset version a quantization is measured on."""

    dataset_id: str
    version: int
    parquet: Path
    target: str
    max_rows: int


def model_columns(signature: dict[str, Any]) -> list[str]:
    """The columns serving feeds the model (as :mod:`aiaas.serving.predictor` reads them)."""
    inputs = signature.get("inputs") or []
    return [
        str(c["name"])
        for c in inputs
        if isinstance(c, dict) and "name" in c and c.get("required", c.get("used", True))
    ]


def default_target(session: Session, principal: Principal, source: ModelVersion) -> str | None:
    """The target recorded for ``source``: its lineage's, the reference target of a
    quantized version, or its training job's; None for an uploaded version."""
    from aiaas.jobs.models import Job  # the jobs domain registers trained versions

    lineage = source.lineage or {}
    if isinstance(lineage.get("target"), str):
        return str(lineage["target"])
    reference = (source.metrics or {}).get("reference")
    if lineage.get("source") == "quantized" and isinstance(reference, dict):
        found = reference.get("target")
        return found if isinstance(found, str) else None
    if source.job_id:
        stmt = scoped(select(Job.spec), principal).where(Job.id == source.job_id)
        spec = session.scalar(stmt)
        if isinstance(spec, dict) and isinstance(spec.get("target"), str):
            return str(spec["target"])
    return None


def reference_for(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    settings: Settings,
    source: ModelVersion,
    *,
    dataset_id: str,
    dataset_version: int | None,
    target: str | None,
) -> Reference:
    """The reference dataset version, checked against the model's columns and the target."""
    dataset = data_service.get_dataset(session, principal, dataset_id)
    number = dataset_version or dataset.latest_version
    if not number:
        raise NotFound(f"dataset {dataset.id!r} has no version")
    version = data_service.get_version(session, principal, dataset.id, number)
    target = target or default_target(session, principal, source)
    if not target:
        raise InvalidInput(TARGET_REQUIRED.format(number=source.number))
    names = {str(c.get("name")) for c in version.columns_schema or [] if isinstance(c, dict)}
    where = f"the reference dataset {dataset.id!r} (version {number})"
    for column in model_columns(source.signature or {}):
        if column not in names:
            raise InvalidInput(f"{where} has no column {column!r}, which the model takes")
    if target not in names:
        raise InvalidInput(f"{where} has no column {target!r} (the target)")
    parquet = local_parquet(store, settings, version)
    return Reference(dataset.id, number, parquet, target, quantize_reference_rows(settings))


# --------------------------------------------------------------------------- the child's answer


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else "it was refused"
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:_TEXT_MAX]


def _number(value: Any, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    if not (math.isfinite(value) and 0.0 <= value <= high):
        raise ValueError("out of range")
    return float(value)


def _count(value: Any, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ValueError("not a count")
    return value


def _optional(value: Any, high: float = math.inf) -> float | None:
    return None if value is None else _number(value, high)


def _scores(raw: Any, allowed: dict[str, float]) -> dict[str, float | None]:
    if not isinstance(raw, dict) or not set(raw) <= set(allowed):
        raise ValueError("unexpected scores")
    first = next(iter(allowed))  # accuracy, rmse: always measured
    scores = {key: _optional(raw.get(key), high) for key, high in allowed.items() if key in raw}
    if scores.get(first) is None:
        raise ValueError(f"no {first}")
    return scores


def _measured(raw: Any, allowed: dict[str, float]) -> dict[str, Any]:
    """One model's scores and latency from the reply."""
    if not isinstance(raw, dict):
        raise TypeError("not an object")
    latency = raw["latency_ms"]
    return {
        "scores": _scores(raw["scores"], allowed),
        "latency_ms": {
            key: {
                "median": _number(latency[key]["median"]),
                "p99": _number(latency[key]["p99"]),
                "calls": _count(latency[key]["calls"], _CALLS_MAX),
            }
            for key in LATENCY_KEYS
        },
    }


@dataclass(frozen=True)
class Measured:
    """The child's measurements, re-validated."""

    rows: int
    rows_scored: int
    weights: int
    integer_ops: int
    gemm_rewritten: int
    source: dict[str, Any]
    quantized: dict[str, Any]
    agreement: float | None
    max_abs_diff: float | None


def measured_from_reply(reply: dict[str, Any], *, max_rows: int, task: str) -> Measured:
    """The answer's numbers, checked field by field (raises KeyError, TypeError or
    ValueError): the child parsed a user's graph, so it is untrusted."""
    allowed = VALUE_SCORES if task == "regression" else CLASS_SCORES
    rows = _count(reply["rows"], max_rows)
    agreement = _optional(reply.get("agreement"), 1.0)
    if (agreement is None) != (task == "regression"):
        raise ValueError("agreement")
    return Measured(
        rows=rows,
        rows_scored=_count(reply["rows_scored"], rows),
        weights=_count(reply["weights"], 10**7),
        integer_ops=_count(reply["integer_ops"], 10**7),
        gemm_rewritten=_count(reply["gemm_rewritten"], 10**7),
        source=_measured(reply["source"], allowed),
        quantized=_measured(reply["quantized"], allowed),
        agreement=agreement,
        max_abs_diff=_optional(reply.get("max_abs_diff")),
    )


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class QuantizedOnnx:
    """A quantized graph that loads, runs and keeps the source's contract; what its
    version row is made of."""

    path: Path
    size: int
    sha256: str
    source: ModelVersion
    source_size: int
    reference: Reference
    measured: Measured
    graph: GraphInfo

    @property
    def metric(self) -> str:
        return "rmse" if self.source.task == "regression" else "accuracy"

    def entry(self) -> dict[str, Any]:
        return {"path": ONNX_FILE, "size": self.size, "sha256": self.sha256}

    def lineage(self) -> dict[str, Any]:
        ref = self.reference
        return {
            "source": "quantized",
            "from_version": self.source.number,
            "reference": {
                "dataset_id": ref.dataset_id,
                "version": ref.version,
                "rows": self.measured.rows,
            },
        }

    def metrics(self) -> dict[str, Any]:
        """Both models on the reference rows, and what changed."""
        m, ref = self.measured, self.reference
        return {
            "reference": {
                "dataset_id": ref.dataset_id,
                "version": ref.version,
                "target": ref.target,
                "rows": m.rows,
                "rows_scored": m.rows_scored,
                "max_rows": ref.max_rows,
            },
            "source": {
                "version": self.source.number,
                **m.source,
                "size_bytes": self.source_size,
            },
            "quantized": {**m.quantized, "size_bytes": self.size},
            "change": self._change(),
            "agreement": m.agreement,
            "max_abs_diff": m.max_abs_diff,
        }

    def _change(self) -> dict[str, Any]:
        m = self.measured
        before, after = m.source["scores"], m.quantized["scores"]
        change: dict[str, Any] = {
            key: after[key] - before[key]
            for key in before
            if before[key] is not None and after.get(key) is not None
        }
        change["size_ratio"] = self.size / self.source_size if self.source_size else None
        for key in LATENCY_KEYS:
            old = m.source["latency_ms"][key]["median"]
            new = m.quantized["latency_ms"][key]["median"]
            change[f"latency_{key}_median_ratio"] = new / old if old else None
        return change

    def report(self) -> dict[str, Any]:
        """The version's report: how it was made, and the graph as the check saw it."""
        m, number = self.measured, self.source.number
        return {
            "source": "quantized",
            "quantization": {
                **METHOD,
                "weights": m.weights,
                "integer_ops": m.integer_ops,
                "gemm_rewritten": m.gemm_rewritten,
            },
            "graph": self.graph.report(),
            "task_inference": f"the task of version {number}",
            "pipeline": {"model": f"version {number}'s graph, dynamically quantized (int8)"},
            "warnings": [QUANTIZED_WARNING.format(number=number)],
        }


# --------------------------------------------------------------------------- the sandbox


def _fetch_source(store: ArtifactStore, source: ModelVersion, dest: Path) -> tuple[str, ...]:
    """Copy the files the serving predictor reads (``encoding.json`` only for a trained
    version); their names."""
    paths = {str(a.get("path")) for a in source.artifacts or []}
    names = (ENCODING, ONNX_FILE) if ENCODING in paths else (ONNX_FILE,)
    dest.mkdir(mode=0o700)
    for name in names:
        with store.open(source.org_id, f"{source.storage_prefix}/{name}") as src:
            with (dest / name).open("wb") as out:
                while block := src.read(_COPY_BLOCK):
                    out.write(block)
    return names


def _view(source: ModelVersion, files: tuple[str, ...]) -> dict[str, Any]:
    """The child's :class:`aiaas.serving.service.VersionView`, its files under ``source/``."""
    return {
        "id": source.id,
        "org_id": source.org_id,
        "model_name": source.model_name,
        "number": source.number,
        "task": source.task,
        "signature": dict(source.signature or {}),
        "artifacts": list(files),
        "storage_prefix": SOURCE_DIR,
        "size_bytes": int(source.size_bytes or 0),
    }


def _crash_reason(run: ChildRun, timeout_s: float) -> str:
    if run.timed_out:
        return f"quantizing and measuring it took longer than {timeout_s:g} s; it was stopped"
    if run.overflow:
        return "the quantizing process wrote more output than allowed; it was stopped"
    if run.signal == "SIGXCPU":
        return "quantizing it used more CPU time than allowed; it was stopped"
    if run.signal == "SIGKILL":
        return "quantizing it needed more memory than allowed; it was stopped"
    if run.signal is not None:
        return f"the quantizing process crashed ({run.signal})"
    return "the quantizing process ended without an answer"


def _answer(run: ChildRun, limits: ChildLimits) -> dict[str, Any]:
    """The child's successful answer, or the 4xx/503 its failure is."""
    reply = None if (run.timed_out or run.overflow) else last_json_line(run.output)
    if reply is None:
        log.warning("quantize_failed", returncode=run.returncode, stderr=run.stderr[-2000:])
        raise InvalidInput(f"{NOT_QUANTIZED}: {_crash_reason(run, limits.timeout_s)}")
    if reply.get("internal"):
        log.error("quantize_unexpected_error", stderr=run.stderr)
    if reply.get("ok") is True:
        return reply
    reason = _text(reply.get("reason"))
    if reply.get("unavailable"):
        raise ServiceUnavailable(reason)
    if reply.get("kind") == "nothing":
        raise InvalidInput(NOTHING_TO_QUANTIZE)
    if reply.get("kind") == "bad_input":
        raise InvalidInput(reason)
    raise InvalidInput(f"{NOT_QUANTIZED}: {reason}")


def _same_contract(source: ModelVersion, graph: GraphInfo) -> None:
    """The quantized graph is served as the source is: an uploaded version's signature
    comes out of it unchanged; a trained version's graph still takes one float matrix and
    gives one row per input row (and a column per class)."""
    signature = source.signature or {}
    classes = signature.get("classes")
    if isinstance(signature.get("onnx"), dict):
        hint = SignatureHint.model_construct(
            inputs=None,
            columns=[str(c["name"]) for c in signature.get("inputs") or []],
            classes=list(classes) if isinstance(classes, list) else None,
        )
        try:
            _, rebuilt = build_signature(graph, hint, source.task)
        except InvalidInput as exc:
            raise InvalidInput(f"{NOT_QUANTIZED}: {exc.detail}") from None
        if rebuilt == signature:
            return
    else:
        x = graph.inputs[0] if len(graph.inputs) == 1 else None
        out = graph.outputs[0].seen if graph.outputs else None
        width = len(classes) if isinstance(classes, list) else None
        fits = bool(out) and out is not None and out[0] == 2
        if source.task != "regression":
            fits = fits and out is not None and len(out) == 2 and out[1] == width
        if x is not None and x.type == "float" and x.shape and len(x.shape) == 2 and fits:
            return
    raise InvalidInput(
        f"{NOT_QUANTIZED}: the quantized graph does not keep the source's inputs and outputs"
    )


def _seconds(raw: Any) -> dict[str, float]:
    """The child's time per step, for the log (what is not a number is left out)."""
    if not isinstance(raw, dict):
        return {}
    found = {}
    for key, value in list(raw.items())[:10]:
        try:
            found[_text(key)[:40]] = _number(value)
        except (TypeError, ValueError):
            continue
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def quantize_in_sandbox(
    settings: Settings, store: ArtifactStore, source: ModelVersion, ref: Reference, work: Path
) -> QuantizedOnnx:
    """Quantize ``source`` and measure both graphs on ``ref`` in the sandbox; the checked
    result (its file lives in ``work``, which the caller removes)."""
    files = _fetch_source(store, source, work / SOURCE_DIR)
    (work / CHILD_DIR).mkdir(mode=0o700)
    source_size = (work / SOURCE_DIR / ONNX_FILE).stat().st_size
    limits = quantize_limits(settings, source_size)
    request = {
        "root": str(work),
        "source": _view(source, files),
        "quant_prefix": QUANT_PREFIX,
        "tmp": TMP_PREFIX,
        "data": str(ref.parquet),
        "target": ref.target,
        "rows": ref.max_rows,
    }
    paths = ChildPaths(
        cwd=work / CHILD_DIR, read=(ref.parquet, work / SOURCE_DIR), write=(work / CHILD_DIR,)
    )
    started = time.perf_counter()
    reply = _answer(run_child(WORKER, request, limits, paths), limits)
    try:
        measured = measured_from_reply(reply, max_rows=ref.max_rows, task=source.task)
        path = claim_output(work / QUANT_PREFIX / ONNX_FILE)
    except (KeyError, TypeError, ValueError, AttributeError):
        log.warning("quantize_bad_reply")
        raise InvalidInput(
            f"{NOT_QUANTIZED}: the quantizing process gave no usable answer"
        ) from None
    log.info(
        "quantized",
        source_bytes=source_size,
        quantize_s=round(time.perf_counter() - started, 3),
        peak_rss=reply.get("peak_rss"),
        sandbox_abi=reply.get("sandbox_abi"),
        child_seconds=_seconds(reply.get("seconds")),
    )
    (work / "check").mkdir(mode=0o700)
    graph = check_onnx(settings, path, work / "check", width=_width(source))
    _same_contract(source, graph)
    size = path.stat().st_size
    return QuantizedOnnx(path, size, _sha256(path), source, source_size, ref, measured, graph)


def _width(source: ModelVersion) -> int | None:
    """The columns of an uploaded matrix input (the check feeds that many)."""
    onnx = (source.signature or {}).get("onnx")
    if isinstance(onnx, dict) and onnx.get("layout") == "matrix":
        return len(model_columns(source.signature)) or None
    return None
