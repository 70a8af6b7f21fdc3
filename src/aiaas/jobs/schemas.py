"""Training-job requests and responses (no ORM here)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiaas.data.schemas import VERSION_MAX
from aiaas.registry.schemas import MODEL_NAME_PATTERN
from aiaas.schemas import Name, StrictModel

#: The names of ``aiaas.automl``'s families and metrics, written out: importing its tables
#: imports the whole engine (scipy, pandas, scikit-learn: seconds of every server start);
#: tests/jobs/test_schemas.py checks that they equal the tables.
FAMILIES = (
    "extra_trees",
    "histgb",
    "knn",
    "lightgbm",
    "linear",
    "mlp",
    "random_forest",
    "xgboost",
)
METRICS = ("accuracy", "balanced_accuracy", "f1", "log_loss", "mae", "r2", "rmse", "roc_auc")
if TYPE_CHECKING:  # the checker sees a str
    FamilyName = str
    MetricName = str
else:
    FamilyName = Literal[FAMILIES]
    MetricName = Literal[METRICS]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TrialSort = Literal["score", "-score", "number", "-number", "fit_time_s", "-fit_time_s", "family"]
IDEMPOTENCY_KEY_MAX = 200
#: A model name is a URL path segment (``/models/{name}``): the registry's rule.
ModelName = Annotated[Name, Field(pattern=MODEL_NAME_PATTERN)]
MAX_CV_FOLDS = 20


class TrainingJobCreate(StrictModel):
    """``POST /training-jobs``: train a model on a dataset version and register it."""

    dataset_id: str = Field(min_length=1, max_length=40, description="The dataset (ds_…).")
    dataset_version: int | None = Field(
        None, ge=1, le=VERSION_MAX, description="Its version number; default: the latest."
    )
    target: str = Field(min_length=1, max_length=300, description="The column to predict.")
    task: Literal["auto", "binary", "multiclass", "regression"] = Field(
        "auto", description="auto: inferred from the target (the job says how and why)."
    )
    metric: MetricName | None = Field(None, description="Default: by task.")
    time_budget_s: float = Field(
        gt=0, description="Seconds for the whole job, from claim to registered version."
    )
    model_name: ModelName = Field(description="The registered model that gets the new version.")
    families: list[FamilyName] | None = Field(
        None, min_length=1, max_length=len(FAMILIES), description="Only these families."
    )
    exclude_families: list[FamilyName] | None = Field(
        None, max_length=len(FAMILIES), description="Never these families."
    )
    cv_folds: int | None = Field(
        None, ge=2, le=MAX_CV_FOLDS, description="Cross-validation folds; default by size."
    )
    ensemble: bool = Field(True, description="Allow an ensemble of the best trials.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Makes splits and search repeatable.")

    @model_validator(mode="after")
    def _some_family_left(self) -> TrainingJobCreate:
        if self.searched_families() == []:
            raise ValueError("families and exclude_families leave no family to search")
        return self

    def searched_families(self) -> list[str] | None:
        """The families to search (None: all of them)."""
        if self.families is None and not self.exclude_families:
            return None
        chosen = self.families or sorted(FAMILIES)
        return [f for f in chosen if f not in set(self.exclude_families or ())]


class JobError(BaseModel):
    code: str
    message: str


class TrainingJobRead(BaseModel):
    """A training job: its request, where it stands, and what it produced."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    status: JobStatus
    progress: float
    dataset_id: str
    dataset_version: int
    target: str
    task: str
    metric: str | None
    time_budget_s: float
    model_name: str
    options: dict[str, Any]
    attempts: int
    max_attempts: int
    cancel_requested: bool
    error: JobError | None
    result: dict[str, Any] | None
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _from_job(cls, job: Any) -> Any:
        if isinstance(job, dict):
            return job
        spec = job.spec
        return {
            **{k: getattr(job, k) for k in _JOB_FIELDS},
            **{k: spec.get(k) for k in _SPEC_FIELDS},
            "task": spec.get("task") or "auto",
            "options": {k: spec.get(k) for k in _OPTION_FIELDS},
            "error": {"code": job.error_code, "message": job.error_message or ""}
            if job.error_code
            else None,
        }


_JOB_FIELDS = (
    "id", "kind", "status", "progress", "attempts", "max_attempts", "cancel_requested",
    "result", "created_by", "created_at", "started_at", "finished_at", "updated_at",
)  # fmt: skip
_SPEC_FIELDS = ("dataset_id", "dataset_version", "target", "metric", "time_budget_s", "model_name")
_OPTION_FIELDS = ("families", "exclude_families", "cv_folds", "ensemble", "seed")


class TrialRead(BaseModel):
    """One trial of a job's search: a leaderboard row."""

    model_config = ConfigDict(from_attributes=True)

    number: int
    attempt: int
    family: str
    params: dict[str, Any]
    state: str
    score: float | None
    score_std: float | None
    fold_scores: list[float | None]
    fit_time_s: float | None
    error: str | None
    worker: str | None
    created_at: datetime


class TrialList(BaseModel):
    """A job's trials, sorted (``sort``); ``metric`` says what ``score`` measures."""

    job_id: str
    metric: str | None
    count: int
    items: list[TrialRead]
