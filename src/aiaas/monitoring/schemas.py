"""Wire shapes of monitoring: feedback in, live quality out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from aiaas.schemas import StrictModel

#: The ids ``/predict`` hands out: ``pr_<16 hex>`` for one row, ``pr_<16 hex>-<row>`` for many.
PREDICTION_ID_PATTERN = r"^pr_[0-9a-f]{16}(-[0-9]{1,5})?$"
#: A window or bucket length: a number and a unit (minutes, hours, days).
DURATION_PATTERN = r"^[0-9]{1,4}[mhd]$"
MAX_FEEDBACK_ITEMS = 10_000

Actual = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=200)]


class FeedbackItem(StrictModel):
    prediction_id: Annotated[
        str,
        Field(
            pattern=PREDICTION_ID_PATTERN,
            max_length=64,
            description="The id /predict returned for the row.",
        ),
    ]
    actual: Actual = Field(
        description="What really happened: one of the model's class labels (classification) "
        "or a number (regression)."
    )


class FeedbackCreate(StrictModel):
    items: Annotated[list[FeedbackItem], Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)]


class FeedbackRead(BaseModel):
    received: int = Field(description="Items in the request.")
    new: int = Field(description="Predictions that had no feedback before.")
    replaced: int = Field(description="Predictions whose earlier feedback this replaced.")


class QualityPoint(BaseModel):
    start: datetime = Field(description="The bucket's start: a whole multiple of the step (UTC).")
    predictions: int
    labelled: int = Field(description="Predictions of the bucket with feedback.")
    metrics: dict[str, float | None]


class VersionQuality(BaseModel):
    version: int
    role: str = Field(description="primary (answered) or shadow (logged only).")
    predictions: int
    labelled: int
    metrics: dict[str, float | None] = Field(
        description="Over the labelled predictions of the window: accuracy, roc_auc and "
        "log_loss (classification) or rmse and mae (regression); null where undefined "
        "(no feedback, or ROC AUC with one class only)."
    )
    training_metrics: dict[str, float] = Field(
        description="The version's scores from training, for comparison: the holdout's per "
        "metric, else its training metric's holdout (or cross-validated) score."
    )
    series: list[QualityPoint]


class MonitoringRead(BaseModel):
    endpoint: str
    window: str
    start: datetime
    end: datetime
    bucket_s: int
    feedback_received: int = Field(description="Feedback items received within the window.")
    versions: list[VersionQuality]


class ColumnDriftRead(BaseModel):
    name: str
    kind: str = Field(description="numeric or categorical.")
    test: str = Field(description="ks, chi2 (p-values), wasserstein or jensen_shannon (distances).")
    statistic: float
    p_value: float | None = Field(description="Benjamini–Hochberg adjusted, for ks and chi2.")
    threshold: float = Field(description="alpha for a p-value, the distance otherwise.")
    drifted: bool
    psi: float
    n_reference: int
    n_current: int


class DriftRead(BaseModel):
    endpoint: str
    version: int = Field(description="The version whose training data is the reference.")
    window: str
    start: datetime
    end: datetime
    rows: int = Field(description="Answered (primary) rows of the window.")
    drifted: bool = Field(description="At least `share` of the columns drifted.")
    share: float
    drifted_share: float
    columns: list[ColumnDriftRead]
