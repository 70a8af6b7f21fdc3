"""Trial executors: where the search evaluates its trials.

The search loop (``search._TrialLoop``) owns the Optuna study, the skip policy, the time
accounting and the callbacks; an executor only evaluates the configurations it is handed.
:class:`LocalExecutor` (the default) evaluates one trial at a time in this process, exactly
as the search always has (same seed, same results). :class:`RayExecutor` evaluates up to
``parallelism`` trials at once as Ray tasks, so a search can use a whole cluster.

Ray is imported only when a :class:`RayExecutor` starts (``import aiaas.automl`` never
imports it). Its workers must have the same ``aiaas`` (and library versions) installed as
the driver: tasks name their functions and families by module.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aiaas.automl.families import Context, Family, Params
from aiaas.automl.metrics import Metric
from aiaas.automl.search import Split, TrialResult, TrialState, _evaluate

__all__ = ["LocalExecutor", "RayExecutor", "TrialExecutor", "TrialSpec", "TrialWork"]

log = logging.getLogger(__name__)

_ERROR_CHARS = 200  # a failed trial's error, as in search._evaluate
# At the time budget the boosting trials stop themselves (same deadline) and their workers
# live on; only what still runs this long after is killed (a new worker costs an import).
_TIMEOUT_GRACE_S = 0.3


@dataclass(frozen=True)
class TrialWork:
    """What every trial of one search shares: the prepared training problem."""

    X: NDArray[np.float32]
    y: NDArray[Any]
    ctx: Context
    metric: Metric
    split: Split
    balanced: bool
    score_scale: float


@dataclass(frozen=True)
class TrialSpec:
    """One configuration to evaluate.

    ``trial`` is the driver's Optuna trial: the local executor reports fold scores to it (the
    pruner); a remote one uses only its number. ``deadline`` is on this process's
    ``time.monotonic()`` clock (``math.inf``: none); boosting fits stop at it.
    """

    trial: Any
    family: Family
    params: Params
    deadline: float
    keep_partial: bool = False  # at the deadline, keep what was fit (``Context.keep_partial``)

    @property
    def number(self) -> int:
        return int(self.trial.number)


class TrialExecutor(ABC):
    """Evaluates the search's trials; the search loop drives it.

    Contract, in the order the loop calls it:

    * ``start(work)`` once per search, before the first ``submit``; ``close()`` once at the
      end, also when the search raises. An executor may serve several searches in turn.
    * ``slots``: how many trials may be in flight at once (read after ``start``); the loop
      submits while fewer are.
    * ``submit(spec)`` starts evaluating one trial; it does not raise for the trial itself.
    * ``wait(timeout)`` returns the trials that finished: at least one, unless ``timeout``
      seconds passed first (then possibly none). Every submitted trial comes back exactly
      once, from ``wait`` or ``cancel``. A trial that raised, or whose process died, comes
      back ``failed`` — never as an exception: a failing trial must not fail the fit.
    * ``cancel(state, reason)`` stops every trial in flight and returns them with ``state``
      (``timeout`` at the search deadline, ``cancelled`` when a callback stopped the search);
      a trial that had already finished comes back with its own result instead.
    """

    @abstractmethod
    def start(self, work: TrialWork) -> None: ...

    @property
    @abstractmethod
    def slots(self) -> int: ...

    @abstractmethod
    def submit(self, spec: TrialSpec) -> None: ...

    @abstractmethod
    def wait(self, timeout: float) -> list[TrialResult]: ...

    @abstractmethod
    def cancel(self, state: TrialState, reason: str) -> list[TrialResult]: ...

    def close(self) -> None:  # noqa: B027 - optional: most executors hold nothing
        """Release what ``start`` took."""


class LocalExecutor(TrialExecutor):
    """One trial at a time, in this process (folds side by side on ``ctx.n_jobs`` threads).

    ``wait`` evaluates the submitted trial there and then, so the search runs exactly as a
    plain ask → evaluate → tell loop; the trial's pruning uses the driver's study directly.
    """

    def __init__(self) -> None:
        self._work: TrialWork | None = None
        self._pending: TrialSpec | None = None

    def start(self, work: TrialWork) -> None:
        self._work = work

    @property
    def slots(self) -> int:
        return 1

    def submit(self, spec: TrialSpec) -> None:
        assert self._pending is None, "the local executor runs one trial at a time"
        self._pending = spec

    def wait(self, timeout: float) -> list[TrialResult]:
        spec, work = self._pending, self._work
        if spec is None or work is None:
            return []
        self._pending = None
        work.ctx.deadline = spec.deadline  # the interruptible families stop at it
        work.ctx.keep_partial = spec.keep_partial
        started = time.time()
        res = _evaluate(
            spec.trial,
            spec.family,
            spec.params,
            work.ctx,
            work.X,
            work.y,
            work.split,
            work.metric,
            work.balanced,
            work.score_scale,
        )
        res.started_at = started
        return [res]

    def cancel(self, state: TrialState, reason: str) -> list[TrialResult]:
        return []  # nothing is ever in flight between two calls

    def close(self) -> None:
        self._work = self._pending = None


@dataclass(frozen=True)
class _Flight:
    """A trial in flight on Ray: what the driver knows of it."""

    spec: TrialSpec
    submitted: float  # time.monotonic()


class RayExecutor(TrialExecutor):
    """Trials as Ray tasks (one CPU each), ``parallelism`` in flight at a time.

    Args:
        address: the Ray cluster to connect to (``ray.init(address=...)``: ``host:port``,
            ``ray://host:port``, or ``auto`` for the cluster ``ray start`` last started on
            this machine); ``None``: ``RAY_ADDRESS`` when set, else a new local Ray on this
            process's cores (no dashboard, no usage stats, its files under a fresh temporary
            directory; never a stale cluster of the machine). A Ray this process is already
            connected to is used as it is.
        parallelism: trials in flight at once; default the cluster's CPU count.

    The training arrays go to the object store once per search (``ray.put``); each task
    gets them zero-copy. A task evaluates a whole trial (all folds, one thread) with the
    seconds that were left at submission as its deadline (clocks differ between machines).
    Remote trials are not pruned between folds (the pruner lives with the study in the
    driver). Results come back in completion order, so a parallel search is not
    reproducible the way a sequential one is, even with ``max_trials``.
    """

    def __init__(self, address: str | None = None, parallelism: int | None = None) -> None:
        if parallelism is not None and parallelism < 1:
            raise ValueError("parallelism must be at least 1")
        self.address = address
        self.parallelism = parallelism
        self._slots = 1
        self._work_ref: Any = None
        self._task: Any = None
        self._flights: dict[Any, _Flight] = {}

    def start(self, work: TrialWork) -> None:
        ray = _import_ray()
        _connect(ray, self.address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self._slots = self.parallelism or max(1, cpus)
        # each task fits on its one CPU; the deadline is set per task, on the worker's clock
        remote_ctx = replace(work.ctx, n_jobs=1, deadline=math.inf)
        self._work_ref = ray.put(replace(work, ctx=remote_ctx))
        self._task = _remote_task(ray)
        log.info("ray executor: %d trial(s) at a time on %d CPU(s)", self._slots, cpus)

    @property
    def slots(self) -> int:
        return self._slots

    def submit(self, spec: TrialSpec) -> None:
        left = spec.deadline - time.monotonic()
        ref = self._task.remote(
            self._work_ref, spec.number, spec.family, spec.params, left, spec.keep_partial
        )
        self._flights[ref] = _Flight(spec, time.monotonic())

    def wait(self, timeout: float) -> list[TrialResult]:
        if not self._flights:
            return []
        ray = _import_ray()
        ready, _ = ray.wait(
            list(self._flights),
            num_returns=1,
            timeout=None if math.isinf(timeout) else max(0.0, timeout),
        )
        return [self._collect(ref) for ref in ready]

    def cancel(self, state: TrialState, reason: str) -> list[TrialResult]:
        if not self._flights:
            return []
        ray = _import_ray()
        refs = list(self._flights)
        grace = _TIMEOUT_GRACE_S if state == "timeout" else 0.0
        done, running = ray.wait(refs, num_returns=len(refs), timeout=grace)
        out = [self._collect(ref) for ref in done]
        for ref in running:
            ray.cancel(ref, force=True)  # kills the worker process: a fit cannot be interrupted
            flight = self._flights.pop(ref)
            out.append(_unfinished(flight, state, reason))
        return out

    def close(self) -> None:
        if self._flights:
            self.cancel("cancelled", "the search ended")
        self._work_ref = None  # the object store frees the arrays once no task holds them
        self._task = None

    def _collect(self, ref: Any) -> TrialResult:
        """The finished task's result; a task that raised or died is a failed trial."""
        ray = _import_ray()
        flight = self._flights.pop(ref)
        try:
            res: TrialResult = ray.get(ref)
        except Exception as exc:  # RayTaskError, WorkerCrashedError, OutOfMemoryError, ...
            log.warning("trial %s: its Ray task failed: %s", flight.spec.number, exc)
            return _unfinished(flight, "failed", _describe(exc))
        return res


