"""``aiaas automl``: train and use AutoML models locally, no server.

    aiaas automl fit TRAIN_FILE --target COL --time-budget SECONDS --output DIR
        [--task auto|binary|multiclass|regression] [--metric NAME] [--seed N]
    aiaas automl predict MODEL_DIR DATA_FILE --output PREDICTIONS.csv

Input files: CSV, TSV (``.tsv``/``.tab``), either gzip-compressed (``.gz``), or Parquet.
Predictions CSV: classification → one probability column per class label (header = the label
as text); regression → one column ``prediction``. Every expected failure is one line on stderr
and exit code 2. A Rich progress display shows on a terminal; otherwise the command is quiet.
Heavy libraries load inside the commands, so ``aiaas --help`` stays fast.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

# before any OpenMP runtime loads (see aiaas.automl): busy-waiting threads starve each other
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    import pandas as pd

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help="Train and use AutoML models locally (no server).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class _InputError(Exception):
    """A file cannot be read as a table."""


def _fail(message: str) -> typer.Exit:
    line = " ".join(str(message).split())
    typer.echo(f"error: {line}", err=True)
    return typer.Exit(2)


def _handle_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from aiaas.automl.errors import AutoMLError

        try:
            return func(*args, **kwargs)
        except (AutoMLError, _InputError) as exc:
            raise _fail(str(exc)) from None
        except OSError as exc:
            raise _fail(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": ")) from None
        except MemoryError:
            raise _fail("out of memory") from None

    return wrapper  # type: ignore[return-value]


def _interactive() -> bool:
    """Progress and summaries only for a person at a terminal."""
    return sys.stdout.isatty()


def read_table(path: Path) -> pd.DataFrame:
    """Read CSV/TSV (optionally gzip) or Parquet into a DataFrame."""
    import pandas as pd

    if not path.is_file():
        raise _InputError(f"no such file: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    try:
        if last in (".parquet", ".pq"):
            return pd.read_parquet(path)
        sep = "\t" if last in (".tsv", ".tab") else ","
        return pd.read_csv(path, sep=sep, compression="infer", low_memory=False)
    except Exception as exc:  # parser errors come in many types; all mean "bad input"
        raise _InputError(f"cannot read {path.name}: {type(exc).__name__}: {exc}") from exc


def _write_csv_atomic(frame: pd.DataFrame, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            frame.to_csv(fh, index=False)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command("fit")
@_handle_errors
def fit_command(
    train_file: Annotated[Path, typer.Argument(help="Training table (CSV, TSV, .gz, Parquet).")],
    target: Annotated[str, typer.Option("--target", help="Column to predict.")],
    time_budget: Annotated[
        float, typer.Option("--time-budget", help="Seconds for the whole search.", min=0.1)
    ],
    output: Annotated[Path, typer.Option("--output", help="Directory to write the model to.")],
    task: Annotated[
        str, typer.Option("--task", help="auto | binary | multiclass | regression")
    ] = "auto",
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric",
            help="roc_auc, log_loss, accuracy, balanced_accuracy, f1, rmse, mae, r2 "
            "(default by task)",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Search models for TARGET within the time budget and save the best to --output."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise _InputError(f"output {output} exists and is not an empty directory")
    data = read_table(train_file)
    import aiaas.automl as automl

    if _interactive():
        model = _fit_with_progress(automl, data, target, task, metric, time_budget, seed)
    else:
        model = automl.fit(
            data, target, task=task, metric=metric, time_budget=time_budget, seed=seed
        )
    model.save(output)
    if _interactive():
        rep = model.report()
        members = ", ".join(m["family"] for m in rep["ensemble"]["members"])
        typer.echo(
            f"saved {output} — {rep['task']}, CV {rep['metric']} = {rep['cv_score']:.5f}, "
            f"model: {members}"
        )


def _fit_with_progress(
    automl: Any, data: Any, target: str, task: str, metric: str | None, budget: float, seed: int
) -> Any:
    """``fit`` with a Rich progress bar: trials so far, best CV score, time left."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    state: dict[str, Any] = {"trials": 0, "best_loss": None, "best": None}
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]automl[/]"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    ) as progress:
        bar = progress.add_task("fit", total=budget, info="searching")

        def on_trial(result: Any) -> None:
            state["trials"] += 1
            # the library's own loss is comparable across trials whatever the metric's direction
            if result.loss is not None and (
                state["best_loss"] is None or result.loss < state["best_loss"]
            ):
                state["best_loss"], state["best"] = result.loss, result.score
            elapsed = time.monotonic() - started
            best = "—" if state["best"] is None else f"{state['best']:.5f}"
            left = max(0.0, budget - elapsed)
            progress.update(
                bar,
                completed=min(budget, elapsed),
                info=f"trials {state['trials']} · best {best} · {left:.0f}s left",
            )

        model = automl.fit(
            data,
            target,
            task=task,
            metric=metric,
            time_budget=budget,
            seed=seed,
            callbacks=[on_trial],
        )
        progress.update(bar, completed=budget)
    return model


@app.command("predict")
@_handle_errors
def predict_command(
    model_dir: Annotated[Path, typer.Argument(help="Directory written by `automl fit`.")],
    data_file: Annotated[Path, typer.Argument(help="Rows to predict (CSV, TSV, .gz, Parquet).")],
    output: Annotated[Path, typer.Option("--output", help="Predictions CSV to write.")],
) -> None:
    """Predict DATA_FILE with the model in MODEL_DIR and write a CSV."""
    import pandas as pd

    import aiaas.automl as automl

    model = automl.load(model_dir)
    data = read_table(data_file)
    if model.task == "regression":
        frame = pd.DataFrame({"prediction": model.predict(data)})
    else:
        proba = model.predict_proba(data)
        frame = pd.DataFrame(proba, columns=[str(c) for c in model.classes_])
    _write_csv_atomic(frame, output)
    if _interactive():
        typer.echo(f"wrote {len(frame)} prediction(s) to {output}")


if __name__ == "__main__":
    app()
