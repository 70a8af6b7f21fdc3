"""``aiaas automl fit|predict``: files in, model dir and predictions CSV out; errors exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aiaas.cli.automl import app

from .conftest import PMLB

runner = CliRunner()


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory, mixed_df) -> Path:
    path: Path = tmp_path_factory.mktemp("cli") / "train.csv"
    mixed_df.to_csv(path, index=False)
    return path


def test_fit_then_predict_classification(train_csv, tmp_path, mixed_df) -> None:
    out = tmp_path / "model"
    res = runner.invoke(
        app,
        [
            "fit",
            str(train_csv),
            "--target",
            "y",
            "--time-budget",
            "4",
            "--output",
            str(out),
            "--seed",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output == ""  # quiet when stdout is not a terminal
    assert (out / "manifest.json").exists()
    data = tmp_path / "rows.parquet"
    mixed_df.drop(columns="y").head(25).to_parquet(data)
    pred = tmp_path / "pred.csv"
    res = runner.invoke(app, ["predict", str(out), str(data), "--output", str(pred)])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(pred)
    assert list(frame.columns) == ["no", "yes"]
    assert len(frame) == 25
    assert ((frame.sum(axis=1) - 1).abs() < 1e-6).all()


def test_fit_regression_from_gzipped_tsv(tmp_path) -> None:
    src = PMLB / "1028_SWD.tsv.gz"
    if not src.exists():
        pytest.skip("pmlb data not available")
    out = tmp_path / "m"
    res = runner.invoke(
        app,
        [
            "fit",
            str(src),
            "--target",
            "target",
            "--time-budget",
            "3",
            "--output",
            str(out),
            "--task",
            "regression",
            "--metric",
            "mae",
        ],
    )
    assert res.exit_code == 0, res.output
    pred = tmp_path / "p.csv"
    res = runner.invoke(app, ["predict", str(out), str(src), "--output", str(pred)])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(pred)
    assert list(frame.columns) == ["prediction"]
    assert len(frame) == 1000


@pytest.mark.parametrize(
    ("frame", "args", "words"),
    [
        (pd.DataFrame({"x": range(50), "y": [0, 1] * 25}), ["--target", "nope"], "not in the data"),
        (pd.DataFrame({"x": range(50), "y": [1] * 50}), ["--target", "y"], "single class"),
        (pd.DataFrame({"x": range(10), "y": [0, 1] * 5}), ["--target", "y"], "at least 20 rows"),
        (
            pd.DataFrame({"x": [float("nan")] * 40, "y": [0, 1] * 20}),
            ["--target", "y"],
            "no usable feature",
        ),
        (
            pd.DataFrame({"x": range(30), "y": ["a", "b", "c"] * 10}),
            ["--target", "y", "--task", "regression"],
            "must be numeric",
        ),
        (
            pd.DataFrame({"x": range(40), "y": [0, 1] * 20}),
            ["--target", "y", "--metric", "zz"],
            "unknown metric",
        ),
        (
            pd.DataFrame({"x": range(40), "y": [float("inf")] + [0.5] * 39}),
            ["--target", "y"],
            "infinite",
        ),
    ],
    ids=[
        "missing-target",
        "single-class",
        "10-rows",
        "all-missing",
        "non-numeric-regression",
        "bad-metric",
        "inf-target",
    ],
)
def test_fit_errors_are_one_line_and_exit_2(tmp_path, frame, args, words) -> None:
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    res = runner.invoke(
        app, ["fit", str(path), *args, "--time-budget", "3", "--output", str(tmp_path / "m")]
    )
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert words in lines[0]
    assert not (tmp_path / "m").exists()


def test_unreadable_and_missing_files_exit_2(tmp_path) -> None:
    res = runner.invoke(
        app,
        [
            "fit",
            str(tmp_path / "none.csv"),
            "--target",
            "y",
            "--time-budget",
            "3",
            "--output",
            str(tmp_path / "m"),
        ],
    )
    assert res.exit_code == 2
    assert "no such file" in res.stderr
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    res = runner.invoke(
        app,
        ["fit", str(bad), "--target", "y", "--time-budget", "3", "--output", str(tmp_path / "m")],
    )
    assert res.exit_code == 2
    assert res.stderr.startswith("error: cannot read bad.parquet")
    res = runner.invoke(
        app, ["predict", str(tmp_path), str(bad), "--output", str(tmp_path / "p.csv")]
    )
    assert res.exit_code == 2
    assert "manifest" in res.stderr


def test_subprocess_module_entry_point(tmp_path) -> None:
    """`python -m aiaas.cli.automl` end to end, with a hostile input giving exit 2."""
    rows = pd.DataFrame({"température": [1.0, 2.0, 3.0] * 10, "y": ["a", "b", "a"] * 10})
    path = tmp_path / "t.csv"
    rows.to_csv(path, index=False)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "aiaas.cli.automl"]
    ok = subprocess.run(
        [
            *cmd,
            "fit",
            str(path),
            "--target",
            "y",
            "--time-budget",
            "3",
            "--output",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [
            *cmd,
            "fit",
            str(path),
            "--target",
            "missing",
            "--time-budget",
            "3",
            "--output",
            str(tmp_path / "m2"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "missing" in bad.stderr


def test_progress_shows_only_on_a_terminal(train_csv, tmp_path, monkeypatch) -> None:
    import aiaas.cli.automl as cli

    monkeypatch.setattr(cli, "_interactive", lambda: True)
    seen = []
    real = cli._fit_with_progress

    def spy(*args, **kwargs):
        seen.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "_fit_with_progress", spy)
    res = runner.invoke(
        app,
        [
            "fit",
            str(train_csv),
            "--target",
            "y",
            "--time-budget",
            "3",
            "--output",
            str(tmp_path / "m"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert seen == [True]
    assert "saved" in res.output
