"""The trial executors against a real local Ray (2 CPUs): parallel trials in Ray workers,
crashing tasks as failed trials, a stopping callback cancelling what is in flight.

Two test-only families stand in for misbehaving trials: ``crash`` kills its worker process
(``os._exit``), ``sleepy`` sleeps far past any budget. They only ever run inside Ray
workers (they refuse to run in the test process). ``sampler="random"`` with ``seed=1``
asks ``linear`` (the enqueued default), then the test family, then ``o l o l o o``
(``o`` = the test family): the random sampler draws in ask order, whatever order the
trials finish in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="the Ray executor's tests need the 'ray' package")

from aiaas import automl  # noqa: E402
from aiaas.automl.executors import LocalExecutor, RayExecutor, TrialExecutor  # noqa: E402
from aiaas.automl.families import FAMILIES, Family, FitInfo  # noqa: E402
from aiaas.automl.search import TrialResult  # noqa: E402
from tests.helpers import warm_ray_workers  # noqa: E402

TEST_PID = os.getpid()


class _Misbehaving(Family):
    """A family whose fit misbehaves; never in the test process itself."""

    def defaults(self, ctx: Any) -> list[dict[str, Any]]:
        return [{}]

    def suggest(self, trial: Any, ctx: Any) -> dict[str, Any]:
        return {}

    def build(self, params: dict[str, Any], ctx: Any, *, rounds: int | None = None) -> Any:
        from sklearn.dummy import DummyClassifier

        return DummyClassifier()

    def fit(self, est: Any, X: Any, y: Any, w: Any, X_val: Any, y_val: Any, ctx: Any) -> FitInfo:
        if os.getpid() == TEST_PID:
            raise RuntimeError("a test family ran in the test process")
        self.misbehave()
        return FitInfo()

    def misbehave(self) -> None:
        raise NotImplementedError


class Crash(_Misbehaving):
    name = "crash"

    def misbehave(self) -> None:
        os._exit(3)  # the worker process dies mid-task


class Sleepy(_Misbehaving):
    name = "sleepy"

    def misbehave(self) -> None:
        time.sleep(60)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # "local": a new instance, not the machine's latest cluster (another test run's)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the test families travel by value: a worker need not import this test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    warm_ray_workers(2)
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture
def test_families(monkeypatch):
    for fam in (Crash(), Sleepy()):
        monkeypatch.setitem(FAMILIES, fam.name, fam)


def _pid(result: TrialResult) -> int:
    assert result.worker is not None
    return int(result.worker.rsplit(":", 1)[1])


def _overlap(a: TrialResult, b: TrialResult) -> bool:
    assert a.started_at is not None
    assert b.started_at is not None
    return a.started_at < b.started_at + b.fit_time and b.started_at < a.started_at + a.fit_time


def test_trials_run_in_parallel_in_ray_workers_within_the_budget(binary_df: pd.DataFrame):
    seen: list[TrialResult] = []
    budget = 10.0
    t0 = time.monotonic()
    model = automl.fit(
        binary_df, "label", time_budget=budget, executor=RayExecutor(), callbacks=[seen.append]
    )
    elapsed = time.monotonic() - t0
    assert elapsed <= budget * 1.05 + 2
    proba = model.predict_proba(binary_df.drop(columns=["label"]).head(5))
    assert proba.shape == (5, 2)
    ran = [r for r in seen if r.worker is not None]
    assert len(ran) >= 2
    pids = {_pid(r) for r in ran}
    assert TEST_PID not in pids
    assert len(pids) >= 2
    assert any(_overlap(a, b) for a in ran for b in ran if _pid(a) != _pid(b))
    assert model.report()["trials"]["complete"] >= 2


def _fit_four(binary_df: pd.DataFrame, executor: TrialExecutor) -> tuple[Any, list[TrialResult]]:
    seen: list[TrialResult] = []
    model = automl.fit(
        binary_df,
        "label",
        time_budget=60,
        max_trials=4,
        families=["linear", "lightgbm"],
        executor=executor,
        callbacks=[seen.append],
    )
    return model, seen


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_every_executor_returns_each_trial_once(kind: str, binary_df: pd.DataFrame):
    """The executor contract, for each backend: every trial comes back once, told in order."""
    executor: TrialExecutor = LocalExecutor() if kind == "local" else RayExecutor(parallelism=2)
    model, seen = _fit_four(binary_df, executor)
    assert sorted(r.number for r in seen) == [0, 1, 2, 3]
    assert len(model.leaderboard) == 4
    assert all(r.state == "complete" for r in seen)
    assert all(r.started_at is not None for r in seen)
    if kind == "local":
        assert {r.worker for r in seen} == {None}
    else:
        assert TEST_PID not in {_pid(r) for r in seen}


def test_ray_results_are_like_the_local_ones(binary_df: pd.DataFrame):
    """Same configurations (the four enqueued defaults), same scores, same report shape."""
    local, _ = _fit_four(binary_df, LocalExecutor())
    remote, _ = _fit_four(binary_df, RayExecutor())

    def board(model: Any) -> dict[int, tuple[str, str, Any]]:
        return {
            r["trial"]: (r["family"], json.dumps(r["params"]), r["state"])
            for r in model.leaderboard
        }

    assert board(remote) == board(local)
    assert [set(r) for r in remote.leaderboard] == [set(r) for r in local.leaderboard]
    scores = {r["trial"]: r["score"] for r in local.leaderboard}
    for row in remote.leaderboard:
        assert row["score"] == pytest.approx(scores[row["trial"]], rel=1e-6)
    rep_l, rep_r = local.report(), remote.report()
    assert set(rep_r) == set(rep_l)
    assert rep_r["trials"] == rep_l["trials"]
    assert rep_r["best_trial"]["family"] == rep_l["best_trial"]["family"]
    assert sorted(remote.families) == sorted(local.families)


def test_a_stopping_callback_cancels_trials_in_flight(binary_df: pd.DataFrame, test_families):
    seen: list[TrialResult] = []

    def stop_after_first_complete(res: TrialResult) -> bool:
        seen.append(res)
        return res.state != "complete"

    t0 = time.monotonic()
    model = automl.fit(
        binary_df,
        "label",
        time_budget=60,
        families=["linear", "sleepy"],
        sampler="random",
        seed=1,
        executor=RayExecutor(parallelism=2),
        callbacks=[stop_after_first_complete],
    )
    assert time.monotonic() - t0 < 30  # not the sleepy trial's 60 s, nor the budget
    by_state = {r.number: r.state for r in seen}
    assert by_state[0] == "complete"  # linear, then the callback said stop
    assert by_state[1] == "cancelled"  # sleepy, still in flight
    assert model.report()["trials"]["cancelled"] == 1


def test_the_deadline_stops_trials_in_flight(binary_df: pd.DataFrame, test_families):
    """Trials still running at the end of the search come back ``timeout``; the fit keeps
    its budget (the sleeping trials would take a minute)."""
    seen: list[TrialResult] = []
    budget = 6.0
    t0 = time.monotonic()
    model = automl.fit(
        binary_df,
        "label",
        time_budget=budget,
        families=["linear", "sleepy"],
        sampler="random",
        seed=1,
        executor=RayExecutor(parallelism=2),
        callbacks=[seen.append],
    )
    assert time.monotonic() - t0 <= budget * 1.05 + 2
    sleepy = [r for r in seen if r.family == "sleepy"]
    assert sleepy
    assert {r.state for r in sleepy} == {"timeout"}
    assert model.report()["trials"]["timeout"] == len(sleepy)
    assert model.report()["best_trial"]["family"] == "linear"


def test_a_crashing_task_is_a_failed_trial_not_a_failed_fit(binary_df: pd.DataFrame, test_families):
    seen: list[TrialResult] = []
    model = automl.fit(
        binary_df,
        "label",
        time_budget=60,
        max_trials=6,
        families=["linear", "crash"],
        sampler="random",
        seed=1,
        executor=RayExecutor(),
        callbacks=[seen.append],
    )
    crashed = [r for r in seen if r.family == "crash"]
    assert sorted(r.number for r in crashed) == [1, 2, 4]  # in the order they died
    assert all(r.state == "failed" for r in crashed)
    assert all(r.error is not None and "WorkerCrashedError" in r.error for r in crashed)
    assert model.report()["best_trial"]["family"] == "linear"
    assert np.isfinite(model.predict_proba(binary_df.drop(columns=["label"]).head(3))).all()


def test_importing_automl_does_not_import_ray():
    code = (
        "import json, sys\n"
        "import aiaas.automl, aiaas.automl.executors\n"
        "print(json.dumps('ray' in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False


def test_an_address_joins_that_cluster_instead_of_starting_one(tmp_path):
    """``RayExecutor(address=...)`` (and ``RAY_ADDRESS``) connects to a running cluster: here
    the module's, from another driver process, whose trials run in that cluster's workers."""
    address = ray.get_runtime_context().gcs_address
    code = (
        "import json, os, sys\n"
        "import numpy as np, pandas as pd, ray\n"
        "from aiaas import automl\n"
        "from aiaas.automl.executors import RayExecutor\n"
        "rng = np.random.default_rng(0)\n"
        "df = pd.DataFrame({'x': rng.normal(size=200), 'z': rng.normal(size=200)})\n"
        "df['y'] = df.x * 2 + rng.normal(size=200)\n"
        "seen = []\n"
        "ex = RayExecutor(address=sys.argv[1] or None)\n"
        "automl.fit(df, 'y', time_budget=60, max_trials=2, families=['linear'],\n"
        "           executor=ex, callbacks=[seen.append])\n"
        "print(json.dumps({'gcs': ray.get_runtime_context().gcs_address, 'pid': os.getpid(),\n"
        "                  'workers': [r.worker for r in seen]}))\n"
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    for arg, extra in ((address, {}), ("", {"RAY_ADDRESS": address})):
        out = subprocess.run(
            [sys.executable, "-c", code, arg],
            capture_output=True,
            text=True,
            timeout=180,
            env={**env, **extra},
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["gcs"] == address
        pids = {int(w.rsplit(":", 1)[1]) for w in got["workers"]}
        assert len(got["workers"]) == 2
        assert got["pid"] not in pids
        assert TEST_PID not in pids


def test_no_address_starts_a_local_ray_without_dashboard(monkeypatch):
    """The connection rule, on a stand-in for ``ray``: an explicit address, else
    ``RAY_ADDRESS``, else a new local Ray on this process's cores; a connected one is kept."""
    from aiaas.automl import executors

    calls: list[dict[str, Any]] = []

    class FakeRay:
        initialized = False

        def is_initialized(self) -> bool:
            return self.initialized

        def init(self, address: str | None = None, **kw: Any) -> None:
            calls.append({"address": address, **kw})

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    executors._connect(FakeRay(), None)
    assert calls[-1]["address"] == "local"
    assert calls[-1]["include_dashboard"] is False
    assert calls[-1]["num_cpus"] == automl.default_n_jobs()
    executors._connect(FakeRay(), "ray://head:10001")
    assert calls[-1]["address"] == "ray://head:10001"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    executors._connect(FakeRay(), None)
    assert calls[-1]["address"] == "10.0.0.1:6379"
    connected = FakeRay()
    connected.initialized = True
    executors._connect(connected, "elsewhere:1")
    assert len(calls) == 3
