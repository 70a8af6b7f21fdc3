"""The model card's text: what a hostile value from the data can and cannot do to it."""

from __future__ import annotations

from aiaas.registry.card import CardInput, code, md, render_card


def _card(**changes):
    base = {
        "model_name": "churn",
        "number": 2,
        "task": "binary",
        "metric": "roc_auc",
        "metrics": {"cv_score": 0.91234, "cv_score_std": float("nan"), "holdout_score": 0.9},
        "report": {"warnings": ["few rows"], "timings": {"total_s": 3.2, "time_budget_s": 5}},
        "lineage": {"dataset_id": "ds_1", "dataset_version": 4, "job_id": "job_`x`"},
        "signature": {"inputs": [{"name": "a|b\n# x", "type": "number", "required": False}]},
        "feature_importance": [{"feature": "<script>", "importance": 0.5}],
        "leaderboard": [
            {"trial": 1, "family": "lgbm", "score": 0.9, "state": "complete", "fit_time_s": 1.0},
            {"trial": 2, "family": "bad", "score": 0.99, "state": "failed"},
        ],
    }
    return render_card(CardInput(**{**base, **changes}))


def test_md_escapes_and_bounds():
    assert md("a|b") == "a\\|b"
    assert md("# [x](javascript:y)") == "\\# \\[x\\]\\(javascript:y\\)"
    assert md("line\nbreak\x00") == "line break "
    assert len(md("x" * 1000)) == 301
    assert md("\ud800") == "?"
    assert code("a`b\n") == "`a'b `"


def test_card_sections_and_values():
    card = _card()
    assert card.startswith("# churn — version 2\n")
    assert "| cross-validation (mean) | 0.9123 |" in card
    assert "| cross-validation (std) | — |" in card  # NaN is no number
    assert "| holdout | 0.9 |" in card
    assert "- Dataset: `ds_1` version 4" in card
    assert "- Training job: `job_'x'`" in card
    assert "| a\\|b \\# x | number | no (not used) |" in card
    assert "| \\<script\\> | 0.5 |" in card
    assert "| 1 | lgbm | 0.9 | 1 |" in card
    assert "bad" not in card
    assert "- few rows" in card
    assert "- Training time: 3.2 s (budget 5 s)" in card


def test_card_without_optional_parts():
    card = _card(
        report={}, signature={}, feature_importance=[], leaderboard=[], lineage={}, metrics={}
    )
    for absent in ("## Input signature", "## Top features", "## Leaderboard", "## Warnings"):
        assert absent not in card
    assert "## Scores" not in card  # no training scores: no table of dashes
    assert "## Origin" not in card
    assert "own validation split" in card


def test_trained_card_keeps_its_scores_and_says_where_they_come_from():
    card = _card(metrics={"cv_score": 0.8})
    assert "| cross-validation (mean) | 0.8 |" in card
    assert "| holdout | — |" in card
    assert "## Origin" not in card
    assert "- Scores were measured on the training data's own validation split" in card


def test_uploaded_card_says_where_the_model_came_from():
    card = _card(
        metric="none",
        metrics={},
        report={"warnings": ["an uploaded model"]},
        lineage={
            "source": "upload",
            "filename": "churn_model.onnx",
            "sha256": "ab" * 32,
            "description": "v1 <b>lr</b>",
        },
        feature_importance=[],
        leaderboard=[],
    )
    assert "## Scores" not in card
    assert "## Training and limits" not in card
    assert "validation split" not in card
    assert (
        "## Origin\n- Uploaded as an ONNX file\n- File name: churn\\_model.onnx\n"
        f"- SHA-256: `{'ab' * 32}`\n- Description: v1 \\<b\\>lr\\</b\\>\n"
    ) in card
    assert "## Limits\n- The platform neither trained nor scored this model" in card


def _quantized_metrics(**changes):
    side = {
        "scores": {"accuracy": 0.9675, "roc_auc": 0.99556},
        "latency_ms": {
            "1_row": {"median": 0.1416, "p99": 8.27, "calls": 300},
            "64_rows": {"median": 0.225, "p99": 9.16, "calls": 100},
        },
        "size_bytes": 39282,
    }
    quantized = {**side, "scores": {"accuracy": 0.968, "roc_auc": 0.99563}, "size_bytes": 14053}
    metrics = {
        "reference": {
            "dataset_id": "ds_`1`",
            "version": 2,
            "target": "y|#",
            "rows": 2000,
            "rows_scored": 1990,
            "max_rows": 20000,
        },
        "source": {"version": 1, **side},
        "quantized": quantized,
        "agreement": 0.9955,
    }
    return {**metrics, **changes}


def test_quantized_card_reports_source_reference_and_both_models():
    card = _card(
        metric="accuracy",
        metrics=_quantized_metrics(),
        report={"warnings": ["a quantized copy of version 1"]},
        lineage={
            "source": "quantized",
            "from_version": 1,
            "reference": {"dataset_id": "ds_`1`", "version": 2, "rows": 2000},
        },
        feature_importance=[],
        leaderboard=[],
    )
    assert "## Scores" not in card
    assert "validation split" not in card
    assert "- Quantized from version 1: dynamic quantization, 8-bit integer weights" in card
    assert (
        "- Reference: dataset `ds_'1'` version 2, 2000 rows (scored: 1990), target y\\|\\#" in card
    )
    for row in (
        "| measured on the reference rows | version 1 | quantized |",
        "| accuracy | 0.9675 | 0.968 |",
        "| roc\\_auc | 0.9956 | 0.9956 |",
        "| latency, 1 row (ms, median / p99) | 0.1416 / 8.27 | 0.1416 / 8.27 |",
        "| latency, 64 rows (ms, median / p99) | 0.225 / 9.16 | 0.225 / 9.16 |",
        "| file size (bytes) | 39282 | 14053 |",
        "Both predict the same class for 99.55 % of the rows.",
        "## Limits\n- The scores above were measured on the reference rows only",
    ):
        assert row in card


def test_quantized_card_survives_missing_or_odd_measurements():
    card = _card(
        metrics={"source": "x", "quantized": {"latency_ms": {"1_row": "y"}}, "reference": []},
        lineage={"source": "quantized", "from_version": "2"},
        report={},
    )
    assert "- Quantized from version —" in card
    assert "| latency, 1 row (ms, median / p99) | — | — |" in card
    assert "| file size (bytes) | — | — |" in card
    assert "same class" not in card
