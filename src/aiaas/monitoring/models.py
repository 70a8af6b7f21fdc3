"""Ground truth for served predictions (``POST /endpoints/{name}/feedback``).

Invariants:

- one row per endpoint and prediction id (``uq_feedback_endpoint_prediction``): repeated
  feedback for a prediction replaces its ``actual`` (the latest word counts) and moves
  ``received_at``;
- ``actual`` is what the caller sent, already checked against the endpoint's task: one of the
  model's class labels (classification) or a finite number (regression);
- the prediction itself lives in the prediction log (Parquet in the artifact store); the row
  is joined with it by ``prediction_id`` when monitoring is computed, however late it came.
  Feedback for an id the log does not hold is kept, and counted as unmatched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aiaas.db.base import Base, UTCDateTime, new_id, utcnow


class Feedback(Base):
    """The true outcome of one served prediction."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "prediction_id", name="uq_feedback_endpoint_prediction"),
        Index("ix_feedback_endpoint_received", "endpoint_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("fb"))
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    prediction_id: Mapped[str] = mapped_column(String(64))
    actual: Mapped[Any] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
