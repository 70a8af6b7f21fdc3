"""The generated model card: Markdown text stored with each version (pure: no database).

Every value that comes from the data or the training report (column names, class labels,
warnings, the model name) is escaped, so a hostile column name cannot add headings, links
or HTML to the card; lists are cut to a few entries.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

TOP_FEATURES = 10
TOP_TRIALS = 5
MAX_SIGNATURE_ROWS = 100
MAX_WARNINGS = 20
_TEXT_MAX = 300
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


@dataclass(frozen=True)
class CardInput:
    """What the card is written from (all read from the saved model and the job)."""

    model_name: str
    number: int
    task: str
    metric: str
    metrics: dict[str, Any]
    report: dict[str, Any]
    lineage: dict[str, Any]
    signature: dict[str, Any]
    feature_importance: list[dict[str, Any]]
    leaderboard: list[dict[str, Any]]


def md(value: Any) -> str:
    """``value`` as inline Markdown text: one line, special characters escaped, bounded."""
    text = _CONTROL.sub(" ", str(value))
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogate survives
    if len(text) > _TEXT_MAX:
        text = text[:_TEXT_MAX] + "…"
    return _MD_SPECIAL.sub(r"\\\1", text)


def code(value: Any) -> str:
    """``value`` as an inline code span (ids): one line, no backtick, bounded."""
    text = _CONTROL.sub(" ", str(value)).replace("`", "'")
    return "`" + text.encode("utf-8", "replace").decode("utf-8")[:_TEXT_MAX] + "`"


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_card(card: CardInput) -> str:
    """The Markdown model card of one version."""
    sections = [
        f"# {md(card.model_name)} — version {card.number}",
        _overview(card),
        _origin(card),
        _scores(card),
        _data(card),
        _signature(card.signature),
        _importance(card.feature_importance),
        _leaderboard(card.leaderboard),
        _warnings(card.report),
        _limits(card),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _overview(card: CardInput) -> str:
    lines = ["## Task", f"- Task: **{md(card.task)}**", f"- Metric: **{md(card.metric)}**"]
    inference = card.report.get("task_inference")
    if isinstance(inference, str):
        lines.append(f"- How the task was chosen: {md(inference)}")
    elif isinstance(inference, dict):
        lines.append("- How the task was chosen:")
        for key, value in list(inference.items())[:10]:
            if isinstance(value, str | int | float | bool) or value is None:
                lines.append(f"  - {md(key)}: {md(value)}")
    pipeline = card.report.get("pipeline")
    if isinstance(pipeline, dict) and pipeline.get("model"):
        lines.append(f"- Model: {md(pipeline['model'])}")
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return _num(value) != "—"


def _source(card: CardInput) -> str | None:
    """``upload`` or ``quantized`` for a version the platform did not train, else None."""
    source = card.lineage.get("source")
    return source if source in ("upload", "quantized") else None


def _origin(card: CardInput) -> str:
    """Where a version the platform did not train came from."""
    lineage = card.lineage
    if _source(card) == "upload":
        lines = ["## Origin", "- Uploaded as an ONNX file"]
        if lineage.get("filename"):
            lines.append(f"- File name: {md(lineage['filename'])}")
        if lineage.get("sha256"):
            lines.append(f"- SHA-256: {code(lineage['sha256'])}")
        if lineage.get("description"):
            lines.append(f"- Description: {md(lineage['description'])}")
        return "\n".join(lines)
    if _source(card) == "quantized":
        return _quantized(card)
    return ""


def _quantized(card: CardInput) -> str:
    """A quantized version: its source, reference dataset, and both models measured."""
    ref = card.metrics.get("reference")
    ref = ref if isinstance(ref, dict) else {}
    before, after = card.metrics.get("source"), card.metrics.get("quantized")
    before, after = (x if isinstance(x, dict) else {} for x in (before, after))
    number = _num(card.lineage.get("from_version"))
    lines = [
        "## Origin",
        f"- Quantized from version {number}: dynamic quantization, 8-bit integer weights",
        f"- Reference: dataset {code(ref.get('dataset_id'))} version {_num(ref.get('version'))}"
        f", {_num(ref.get('rows'))} rows (scored: {_num(ref.get('rows_scored'))}), "
        f"target {md(ref.get('target'))}",
        "",
        f"| measured on the reference rows | version {number} | quantized |",
        "|---|---|---|",
    ]
    scores_b, scores_a = before.get("scores"), after.get("scores")
    if isinstance(scores_b, dict) and isinstance(scores_a, dict):
        for key in list(scores_b)[:10]:
            lines.append(f"| {md(key)} | {_num(scores_b[key])} | {_num(scores_a.get(key))} |")
    for key, label in (("1_row", "1 row"), ("64_rows", "64 rows")):
        cells = [_latency(side, key) for side in (before, after)]
        lines.append(f"| latency, {label} (ms, median / p99) | {cells[0]} | {cells[1]} |")
    sizes = (_num(before.get("size_bytes")), _num(after.get("size_bytes")))
    lines.append(f"| file size (bytes) | {sizes[0]} | {sizes[1]} |")
    if _is_number(card.metrics.get("agreement")):
        share = card.metrics["agreement"]
        lines.append(f"\nBoth predict the same class for {100 * share:.4g} % of the rows.")
    return "\n".join(lines)


def _latency(side: dict[str, Any], key: str) -> str:
    latency = side.get("latency_ms")
    entry = latency.get(key) if isinstance(latency, dict) else None
    if not isinstance(entry, dict):
        return "—"
    return f"{_num(entry.get('median'))} / {_num(entry.get('p99'))}"


def _scores(card: CardInput) -> str:
    m = card.metrics
    if not any(_is_number(m.get(k)) for k in ("cv_score", "cv_score_std", "holdout_score")):
        return ""  # no training scores (an uploaded or quantized version)
    lines = [
        "## Scores",
        f"| score | {md(card.metric)} |",
        "|---|---|",
        f"| cross-validation (mean) | {_num(m.get('cv_score'))} |",
        f"| cross-validation (std) | {_num(m.get('cv_score_std'))} |",
        f"| holdout | {_num(m.get('holdout_score'))} |",
    ]
    validation = card.report.get("validation")
    if isinstance(validation, dict) and validation.get("kind"):
        folds = validation.get("folds")
        lines.append(
            f"\nValidation: {md(validation['kind'])}" + (f", {_num(folds)} folds" if folds else "")
        )
    return "\n".join(lines)


def _data(card: CardInput) -> str:
    lines = ["## Data"]
    lineage = card.lineage
    if lineage.get("dataset_id"):
        number = _num(lineage.get("dataset_version"))
        lines.append(f"- Dataset: {code(lineage['dataset_id'])} version {number}")
    if lineage.get("job_id"):
        lines.append(f"- Training job: {code(lineage['job_id'])}")
    data = card.report.get("data")
    if isinstance(data, dict):
        lines.append(f"- Rows: {_num(data.get('rows'))} (used: {_num(data.get('rows_used'))})")
        dropped = data.get("rows_dropped_missing_target")
        if dropped:
            lines.append(f"- Rows dropped for a missing target: {_num(dropped)}")
        if isinstance(data.get("classes"), list):
            shown = ", ".join(md(c) for c in data["classes"][:20])
            lines.append(f"- Classes: {shown}")
    return "\n".join(lines) if len(lines) > 1 else ""


def _signature(signature: dict[str, Any]) -> str:
    inputs = signature.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return ""
    lines = ["## Input signature", "| column | type | required |", "|---|---|---|"]
    for col in inputs[:MAX_SIGNATURE_ROWS]:
        if isinstance(col, dict):
            required = "yes" if col.get("required") else "no (not used)"
            lines.append(f"| {md(col.get('name'))} | {md(col.get('type'))} | {required} |")
    if len(inputs) > MAX_SIGNATURE_ROWS:
        lines.append(f"\n… and {len(inputs) - MAX_SIGNATURE_ROWS} more columns")
    return "\n".join(lines)


def _importance(importance: list[dict[str, Any]]) -> str:
    if not importance:
        return ""
    lines = ["## Top features", "| feature | importance |", "|---|---|"]
    for row in importance[:TOP_FEATURES]:
        lines.append(f"| {md(row.get('feature'))} | {_num(row.get('importance'))} |")
    return "\n".join(lines)


def _leaderboard(leaderboard: list[dict[str, Any]]) -> str:
    done = [t for t in leaderboard if isinstance(t, dict) and t.get("state") == "complete"]
    if not done:
        return ""
    lines = ["## Leaderboard (top trials)", "| trial | family | CV score | fit time (s) |"]
    lines.append("|---|---|---|---|")
    for t in done[:TOP_TRIALS]:
        lines.append(
            f"| {_num(t.get('trial'))} | {md(t.get('family'))} | {_num(t.get('score'))} "
            f"| {_num(t.get('fit_time_s'))} |"
        )
    return "\n".join(lines)


def _warnings(report: dict[str, Any]) -> str:
    warnings = report.get("warnings")
    if not isinstance(warnings, list) or not warnings:
        return ""
    return "\n".join(["## Warnings", *(f"- {md(w)}" for w in warnings[:MAX_WARNINGS])])


def _limits(card: CardInput) -> str:
    source = _source(card)
    if source == "upload":
        return (
            "## Limits\n- The platform neither trained nor scored this model; check it on "
            "your own data before you rely on it."
        )
    if source == "quantized":
        return (
            "## Limits\n- The scores above were measured on the reference rows only; they "
            "say nothing about data from another population or time."
        )
    lines = ["## Training and limits"]
    timings = card.report.get("timings")
    if isinstance(timings, dict):
        lines.append(
            f"- Training time: {_num(timings.get('total_s'))} s "
            f"(budget {_num(timings.get('time_budget_s'))} s)"
        )
    trials = card.report.get("trials")
    if isinstance(trials, dict):
        lines.append(f"- Trials: {_num(trials.get('total'))} ({_num(trials.get('complete'))} done)")
    lines.append(
        "- Scores were measured on the training data's own validation split; they say "
        "nothing about data from another population or time."
    )
    return "\n".join(lines)