def _unfinished(flight: _Flight, state: TrialState, reason: str) -> TrialResult:
    spec = flight.spec
    return TrialResult(
        spec.number,
        spec.family.name,
        spec.params,
        state,
        error=reason,
        fit_time=time.monotonic() - flight.submitted,
    )


def _describe(exc: BaseException) -> str:
    """A one-line error for the leaderboard: the task's own exception when it raised."""
    cause = getattr(exc, "cause", None)
    shown = cause if isinstance(cause, BaseException) else exc
    first = str(shown).strip().splitlines()[0] if str(shown).strip() else ""
    return f"{type(shown).__name__}: {first}"[:_ERROR_CHARS]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a dependency
        raise ImportError("RayExecutor needs the 'ray' package (pip install ray)") from exc
    return ray


def _connect(ray: Any, address: str | None) -> None:
    """Connect this process to Ray once: the given cluster, RAY_ADDRESS, or a new local one.

    Worker output is not forwarded (``log_to_driver=False``): a sandboxed driver's stdout
    is its protocol with the parent. Ray's ``uv run`` hook is off: it reads the command
    lines of this process's ancestors, which a sandboxed driver may not.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
        return
    from aiaas.automl.fit import default_n_jobs

    ray.init(
        address="local",  # a new one: without it Ray joins the machine's latest cluster
        num_cpus=default_n_jobs(),
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
        _temp_dir=tempfile.mkdtemp(prefix="aiaas-ray-"),
    )


def _remote_task(ray: Any) -> Any:
    """``evaluate_remote`` as a Ray task: one CPU, never retried (a crash is a result)."""
    return ray.remote(num_cpus=1, max_retries=0)(evaluate_remote)


class _RemoteTrial:
    """Stands in for the Optuna trial inside a Ray task: a number, and no pruning."""

    def __init__(self, number: int) -> None:
        self.number = number

    def report(self, value: float, step: int) -> None:
        pass

    def should_prune(self) -> bool:
        return False


def evaluate_remote(
    work: TrialWork,
    number: int,
    family: Family,
    params: Params,
    seconds_left: float,
    keep_partial: bool = False,
) -> TrialResult:
    """Evaluate one trial inside a Ray worker; the result says which process ran it."""
    started = time.time()
    family.preload()  # the library's import is not part of the trial's measured fit time
    ctx = replace(work.ctx, deadline=time.monotonic() + seconds_left, keep_partial=keep_partial)
    res = _evaluate(
        _RemoteTrial(number),
        family,
        params,
        ctx,
        work.X,
        work.y,
        work.split,
        work.metric,
        work.balanced,
        work.score_scale,
    )
    res.worker = f"{socket.gethostname()}:{os.getpid()}"
    res.started_at = started
    return res
