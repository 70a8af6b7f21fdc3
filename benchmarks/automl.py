"""AutoML benchmark: aiaas vs FLAML vs LightGBM defaults on the PMLB datasets in shared/.

Run it from the repository root:

    python benchmarks/automl.py                 # 60 s budgets, every dataset, all systems
    python benchmarks/automl.py --budget 20 --datasets adult,splice

FLAML is a benchmark-only dependency (the ``bench`` extra, locked in requirements-bench.lock).
When the running Python cannot import it, the script creates ``.venv-bench`` from that lock
(PyPI only) on first use and re-runs itself there. Each (dataset, system) runs in its own
subprocess with the same environment (``OMP_WAIT_POLICY=PASSIVE``), one after another.

Protocol (issue 4): seed-0 75/25 split (stratified for classification); every system gets the
same ``time_budget`` and its default metric; scores on the test split: ROC AUC (binary, higher
is better), log loss (multiclass, lower), RMSE (regression, lower). Also measured for aiaas:
single-row predict latency through ONNX Runtime vs the native models. Results are printed as
a markdown table and written to benchmarks/results/automl.md (+ automl.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from _benchenv import bench_python

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "pmlb"
RESULTS = ROOT / "benchmarks" / "results"
SYSTEMS = ("aiaas", "flaml", "lgbm_default")
TASKS = {
    "adult": "binary",
    "magic": "binary",
    "hypothyroid": "binary",
    "wine_quality_white": "multiclass",
    "satimage": "multiclass",
    "splice": "multiclass",
    "537_houses": "regression",
    "1028_SWD": "regression",
}
METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
GREATER = {"roc_auc": True, "log_loss": False, "rmse": False}


def _datasets() -> list[str]:
    found = sorted(p.name.removesuffix(".tsv.gz") for p in DATA.glob("*.tsv.gz"))
    order = list(TASKS)
    return sorted(found, key=lambda n: (order.index(n) if n in order else len(order), n))


def _task_of(name: str, y: object) -> str:
    if name in TASKS:
        return TASKS[name]
    from aiaas.automl.preprocess import infer_task

    return infer_task(y)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ one run
# generality check: datasets bundled with scikit-learn (not in shared/, no download)
SKLEARN = {
    "sk_breast_cancer": ("load_breast_cancer", "binary"),
    "sk_digits": ("load_digits", "multiclass"),
    "sk_wine": ("load_wine", "multiclass"),
    "sk_diabetes": ("load_diabetes", "regression"),
}


def _load_split(name: str):  # type: ignore[no-untyped-def]
    import pandas as pd
    from sklearn.model_selection import train_test_split

    if name in SKLEARN:
        from sklearn import datasets

        loader, task = SKLEARN[name]
        df = getattr(datasets, loader)(as_frame=True).frame
        TASKS[name] = task
    else:
        df = pd.read_csv(DATA / f"{name}.tsv.gz", sep="\t")
    task = _task_of(name, df["target"])
    strat = df["target"] if task != "regression" else None
    train, test = train_test_split(df, test_size=0.25, random_state=0, stratify=strat)
    return task, train.reset_index(drop=True), test.reset_index(drop=True)


def _score(task: str, y_true, pred, classes) -> float:  # type: ignore[no-untyped-def]
    import numpy as np
    from sklearn import metrics

    if task == "binary":
        return float(metrics.roc_auc_score(y_true, pred[:, 1]))
    if task == "multiclass":
        return float(metrics.log_loss(y_true, pred, labels=list(classes)))
    return float(np.sqrt(np.mean((np.asarray(y_true, dtype=float) - pred) ** 2)))


def _latency(model, X) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Median single-row predict latency (ms): native models vs ONNX Runtime."""
    import numpy as np

    row = X.iloc[[0]]
    out: dict[str, float] = {}
    is_cls = model.task != "regression"

    def call(backend: str) -> None:
        if is_cls:
            model.predict_proba(row, backend=backend)
        else:
            model.predict(row, backend=backend)

    backends = ["native"] + (["onnx"] if model.to_onnx() is not None else [])
    for backend in backends:
        for _ in range(20):
            call(backend)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            call(backend)
            times.append(time.perf_counter() - t)
        out[f"{backend}_ms"] = float(np.median(times) * 1e3)
    if "onnx_ms" in out:  # the graph alone (what a server runs after encoding the payload)
        sess = model.onnx_session()
        feats = model.transform(row)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            sess.run(None, {"input": feats})
            times.append(time.perf_counter() - t)
        out["onnx_graph_ms"] = float(np.median(times) * 1e3)
    return out


