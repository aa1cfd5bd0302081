"""The ``driftline`` command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from driftline import __version__
from driftline.exceptions import DriftlineError, ReferenceDataError
from driftline.monitoring import Evaluation, evaluate_files
from driftline.schemas.monitors import ThresholdSpec
from driftline.schemas.reports import DriftReport


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="driftline")
def cli() -> None:
    """driftline: streaming drift monitoring and retraining triggers for ML models on Kafka."""


@cli.command()
def worker() -> None:
    """Run the service: consume <prefix>.predictions, report drift, deliver triggers.

    Configured by DRIFTLINE_* environment variables (see the README); with no
    DRIFTLINE_KAFKA_BOOTSTRAP it starts the embedded in-memory broker.
    """
    from driftline.settings import load_settings
    from driftline.stream.worker import run_worker

    run_worker(load_settings())


@cli.command()
@click.option(
    "--reference",
    required=True,
    type=click.Path(path_type=Path),
    help="Reference (training) data: a Parquet or CSV file.",
)
@click.option(
    "--current",
    required=True,
    type=click.Path(path_type=Path),
    help="Current data to compare: a Parquet or CSV file.",
)
@click.option(
    "--features",
    multiple=True,
    help="Features to compare (repeat, or comma-separate); default: every column.",
)
@click.option(
    "--metric",
    type=click.Choice(["psi", "js"]),
    default="psi",
    show_default=True,
    help="The metric thresholds apply to.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="A fixed threshold for every feature (default: calibrated thresholds).",
)
@click.option(
    "--false-alarm-rate",
    type=click.FloatRange(min=0, max=0.5, min_open=True, max_open=True),
    default=0.01,
    show_default=True,
    help="Calibrated: chance that data without drift is called drifted.",
)
@click.option(
    "--correction",
    type=click.Choice(["bonferroni", "bh"]),
    default="bonferroni",
    show_default=True,
    help="Calibrated: multiple-testing control across features.",
)
@click.option(
    "--min-rows",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Fewer current rows than this are reported but never drifted.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(
    reference: Path,
    current: Path,
    features: tuple[str, ...],
    metric: str,
    threshold: float | None,
    false_alarm_rate: float,
    correction: str,
    min_rows: int,
    as_json: bool,
) -> None:
    """Compare a current data file with a reference file, feature by feature.

    Prints PSI, Jensen-Shannon divergence, the threshold and the verdict of each
    feature, and an overall verdict, exactly as the worker judges one window.
    Thresholds are calibrated from the reference for the number of current rows
    unless --threshold is given. Exits 0 whether or not there is drift.
    """
    names = [n.strip() for item in features for n in item.split(",") if n.strip()] or None
    thresholds = ThresholdSpec.model_validate(
        {
            "mode": "calibrated" if threshold is None else "fixed",
            "metric": metric,
            "value": threshold or 0.2,
            "false_alarm_rate": false_alarm_rate,
            "correction": correction,
        }
    )
    result = evaluate_files(reference, current, names, thresholds, min_rows)
    click.echo(result.model_dump_json(indent=2) if as_json else format_evaluation(result))


def format_evaluation(result: Evaluation) -> str:
    width = max(len("feature"), *(len(f.name) for f in result.features))
    lines = [
        f"reference: {result.reference} ({result.n_reference} rows)",
        f"current:   {result.current} ({result.n_current} rows)",
        "",
        f"{'feature':<{width}}  {'kind':<11}  {'psi':>8}  {'js':>8}  {'threshold':>9}  drifted",
    ]
    for f in result.features:
        lines.append(
            f"{f.name:<{width}}  {f.kind:<11}  {f.psi:>8.4f}  {f.js:>8.4f}  "
            f"{f.threshold:>9.4g}  {'YES' if f.drifted else 'no'}"
        )
    lines.append("")
    if not result.sufficient:
        lines.append(f"too few current rows ({result.n_current}) to call drift; see --min-rows")
    elif result.drifted:
        lines.append(
            f"DRIFT: {len(result.drifted_features)} of {len(result.features)} features "
            f"drifted ({', '.join(result.drifted_features)})"
        )
    else:
        lines.append(f"no drift: 0 of {len(result.features)} features drifted")
    return "\n".join(lines)


@cli.group()
def db() -> None:
    """The store's schema: migrations on DRIFTLINE_DATABASE_URL."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations (the worker also does this at start)."""
    from driftline.settings import load_settings
    from driftline.store.migrate import current_revision, head_revision, upgrade
    from driftline.store.repository import create_store_engine

    engine = create_store_engine(load_settings().database_url)
    before = current_revision(engine)
    upgrade(engine)
    click.echo(f"schema at {head_revision()} (was {before or 'empty'})")
    engine.dispose()


@db.command("current")
def db_current() -> None:
    """Print the database's schema revision and the newest one this version has."""
    from driftline.settings import load_settings
    from driftline.store.migrate import current_revision, head_revision
    from driftline.store.repository import create_store_engine

    engine = create_store_engine(load_settings().database_url)
    click.echo(f"database: {current_revision(engine) or 'empty'}; newest: {head_revision()}")
    engine.dispose()


@cli.command()
@click.option(
    "--monitors",
    "monitors_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The monitors YAML file, as the worker reads it.",
)
@click.option(
    "--events",
    required=True,
    type=click.Path(path_type=Path),
    help="Events: JSON lines (PredictionEvent or EventBatch per line) or Parquet.",
)
@click.option("--flush", is_flag=True, help="At the end of the file, close the windows still open.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line: windows and triggers."
)
def replay(monitors_path: Path, events: Path, flush: bool, as_json: bool) -> None:
    """Run the worker's processing over a file of events: a backtest, no broker or database.

    Prints each closed window (PSI, JS, thresholds, verdicts) and each retraining
    event the policy would fire, in order. Use it to tune thresholds and the policy
    before turning them on.
    """
    from driftline.monitoring import build_monitor
    from driftline.replay import Replay, as_json_line, read_events
    from driftline.schemas.monitors import load_monitors

    config = load_monitors(monitors_path)
    monitors = {}
    for spec in config.models:
        if spec.reference.path is None:
            raise ReferenceDataError(
                f"model {spec.model_id}: replay needs reference.path (a file), not a stored profile"
            )
        monitors[spec.model_id] = build_monitor(spec)
    run = Replay(monitors)
    windows = drifted = triggers = 0
    for item in run.run(read_events(events), flush=flush):
        if as_json:
            click.echo(as_json_line(item))
        elif isinstance(item, DriftReport):
            click.echo(format_window(item))
        else:
            click.echo(
                f"  -> retraining event {item.data.trigger_id} for {item.data.model_id}: "
                f"{', '.join(f.name for f in item.data.drifted_features)}"
            )
        if isinstance(item, DriftReport):
            windows += 1
            drifted += item.drifted
        else:
            triggers += 1
    dead = ", ".join(f"{k}: {v}" for k, v in sorted(run.dead_lettered.items())) or "none"
    click.echo(
        f"{windows} windows, {drifted} drifted, {triggers} retraining events; "
        f"dead-lettered: {dead}; skipped (unmonitored models): {run.skipped}",
        err=True,
    )


def format_window(report: DriftReport) -> str:
    drifted = [f"{f.name} {f.score:.3f}>{f.threshold:.3f}" for f in report.features if f.drifted]
    verdict = (
        ("DRIFT " + ", ".join(drifted))
        if report.drifted
        else ("ok" if report.sufficient else "too few events")
    )
    return (
        f"{report.model_id} {report.window_start:%Y-%m-%d %H:%M:%S}"
        f" - {report.window_end:%H:%M:%S}  n={report.n:<7} {verdict}"
    )


@cli.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=10),
    default=150.0,
    show_default=True,
    help="Give up (exit 1) if no retraining event arrived by then.",
)
def demo(timeout: float) -> None:
    """Run everything locally: broker, worker, webhook receiver and traffic; show drift live."""
    from driftline.embedded.demo import run_demo

    sys.exit(run_demo(timeout))


def main() -> None:
    try:
        cli(standalone_mode=True)
    except DriftlineError as exc:
        click.echo(f"driftline: error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
