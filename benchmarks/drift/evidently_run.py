"""Evidently's data drift on two Parquet files: run by benchmarks/drift.py in its own venv.

    python evidently_run.py REFERENCE.parquet CURRENT.parquet CATEGORICAL,COLUMNS

Prints one line: ``EVIDENTLY seconds=<s> drifted=<n> columns=<m>``. The preset is
Evidently's default (DataDriftPreset: its automatic choice of test per column, a dataset
verdict at 50 % of the columns).
"""

import sys
import time

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset


def main() -> None:
    ref_path, cur_path, cats = sys.argv[1], sys.argv[2], sys.argv[3]
    categorical = [c for c in cats.split(",") if c]
    ref = pd.read_parquet(ref_path)
    cur = pd.read_parquet(cur_path)
    numeric = [c for c in ref.columns if c not in categorical]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    elapsed = time.perf_counter() - started
    drifted = -1
    for metric in snapshot.dict().get("metrics", []):
        name = str(metric.get("metric_id") or metric.get("metric_name") or "")
        if name.startswith("DriftedColumnsCount"):
            value = metric.get("value")
            drifted = int(value.get("count")) if isinstance(value, dict) else int(value)
    print(f"EVIDENTLY seconds={elapsed:.2f} drifted={drifted} columns={len(ref.columns)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
