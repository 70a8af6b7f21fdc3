"""Batch-prediction requests and responses (no ORM here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiaas.data.schemas import VERSION_MAX, DatasetName
from aiaas.jobs.schemas import JobError, JobStatus
from aiaas.schemas import StrictModel
from aiaas.serving.schemas import EndpointName, ModelRef, VersionNumber


class BatchPredictionCreate(StrictModel):
    """``POST /batch-predictions``: score a dataset version with an endpoint's model (its
    primary version) or with a model version; the result is a new dataset."""

    dataset_id: str = Field(min_length=1, max_length=40, description="The dataset (ds_…).")
    dataset_version: int | None = Field(
        None, ge=1, le=VERSION_MAX, description="Its version number; default: the latest."
    )
    endpoint: EndpointName | None = Field(
        None,
        description="Score with this endpoint's primary version (its highest-weight "
        "version, or its alias's target), fixed when the job is submitted.",
    )
    model: ModelRef | None = Field(None, description="Or: score with a version of this model.")
    version: VersionNumber | None = Field(
        None, description="The model's version number (with `model`); default: its latest."
    )
    output_name: DatasetName | None = Field(
        None, description="The new dataset's name; default: `<dataset>-scored-<job>`."
    )

    @model_validator(mode="after")
    def _one_source(self) -> BatchPredictionCreate:
        if self.endpoint is not None and (self.model is not None or self.version is not None):
            raise ValueError("give either endpoint or model (and version), not both")
        if self.endpoint is None and self.model is None:
            raise ValueError("give an endpoint, or a model (and version)")
        if self.version is not None and self.model is None:
            raise ValueError("version needs model")
        return self


class BatchPredictionRead(BaseModel):
    """A batch prediction: its request, where it stands, and the dataset it produced."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    status: JobStatus
    progress: float
    rows_done: int
    rows_total: int
    dataset_id: str
    dataset_version: int
    endpoint: str | None
    model_name: str
    model_version: int
    output_name: str
    result_dataset_id: str | None
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
        spec, result = job.spec, job.result or {}
        total = int(spec.get("rows_total") or 0)
        return {
            **{k: getattr(job, k) for k in _JOB_FIELDS},
            **{k: spec.get(k) for k in _SPEC_FIELDS},
            "rows_total": total,
            "rows_done": min(total, round(job.progress * total)),
            "result_dataset_id": result.get("dataset_id"),
            "error": {"code": job.error_code, "message": job.error_message or ""}
            if job.error_code
            else None,
        }


_JOB_FIELDS = (
    "id", "kind", "status", "progress", "attempts", "max_attempts", "cancel_requested",
    "result", "created_by", "created_at", "started_at", "finished_at", "updated_at",
)  # fmt: skip
_SPEC_FIELDS = (
    "dataset_id", "dataset_version", "endpoint", "model_name", "model_version", "output_name",
)  # fmt: skip