def run_one(system: str, name: str, budget: float) -> dict[str, object]:
    import numpy as np

    task, train, test = _load_split(name)
    X_tr, y_tr = train.drop(columns=["target"]), train["target"]
    X_te, y_te = test.drop(columns=["target"]), test["target"]
    classes = np.unique(y_tr) if task != "regression" else None
    result: dict[str, object] = {"system": system, "dataset": name, "task": task}
    t0 = time.monotonic()
    if system == "aiaas":
        import aiaas.automl as automl

        model = automl.fit(train, "target", task=task, time_budget=budget, seed=0)
        fit_s = time.monotonic() - t0
        pred = model.predict_proba(X_te) if task != "regression" else model.predict(X_te)
        if task != "regression":
            classes = model.classes_.astype(y_tr.dtype)
        rep = model.report()
        result["members"] = [m["family"] for m in rep["ensemble"]["members"]]
        result["trials"] = rep["trials"]["total"]
        result["latency"] = _latency(model, X_te)
    elif system == "flaml":
        from flaml import AutoML

        automl_ = AutoML()
        automl_.fit(
            X_tr,
            y_tr,
            task="regression" if task == "regression" else "classification",
            time_budget=budget,
            seed=0,
            verbose=0,
        )
        fit_s = time.monotonic() - t0
        if task == "regression":
            pred = automl_.predict(X_te)
        else:
            pred = automl_.predict_proba(X_te)
            classes = automl_.classes_
        result["best"] = str(automl_.best_estimator)
    elif system == "lgbm_default":
        import lightgbm as lgb

        est = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
        model_ = est(random_state=0, verbose=-1).fit(X_tr, y_tr)
        fit_s = time.monotonic() - t0
        pred = model_.predict(X_te) if task == "regression" else model_.predict_proba(X_te)
        if task != "regression":
            classes = model_.classes_
    else:
        raise SystemExit(f"unknown system {system!r}")
    result["fit_s"] = round(fit_s, 2)
    result["metric"] = METRIC[task]
    result["score"] = _score(task, y_te, np.asarray(pred, dtype=float), classes)
    return result


# ----------------------------------------------------------------------------- driver
def _ensure_bench_python() -> str:
    """A Python that has FLAML and aiaas: this one, or .venv-bench (created on first use)."""
    return bench_python("flaml")


