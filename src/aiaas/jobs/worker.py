"""Workers: claim a job, run its handler while heartbeating, record how it ended.

A handler is registered by name (``training.run``) and gets a :class:`JobRun`: the claimed
job, ``stop`` (set when the job is cancelled or the lease is lost: stop within seconds),
and the only ways to change the job — :meth:`JobRun.event`, :meth:`JobRun.progress` and
:meth:`JobRun.complete` — each conditional on still holding the job. A handler ends by
calling ``complete`` (success, in the same transaction as its own writes) or raising
:class:`JobFailed` / :class:`JobCancelled`; anything else fails the job as ``internal``
(logged with its traceback, the message kept short).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from aiaas.jobs import queue
from aiaas.jobs.models import CANCELLED, FAILED, SUCCEEDED, Job
from aiaas.jobs.queue import Claimed, QueuePolicy

log = structlog.get_logger()


class JobFailed(Exception):
    """The job failed for a reason its owner can act on (``code``, ``message``)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class JobCancelled(Exception):
    """The job stopped because its owner cancelled it."""


class LeaseLost(Exception):
    """This worker no longer holds the job: another may run it; change nothing."""


@dataclass
class JobRun:
    claimed: Claimed
    worker_id: str
    factory: sessionmaker[Session]
    stop: threading.Event = field(default_factory=threading.Event)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)

    def write(self, change: Callable[[Session, Job], Any]) -> Any:
        """Run ``change`` in one transaction on the job, if this worker still holds it."""
        with self.factory() as session, session.begin():
            job = queue.hold(session, self.claimed.id, self.worker_id)
            if job is None:
                self.lost.set()
                self.stop.set()
                raise LeaseLost(self.claimed.id)
            return change(session, job)

    def event(self, type_: str, data: dict[str, Any], *, progress: float | None = None) -> None:
        def add(session: Session, job: Job) -> None:
            queue.add_event(session, job, type_, data)
            if progress is not None:
                job.progress = max(0.0, min(1.0, progress))

        self.write(add)

    def complete(self, finalize: Callable[[Session, Job], dict[str, Any]]) -> dict[str, Any]:
        """Succeed: ``finalize``'s writes and the terminal status commit together (or not)."""

        def done(session: Session, job: Job) -> dict[str, Any]:
            result = finalize(session, job)
            queue.finish(session, job, SUCCEEDED, result=result)
            return result

        result: dict[str, Any] = self.write(done)
        return result


Handler = Callable[[JobRun], None]
#: called in a worker thread when its loop ends (a handler's per-thread resources)
THREAD_EXIT_HOOKS: list[Callable[[], None]] = []


@dataclass(frozen=True)
class WorkerTiming:
    heartbeat_s: float
    poll_s: float


class Worker:
    """One worker thread's loop (``aiaas serve`` runs ``jobs.workers`` of them, ``aiaas
    worker`` any number, on any machine that reaches the database)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        handlers: dict[str, Handler],
        policy: QueuePolicy,
        timing: WorkerTiming,
        setup: Callable[[], None] | None = None,
    ):
        self.setup = setup  # run first in the worker's thread (e.g. start a warm process)
        self.factory = factory
        self.handlers = handlers
        self.policy = policy
        self.timing = timing
        self.worker_id = queue.worker_name()
        self._last_recover = 0.0

    def run(self, stop: threading.Event) -> None:
        """Claim and run jobs until ``stop`` is set (a running job is finished first)."""
        log.info("job_worker_started", worker=self.worker_id, kinds=sorted(self.handlers))
        try:
            if self.setup is not None:
                self.setup()
            while not stop.is_set():
                try:
                    if not self.run_once():
                        stop.wait(self.timing.poll_s)
                except Exception:  # the database went away: keep the worker, try again
                    log.exception("job_worker_error", worker=self.worker_id)
                    stop.wait(max(1.0, self.timing.poll_s))
        finally:
            for hook in THREAD_EXIT_HOOKS:  # what handlers keep per worker thread
                hook()

    def run_once(self) -> bool:
        """Recover lost jobs (now and then), claim one and run it; False when idle."""
        now = time.monotonic()
        if now - self._last_recover >= self.timing.heartbeat_s:
            self._last_recover = now
            queue.recover(self.factory, self.policy)
        claimed = queue.claim(self.factory, self.worker_id, sorted(self.handlers), self.policy)
        if claimed is None:
            return False
        self.execute(claimed)
        return True

    def execute(self, claimed: Claimed) -> None:
        run = JobRun(claimed, self.worker_id, self.factory)
        done = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(run, done), name=f"heartbeat-{claimed.id}", daemon=True
        )
        beat.start()
        log.info("job_started", job_id=claimed.id, kind=claimed.kind, attempt=claimed.attempt)
        try:
            self._call(run)
        finally:
            done.set()
            beat.join()

    def _call(self, run: JobRun) -> None:
        job_id = run.claimed.id
        try:
            self.handlers[run.claimed.kind](run)
            log.info(
                "job_finished", job_id=job_id, elapsed_s=round(time.monotonic() - run.started, 2)
            )
        except LeaseLost:
            log.warning("job_lease_lost", job_id=job_id, worker=self.worker_id)
        except JobCancelled:
            self._end(run, CANCELLED, None)
        except JobFailed as exc:
            self._end(run, FAILED, (exc.code, exc.message))
        except Exception as exc:
            log.exception("job_handler_error", job_id=job_id)
            self._end(run, FAILED, ("internal", f"internal error: {type(exc).__name__}"))

    def _end(self, run: JobRun, status: str, error: tuple[str, str] | None) -> None:
        try:
            run.write(lambda session, job: queue.finish(session, job, status, error=error))
            log.info("job_ended", job_id=run.claimed.id, status=status, error=error)
        except LeaseLost:
            log.warning("job_lease_lost", job_id=run.claimed.id, worker=self.worker_id)

    def _heartbeat(self, run: JobRun, done: threading.Event) -> None:
        """Renew the lease every ``heartbeat_s``; tell the handler to stop when the job is
        cancelled or the lease is gone."""
        while not done.wait(self.timing.heartbeat_s):
            try:
                answer = queue.heartbeat(
                    self.factory, run.claimed.id, self.worker_id, self.policy.lease_s
                )
            except Exception:  # a database hiccup: the lease lasts several beats
                log.exception("job_heartbeat_error", job_id=run.claimed.id)
                continue
            if answer is None:
                run.lost.set()
                run.stop.set()
                return
            if answer:
                run.cancel_requested.set()
                run.stop.set()


def start_workers(
    count: int,
    factory: sessionmaker[Session],
    handlers: dict[str, Handler],
    policy: QueuePolicy,
    timing: WorkerTiming,
    stop: threading.Event,
    setup: Callable[[], None] | None = None,
) -> list[threading.Thread]:
    """``count`` daemon threads, each a :class:`Worker` loop until ``stop`` is set."""
    threads = []
    for i in range(count):
        worker = Worker(factory, handlers, policy, timing, setup)
        thread = threading.Thread(
            target=worker.run, args=(stop,), name=f"job-worker-{i}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads
