"""The stage commands: one per batch stage (generate, check, features, train, score, export) and the API (serve)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from churnops.cli.common import DatasetOption, RunDateOption, app, console, day, setup
from churnops.config import Settings
from churnops.dataset import DatasetContract

if TYPE_CHECKING:
    from churnops.jobs.source_check import SourceReport

# Datasets whose source files come from a preparer rather than the synthetic generator.
REAL_DATA_PREPARERS = {
    "cdnow": "churnops.jobs.cdnow:prepare_cdnow",
    "crm_example": "churnops.jobs.crm_example:prepare_crm_example",
}


def _trial_progress(progress: Progress) -> tuple[object, object]:
    task_id = progress.add_task("Optuna trials", total=None)

    def on_trial(done: int, total: int, value: float | None) -> None:
        label = f"Optuna trials (last CV ROC AUC {value:.4f})" if value is not None else "Optuna trials (pruned)"
        progress.update(task_id, completed=done, total=total, description=label)

    return task_id, on_trial


@app.command()
def generate(
    dataset: DatasetOption = None,
    customers: Annotated[int, typer.Option(help="Number of synthetic customers.", min=10)] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 7,
    shift_at: Annotated[
        dt.datetime | None,
        typer.Option(
            "--shift-at",
            formats=["%Y-%m-%d"],
            help="Start the regime change (a price rise for one plan in one region) on this day; the data before "
            "it is unchanged. Default: the dataset's scenario (`jobs/generate.py` SCENARIOS: regime_shift has one).",
        ),
    ] = None,
) -> None:
    """Write a dataset's source files: the seeded synthetic generator, or the real CDNOW log."""
    settings, contract = setup(dataset)
    if contract.name in REAL_DATA_PREPARERS:
        import importlib

        module, function = REAL_DATA_PREPARERS[contract.name].split(":")
        path = getattr(importlib.import_module(module), function)(settings)
        console.print(f"{contract.name} source written to {path}")
        return
    from churnops.jobs.generate import SCENARIOS, Scenario, write_generated
    from churnops.jobs.generate import generate as generate_data

    if contract.events is None or contract.entities is None:
        raise typer.BadParameter(f"dataset {contract.name!r} has no generator; its files come from elsewhere")
    scenario = SCENARIOS.get(contract.name, Scenario())
    shift = day(shift_at) or scenario.shift_at
    with console.status(f"generating {customers:,} customers"):
        try:
            data = generate_data(customers, seed=seed, start=scenario.start, end=scenario.end, shift_at=shift)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--shift-at") from error
        write_generated(data, contract.resolve(contract.events.path), contract.resolve(contract.entities.path))
    regime = f" (regime change on {shift})" if shift else ""
    console.print(
        f"{len(data.customers):,} customers and {len(data.events):,} events{regime} written to "
        f"{contract.resolve(contract.events.path).parent}"
    )


def print_source_report(report: SourceReport) -> None:
    """The source check's findings as a table: what is wrong where, and the contract line or cell to change."""
    from rich.table import Table

    for source in report.sources:
        console.print(f"{source.source}: {source.path} ({source.rows:,} rows read, {source.columns} columns)")
    if report.findings:
        table = Table("", "source", "column", "finding", "fix", show_lines=True)
        for finding in report.findings:
            level = "[red]error[/]" if finding.level == "error" else "note"
            table.add_row(level, finding.source, finding.column or "", finding.problem, finding.fix)
        console.print(table)
    if report.errors:
        console.print(
            f"[red]{len(report.errors)} error(s)[/] in dataset {report.dataset!r}: fix them in the contract or the "
            "file, then run `churnops check` again"
        )
    else:
        console.print(f"dataset {report.dataset!r}: the sources fit the contract ({len(report.notes)} note(s))")


@app.command()
def check(dataset: DatasetOption = None) -> None:
    """Check a dataset's source files against its contract in seconds, without Spark: missing columns, values that
    do not parse as their declared type, label values outside the declared classes, duplicate keys, empty files.
    Exits 1 when there is an error; `features` runs the same check first (and `train`, for entity-level data)."""
    _, contract = setup(dataset)
    from churnops.jobs.source_check import check_sources

    report = check_sources(contract)
    print_source_report(report)
    if report.errors:
        raise typer.Exit(1)


@app.command()
def features(dataset: DatasetOption = None, run_date: RunDateOption = None) -> None:
    """Check the sources, then compute a run date's point-in-time features and labels with Spark and publish a
    hashed snapshot (reused without starting Spark when its inputs are unchanged)."""
    settings, contract = setup(dataset)
    from churnops.jobs.features import run_feature_job
    from churnops.jobs.source_check import SourceCheckError

    try:
        with console.status("checking the sources, then computing features"):
            run = run_feature_job(contract, settings, day(run_date))
    except SourceCheckError as error:
        print_source_report(error.report)
        raise typer.Exit(1) from error
    verb = "reused" if run.reused else "built"
    console.print(
        f"snapshot {run.metadata.snapshot_id} {verb} for run date {run.metadata.run_date}: "
        f"{sum(run.metadata.rows_per_cutoff.values()):,} rows over {len(run.metadata.rows_per_cutoff)} cutoffs "
        f"at {run.snapshot_dir}"
    )


@app.command()
def train(
    dataset: DatasetOption = None,
    run_date: RunDateOption = None,
    trials: Annotated[int | None, typer.Option(help="Optuna trials (default from settings).", min=1)] = None,
) -> None:
    """Tune LightGBM with Optuna (trials tracked in MLflow), evaluate out of time (a holdout for entity data),
    register, gate the champion."""
    settings, contract = setup(dataset)
    from churnops.jobs.source_check import SourceCheckError
    from churnops.jobs.training import train as train_model
    from churnops.metrics import evaluation_label
    from churnops.snapshots import snapshot_dir_for

    snapshot = snapshot_dir_for(settings, contract.name, day(run_date))

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        _, on_trial = _trial_progress(progress)
        try:
            result = train_model(settings, contract, snapshot_dir=snapshot, n_trials=trials, on_trial=on_trial)
        except SourceCheckError as error:
            progress.stop()
            print_source_report(error.report)
            raise typer.Exit(1) from error
    if result.value is not None:
        console.print(
            f"value model {result.value.model_name} v{result.value.model_version or '-'}: {result.value.reason}"
        )
    if result.skipped:
        console.print(f"training skipped: {result.skip_reason}")
        return
    console.print(
        f"{result.model_name} v{result.model_version}: {evaluation_label(result.validation)} ROC AUC "
        f"{result.evaluation_metrics['roc_auc']:.4f}; promoted={result.decision.promoted} "
        f"({result.decision.reason})"
    )
    if result.evaluation_path is not None:
        console.print(f"evaluation report: {result.evaluation_path}")


@app.command()
def score(
    dataset: DatasetOption = None,
    run_date: RunDateOption = None,
    cutoff: Annotated[
        dt.datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="Backtest: score this past cutoff of the run date's snapshot instead of its scoring cutoff "
            "(kept as a `backfill` list).",
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="Score this file instead of the snapshot: an entity table or an event log in the shape of the "
            "dataset's source, no label needed (CSV or Parquet). The dataset's snapshots, pointers and scheduled "
            "lists are left alone.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="With --input: where the list goes (.csv or .parquet; default <input stem>.scores.csv)."),
    ] = None,
    entities: Annotated[
        Path | None,
        typer.Option(help="With --input of an event log: the customers' attributes (default: the dataset's table)."),
    ] = None,
) -> None:
    """Score every customer at the run date's cutoff with the champion (or at a past cutoff, as a backtest), or
    score a new file with it (--input)."""
    settings, contract = setup(dataset)
    if input_file is not None:
        if run_date is not None or cutoff is not None:
            raise typer.BadParameter("--input scores the file at its own date: leave out --run-date and --cutoff")
        _score_input(settings, contract, input_file, output, entities)
        return
    if output is not None or entities is not None:
        raise typer.BadParameter("--output and --entities go with --input FILE")
    from churnops.jobs.score import UnknownCutoffError
    from churnops.jobs.score import score as score_customers

    try:
        run = score_customers(settings, contract, run_date=day(run_date), cutoff=day(cutoff))
    except UnknownCutoffError as error:
        raise typer.BadParameter(str(error), param_hint="--cutoff") from error
    console.print(f"{run.rows:,} customers scored at {run.cutoff} by v{run.model_version} -> {run.path}")


def _score_input(
    settings: Settings, contract: DatasetContract, input_file: Path, output: Path | None, entities: Path | None
) -> None:
    from churnops.jobs.score_input import InputFileError, score_input

    try:
        with console.status(f"scoring {input_file}"):
            run = score_input(settings, contract, input_file, output, entities_path=entities)
    except InputFileError as error:
        raise typer.BadParameter(str(error), param_hint="--input") from error
    left_out = sum(run.rows_left_out.values())
    note = f" ({left_out:,} rows left out by the event rules: {run.rows_left_out})" if left_out else ""
    stored = f"; adhoc list of {run.cutoff} in PostgreSQL" if run.rows_in_database is not None else ""
    console.print(
        f"{run.rows_scored:,} customers of {run.input_path.name} scored at {run.cutoff} by v{run.model_version} "
        f"-> {run.output_path}{stored}{note}"
    )


@app.command()
def export(
    dataset: DatasetOption = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Customers to export (default from settings).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default .churnops/exports).")] = None,
) -> None:
    """Export the top-K customers of the latest scoring list for a campaign (CSV and Parquet)."""
    import contextlib

    settings, contract = setup(dataset)
    if settings.database_url is None:
        raise typer.BadParameter(
            "the campaign export reads the scoring list from PostgreSQL: set CHURNOPS_DATABASE_URL"
        )
    from churnops import db
    from churnops.jobs.export import export_top_k

    with contextlib.closing(db.connect(settings)) as conn:
        result = export_top_k(
            conn,
            dataset=contract.name,
            top_k=top_k or settings.scoring.export_top_k,
            out_dir=out or settings.exports_dir,
        )
    for fmt, path in result.paths.items():
        console.print(f"{result.rows:,} customers ({fmt}) -> {path}")


@app.command()
def serve(
    dataset: DatasetOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.", min=1)] = 1,
) -> None:
    """Serve the champion over HTTP (uvicorn)."""
    import os
    import shutil
    import tempfile

    settings, _ = setup(dataset)  # loads the contract: a broken one fails here, not in every worker
    # The dataset as given (a contract path stays a path: the API loads the same contract).
    env = {**os.environ, "CHURNOPS_DATASET": dataset or settings.dataset, "OMP_NUM_THREADS": "1"}
    from churnops.serving.exposure import OpenExposureError, refuse_open_exposure

    # The app checks the address it is served on (no key beyond loopback): tell it the one given here, and say no
    # before uvicorn starts rather than in every worker's traceback.
    bind = host or settings.serving.host
    env["CHURNOPS_SERVING__HOST"] = bind
    try:
        refuse_open_exposure(settings.serving.model_copy(update={"host": bind}))
    except OpenExposureError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    if workers > 1:
        # Each worker writes its metrics here and /metrics adds them up; it must be empty at start.
        metrics_dir = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="churnops-metrics-"))
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    command = [
        sys.executable,
        "-m",
        "churnops.serving.workers",
        "churnops.serving.app:app",
        "--host",
        bind,
        "--port",
        str(port or settings.serving.port),
        "--workers",
        str(workers),
    ]
    # The server replaces this process, so a supervisor's SIGTERM (tini in the container, a test's killpg) reaches it.
    sys.stdout.flush()
    os.execve(sys.executable, command, env)
