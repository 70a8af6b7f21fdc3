"""The one place the jobs engine's limits are built, from the settings."""

from __future__ import annotations

import os

from aiaas.jobs.queue import QueuePolicy
from aiaas.jobs.worker import WorkerTiming
from aiaas.sandbox import ChildLimits
from aiaas.settings import Settings

TRAINING_OUTPUT_BYTES = 64 * 1024 * 1024  # trial lines: a few hundred bytes each
TRAINING_OPEN_FILES = 4096


def queue_policy(settings: Settings) -> QueuePolicy:
    j = settings.jobs
    return QueuePolicy(
        lease_s=j.lease_s,
        max_attempts=j.max_attempts,
        retry_backoff_s=j.retry_backoff_s,
        max_concurrent_per_org=j.max_concurrent_per_org,
    )


def worker_timing(settings: Settings) -> WorkerTiming:
    return WorkerTiming(heartbeat_s=settings.jobs.heartbeat_s, poll_s=settings.jobs.poll_s)


def training_threads(settings: Settings) -> int:
    """Threads of one training process: set, or the cores shared by the embedded workers."""
    if settings.jobs.training_threads:
        return settings.jobs.training_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, settings.jobs.workers))


def training_limits(settings: Settings, budget_s: float) -> ChildLimits:
    """The sandbox of one training process with ``budget_s`` seconds of time budget."""
    j = settings.jobs
    wall = budget_s + j.training_grace_s
    return ChildLimits(
        timeout_s=wall,
        cpu_s=int(wall * training_threads(settings) * 2) + 30,  # every thread busy, twice
        address_bytes=j.training_address_space_bytes,
        max_file_bytes=j.training_max_file_bytes,
        max_output_bytes=TRAINING_OUTPUT_BYTES,
        open_files=TRAINING_OPEN_FILES,
    )


BATCH_OUTPUT_BYTES = 16 * 1024 * 1024  # progress lines (tens of bytes per chunk), one answer
BATCH_OPEN_FILES = 256


def batch_limits(settings: Settings) -> ChildLimits:
    """The sandbox of one batch scoring process (:mod:`aiaas.serving.batch_worker`)."""
    j = settings.jobs
    return ChildLimits(
        timeout_s=j.batch_timeout_s,
        cpu_s=int(j.batch_timeout_s * training_threads(settings) * 2) + 30,
        address_bytes=j.batch_address_space_bytes,
        max_file_bytes=j.batch_max_file_bytes,
        max_output_bytes=BATCH_OUTPUT_BYTES,
        open_files=BATCH_OPEN_FILES,
    )
