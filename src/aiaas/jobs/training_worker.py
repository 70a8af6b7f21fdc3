"""The training child: fit one model on one dataset version, inside the sandbox.

Started by :func:`aiaas.jobs.training.run_training` through :func:`aiaas.sandbox.run_child`
(rlimits; Landlock: read the version's Parquet file, write the output directory, no TCP).
It streams one JSON line per finished trial (``{"type": "trial", ...}``) and ends with one
answer line (``{"type": "result", "ok": ...}``). The budget is a deadline on the wall clock
(``deadline``, epoch seconds) set by the parent when the job was claimed, so the time this
process needs to start and read its data counts too.

The request: ``data`` (Parquet path), ``target``, ``task``, ``metric``, ``seed``, ``cv``,
``families``, ``ensemble``, ``threads``, ``deadline``, ``reserve_s`` (kept back for the
parent's registration), ``out`` (the model directory to write), ``executor`` and
``ray_address``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from aiaas.sandbox import child

MIN_FIT_BUDGET_S = 1.0
#: how the loader says a shared library did not fit under the address-space limit
_NO_MEMORY = ("failed to map segment", "Cannot allocate memory")
_RAY_ENV = frozenset({"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"})


def _line(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=_plain, allow_nan=False) + "\n")
    sys.stdout.flush()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _on_trial(result: Any) -> None:
    row = result.row()
    row["fold_scores"] = list(getattr(result, "fold_scores", None) or [])
    row["worker"] = getattr(result, "worker", None)
    _line(_finite({"type": "trial", **row}))


def _executor(request: dict[str, Any]) -> Any:
    if request.get("executor") != "ray":
        return None
    from aiaas.automl.executors import RayExecutor

    # Ray keeps its client files (an auth token) under $HOME: the sandbox's is not writable
    os.environ["HOME"] = str(Path(request["out"]).parent)
    env = request.get("ray_env")
    if isinstance(env, dict):  # the cluster's token authentication, from the parent
        os.environ.update({k: v for k, v in env.items() if k in _RAY_ENV and isinstance(v, str)})
    return RayExecutor(address=request.get("ray_address"))


def train(request: dict[str, Any]) -> dict[str, Any]:
    """Fit, save, and the answer (``ok`` with the report's summary, or a coded error)."""
    import pandas as pd

    from aiaas import automl

    frame = pd.read_parquet(request["data"])
    target = request["target"]
    if target not in frame.columns:
        return _error("missing_target", f"the dataset version has no column {target!r}")
    budget = float(request["deadline"]) - time.time() - float(request["reserve_s"])
    if budget < MIN_FIT_BUDGET_S:
        return _error("time_budget", "the time budget ran out before training could start")
    options: dict[str, Any] = {}
    executor = _executor(request)
    if executor is not None:
        options["executor"] = executor
    try:
        model = automl.fit(
            frame,
            target,
            task=request["task"],
            metric=request["metric"],
            time_budget=budget,
            seed=int(request["seed"]),
            n_jobs=int(request["threads"]),
            cv=request["cv"],
            callbacks=[_on_trial],
            families=request["families"],
            ensemble=bool(request["ensemble"]),
            **options,
        )
    except automl.AutoMLError as exc:
        return _error(type(exc).__name__.lower(), str(exc))
    model.save(request["out"])
    return {"type": "result", "ok": True, "report": _finite(model.report())}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "result", "ok": False, "code": code, "message": message[:2000]}


def _preload() -> None:
    """Import the training stack before the request arrives: a warm child (spawned ahead of
    its job by the worker) then starts training at once. Only our own code runs here; the
    sandbox applies in :func:`child.start`, before any of the job's data is read."""
    import pandas  # noqa: F401

    from aiaas import automl  # noqa: F401
    from aiaas.automl.families import FAMILIES
    from aiaas.automl.onnx_export import preload_export

    for family in FAMILIES.values():
        family.preload()
    preload_export()


def main() -> int:
    child.die_with_parent()
    # loky counts physical cores by running lscpu, which the sandbox may not allow
    os.environ.setdefault("LOKY_MAX_CPU_COUNT", str(len(os.sched_getaffinity(0))))
    _preload()
    try:
        started = child.start()
    except OSError as exc:
        child.answer(_error("sandbox", f"the sandbox could not be applied: {exc}"))
        return 1
    try:
        reply = train(started.request)
    except MemoryError:
        reply = _error("out_of_memory", "training ran out of memory (its address-space limit)")
    except Exception as exc:  # reported to the parent, which fails the job with it
        if any(sign in str(exc) for sign in _NO_MEMORY):  # a library could not even load
            reply = _error("out_of_memory", f"training ran out of memory (its limit): {exc}")
        else:
            reply = _error("training_error", f"{type(exc).__name__}: {exc}")
    _line(reply)
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()  # the answer is out and the model saved (closed): skip the teardown
    os._exit(code)  # of threads and libraries, which costs the job up to a second
