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
    assert "## Scores" in card