def _rank(values: list[float | None], greater: bool) -> list[float]:
    """Average ranks (1 = best); a missing result ranks last."""
    keyed = [(v if v is not None else (float("-inf") if greater else float("inf"))) for v in values]
    order = sorted(range(len(keyed)), key=lambda i: -keyed[i] if greater else keyed[i])
    ranks = [0.0] * len(keyed)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and keyed[order[j + 1]] == keyed[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _within_target(metric: str, ours: float, ref: float) -> bool:
    if metric == "roc_auc":
        return ours >= ref - 0.005
    return ours <= ref * 1.01


def render(results: list[dict[str, object]], budget: float, systems: list[str]) -> str:
    by = {(r["dataset"], r["system"]): r for r in results}
    datasets = list(dict.fromkeys(str(r["dataset"]) for r in results))
    lines = [
        f"# AutoML benchmark ({budget:g} s budgets)",
        "",
        f"Machine: {os.cpu_count()} cores; run at {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}"
        " UTC."
        " Seed-0 75/25 split (stratified for classification); test-split scores: ROC AUC"
        " (binary, higher is better), log loss (multiclass, lower), RMSE (regression, lower).",
        "",
        "| dataset | metric | " + " | ".join(systems) + " | aiaas within target | aiaas fit s |",
        "|---" * (len(systems) + 4) + "|",
    ]
    rank_sum = dict.fromkeys(systems, 0.0)
    n_ranked = 0
    latency_rows = []
    for d in datasets:
        metric = next(str(by[(d, s)]["metric"]) for s in systems if (d, s) in by)
        greater = GREATER[metric]
        vals: list[float | None] = []
        for s in systems:
            r = by.get((d, s))
            vals.append(float(r["score"]) if r and r.get("score") is not None else None)  # type: ignore[arg-type]
        ranks = _rank(vals, greater)
        for s, rk in zip(systems, ranks, strict=True):
            rank_sum[s] += rk
        n_ranked += 1
        present = [v for v in vals if v is not None]
        best = (max if greater else min)(present) if present else None
        cells = []
        for v in vals:
            if v is None:
                cells.append("—")
            else:
                txt = f"{v:.4f}" if metric != "rmse" or v < 100 else f"{v:,.0f}"
                cells.append(f"**{txt}**" if v == best else txt)
        ok = "—"
        ours = by.get((d, "aiaas"))
        refs = [
            float(by[(d, s)]["score"])  # type: ignore[arg-type]
            for s in ("flaml", "lgbm_default")
            if (d, s) in by and by[(d, s)].get("score") is not None
        ]
        fit_s = "—"
        if ours and ours.get("score") is not None and refs:
            ref = (max if greater else min)(refs)
            ok = "yes" if _within_target(metric, float(ours["score"]), ref) else "**no**"  # type: ignore[arg-type]
            fit_s = f"{ours['fit_s']}"
        lines.append(f"| {d} | {metric} | " + " | ".join(cells) + f" | {ok} | {fit_s} |")
        if ours and isinstance(ours.get("latency"), dict):
            latency_rows.append((d, ours["latency"], ours.get("members")))
    lines += [
        "",
        "Mean rank (1 = best): "
        + ", ".join(f"{s} {rank_sum[s] / max(n_ranked, 1):.2f}" for s in systems),
        "",
    ]
    if latency_rows:
        lines += [
            "Single-row predict latency of the aiaas model (median of 200 calls, 1 thread):",
            "",
            "| dataset | native (ms) | ONNX incl. encoding (ms) | ONNX graph only (ms) | members |",
            "|---|---|---|---|---|",
        ]
        for d, lat, members in latency_rows:

            def f(k: str, lat: dict = lat) -> str:  # type: ignore[type-arg]
                return f"{lat[k]:.2f}" if k in lat else "—"

            lines.append(
                f"| {d} | {f('native_ms')} | {f('onnx_ms')} | {f('onnx_graph_ms')} | "
                f"{', '.join(members or [])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per fit (default 60)")
    parser.add_argument("--datasets", default="", help="comma-separated names (default: all)")
    parser.add_argument(
        "--sklearn",
        action="store_true",
        help="run on scikit-learn's bundled datasets instead (a generality check)",
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems")
    parser.add_argument("--out", default=str(RESULTS / "automl.md"), help="markdown output file")
    parser.add_argument("--worker", nargs=2, metavar=("SYSTEM", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        res = run_one(args.worker[0], args.worker[1], args.budget)
        print("RESULT " + json.dumps(res), flush=True)
        return

    python = _ensure_bench_python()
    default = list(SKLEARN) if args.sklearn else _datasets()
    names = [d for d in args.datasets.split(",") if d] or default
    systems = [s for s in args.systems.split(",") if s]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}
    results: list[dict[str, object]] = []
    for name in names:
        for system in systems:
            t = time.monotonic()
            proc = subprocess.run(
                [python, __file__, "--budget", str(args.budget), "--worker", system, name],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
            )
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"{name:20s} {system:13s} FAILED: {err}", flush=True)
                results.append(
                    {
                        "system": system,
                        "dataset": name,
                        "score": None,
                        "error": err,
                        "metric": METRIC[TASKS.get(name) or SKLEARN.get(name, ("", "binary"))[1]],
                    }
                )
                continue
            res = json.loads(line[len("RESULT ") :])
            results.append(res)
            print(
                f"{name:20s} {system:13s} {res['metric']}={res['score']:.5f} "
                f"fit={res['fit_s']}s wall={time.monotonic() - t:.0f}s",
                flush=True,
            )
    table = render(results, args.budget, systems)
    print()
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
