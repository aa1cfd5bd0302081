"""The ``driftline`` command."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from driftline import __version__
from driftline.exceptions import BrokerError, DriftlineError, ReferenceDataError
from driftline.monitoring import Evaluation, evaluate_files
from driftline.schemas.monitors import ThresholdSpec
from driftline.schemas.reports import DriftReport, PerformanceReport


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
    import logging
    import os

    from driftline.exceptions import ConfigError
    from driftline.logs import install_logging
    from driftline.settings import load_settings
    from driftline.stream.worker import run_worker

    try:
        settings = load_settings()
    except ConfigError as exc:  # logged as the worker would log it (JSON by default)
        log_format = os.environ.get("DRIFTLINE_LOG_FORMAT", "json")
        install_logging("console" if log_format == "console" else "json", "info")
        logging.getLogger("driftline.worker").critical("driftline worker cannot start: %s", exc)
        sys.exit(2)
    run_worker(settings)


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


@cli.command()
@click.option(
    "--bootstrap",
    envvar="DRIFTLINE_KAFKA_BOOTSTRAP",
    help="Kafka bootstrap servers [env: DRIFTLINE_KAFKA_BOOTSTRAP].",
)
@click.option(
    "--topic-prefix", envvar="DRIFTLINE_TOPIC_PREFIX", default="driftline", show_default=True
)
@click.option("--model-id", default="fraud-detector", show_default=True)
@click.option("--rate", type=click.FloatRange(min=0.1), default=50.0, show_default=True)
@click.option(
    "--drift-after",
    type=click.FloatRange(min=0),
    default=900.0,
    show_default=True,
    help="Seconds of reference-like traffic before it drifts.",
)
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after (s).")
@click.option(
    "--write-reference",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the traffic model's reference sample (Parquet) here and exit.",
)
def traffic(
    bootstrap: str | None,
    topic_prefix: str,
    model_id: str,
    rate: float,
    drift_after: float,
    duration: float | None,
    write_reference: Path | None,
) -> None:
    """Synthetic prediction events for trying driftline out (compose's demo producer).

    Events of a fraud-scoring model (amount, age, tenure_days, score, country, device)
    at --rate per second with event time now; after --drift-after seconds amount,
    score and country drift.
    """
    from driftline.embedded import traffic as synthetic
    from driftline.stream.topics import Topics

    if write_reference is not None:
        write_reference.parent.mkdir(parents=True, exist_ok=True)
        synthetic.write_reference(write_reference)
        click.echo(f"wrote {write_reference}", err=True)
        return
    if not bootstrap:
        raise click.UsageError("give --bootstrap or DRIFTLINE_KAFKA_BOOTSTRAP")
    topic = Topics(topic_prefix).predictions
    click.echo(f"producing to {topic} at {rate}/s; drift after {drift_after}s", err=True)
    from driftline.settings import load_settings

    settings = load_settings()  # how to connect: DRIFTLINE_KAFKA_SECURITY_PROTOCOL, ...
    try:
        sent = synthetic.stream_traffic(
            bootstrap, topic, model_id, rate, drift_after, duration, settings=settings
        )
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"sent {sent} events (acknowledged by the broker)", err=True)


@cli.command()
@click.option("--tenant", default=None, help="Only this tenant's models.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
def status(tenant: str | None, as_json: bool) -> None:
    """A table of models: state, last window, drift, last retraining request."""
    with _store() as store:
        rows = []
        for record in store.monitor_records(tenant):
            last = store.reports(record.model_id, 1)
            triggers = store.triggers(record.model_id, limit=1)
            report = last[0] if last else None
            trigger = triggers[0] if triggers else None
            rows.append(
                {
                    "model_id": record.model_id,
                    "tenant": record.tenant,
                    "state": "paused"
                    if record.paused
                    else ("active" if record.reference_version is not None else "no reference"),
                    "window_end": report["window_end"] if report else None,
                    "n": report["n"] if report else None,
                    "drifted": report["drifted"] if report else None,
                    "drifted_features": report["drifted_features"] if report else [],
                    "last_trigger": None
                    if trigger is None
                    else {
                        "trigger_id": trigger["trigger_id"],
                        "status": trigger["status"],
                        "severity": trigger["severity"],
                        "created_at": trigger["created_at"],
                    },
                }
            )
    if as_json:
        import orjson

        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    click.echo(
        f"{'MODEL':<28} {'TENANT':<14} {'STATE':<12} {'LAST WINDOW END':<26} {'EVENTS':>7}  "
        f"{'DRIFT':<24} LAST TRIGGER"
    )
    for row in rows:
        drift = (
            "-"
            if row["drifted"] is None
            else ("DRIFTED " + ",".join(row["drifted_features"][:3]) if row["drifted"] else "ok")
        )
        trigger = row["last_trigger"]
        last = (
            "-"
            if trigger is None
            else (f"{trigger['created_at'][:19]} {trigger['status']} {trigger['severity']}")
        )
        click.echo(
            f"{row['model_id']:<28} {row['tenant']:<14} {row['state']:<12} "
            f"{row['window_end'] or '-':<26} {row['n'] if row['n'] is not None else '-':>7}  "
            f"{drift[:24]:<24} {last}"
        )


@cli.group()
def monitors() -> None:
    """The monitors registry (the store), as the /v1/monitors API sees it."""


def _echo_json(value: Any) -> None:
    import orjson

    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@monitors.command("list")
@click.option("--tenant", default=None)
def monitors_list(tenant: str | None) -> None:
    """Every monitor: tenant, source (file or api), version, paused, reference."""
    with _store() as store:
        records = store.monitor_records(tenant)
    for r in records:
        state = "paused" if r.paused else "active"
        click.echo(
            f"{r.model_id:<30} {r.tenant:<16} {r.source:<4} v{r.version:<4} {state:<7} "
            f"reference {r.reference_version if r.reference_version is not None else '-'}"
        )


@monitors.command("get")
@click.argument("model_id")
def monitors_get(model_id: str) -> None:
    """One monitor as JSON (the API's body)."""
    with _store() as store:
        record = store.monitor_record(model_id)
    if record is None:
        raise click.ClickException(f"no monitor {model_id}")
    _echo_json(record.as_json())


@monitors.command("apply")
@click.option(
    "-f",
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="A YAML or JSON monitor spec (one model, as in the monitors file).",
)
def monitors_apply(path: Path) -> None:
    """Create a monitor, or store a new version of it (workers apply it within seconds).

    The spec is checked as ``POST /v1/monitors`` checks it, with the same messages.
    """
    from datetime import UTC, datetime

    import yaml

    from driftline.exceptions import InvalidMonitor
    from driftline.registry import stored_monitor_spec
    from driftline.settings import load_settings
    from driftline.store.repository import MonitorConflict

    try:
        body = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidMonitor(f"{path}: not valid YAML or JSON: {exc}") from None
    settings = load_settings()
    try:
        spec = stored_monitor_spec(body, tenant="default", topic_prefix=settings.topic_prefix)
    except InvalidMonitor as exc:
        raise InvalidMonitor(f"{path}: {exc}") from None
    try:
        with _store() as store:
            now = datetime.now(UTC)
            if store.monitor_record(spec.model_id) is None:
                record = store.create_monitor(spec, now)
            else:
                record = store.update_monitor(spec, now)
    except MonitorConflict as exc:
        raise click.ClickException(str(exc)) from None
    assert record is not None
    click.echo(f"{record.model_id}: version {record.version}", err=True)


def _set_paused(model_id: str, paused: bool) -> None:
    from datetime import UTC, datetime

    with _store() as store:
        record = store.set_paused(model_id, paused, datetime.now(UTC))
    if record is None:
        raise click.ClickException(f"no monitor {model_id}")
    click.echo(
        f"{model_id}: {'paused' if paused else 'active'} (version {record.version})", err=True
    )


@monitors.command("pause")
@click.argument("model_id")
def monitors_pause(model_id: str) -> None:
    """Stop evaluating a model (its events are skipped) until resumed."""
    _set_paused(model_id, True)


@monitors.command("resume")
@click.argument("model_id")
def monitors_resume(model_id: str) -> None:
    """Evaluate a paused model again (its windows start afresh)."""
    _set_paused(model_id, False)


@monitors.command("delete")
@click.argument("model_id")
def monitors_delete(model_id: str) -> None:
    """Delete a monitor created through the API or CLI (reports and triggers stay)."""
    from driftline.store.repository import MonitorConflict

    try:
        with _store() as store:
            deleted = store.delete_monitor(model_id)
    except MonitorConflict as exc:
        raise click.ClickException(str(exc)) from None
    if not deleted:
        raise click.ClickException(f"no monitor {model_id}")
    click.echo(f"deleted {model_id}", err=True)


@cli.group()
def reference() -> None:
    """Reference profiles of monitored models."""


@reference.command("build")
@click.option("--model", "model_id", required=True, help="A monitor's model_id.")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Parquet or CSV training data.",
)
@click.option("--activate/--no-activate", default=True, show_default=True)
def reference_build(model_id: str, data: Path, activate: bool) -> None:
    """Profile a data file for the monitor's features and store it (as the API does)."""
    from datetime import UTC, datetime

    from driftline.registry import build_reference, labels_of
    from driftline.schemas.monitors import FeatureSpec

    with _store() as store:
        record = store.monitor_record(model_id)
        if record is None:
            raise click.ClickException(f"no monitor {model_id}: create it first")
        features = [FeatureSpec.model_validate(f) for f in record.spec.get("features") or []]
        now = datetime.now(UTC)
        labels = labels_of(record)
        version = build_reference(store, model_id, features, data, data.name, now, labels)
        if activate:
            store.activate_reference(model_id, version, now)
        (built,) = [v for v in store.reference_versions(model_id) if v["version"] == version]
    _echo_json(built)


@cli.group()
def keys() -> None:
    """API keys: each belongs to one tenant and has one scope (read, write, admin)."""


@contextlib.contextmanager
def _store() -> Iterator[Any]:
    """The store of DRIFTLINE_DATABASE_URL, closed after the block."""
    from driftline.settings import load_settings
    from driftline.store import Store

    store = Store.open_existing(load_settings().database_url)
    try:
        yield store
    finally:
        store.close()


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant (team) the key acts for.")
@click.option(
    "--scope",
    type=click.Choice(["read", "write", "admin"]),
    default="read",
    show_default=True,
    help="read: GET; write: also replay deliveries and receive Alertmanager; admin: all.",
)
@click.option("--name", default="", help="What the key is for (shown in lists).")
def keys_create(tenant: str, scope: str, name: str) -> None:
    """Create a key and print it once (only a hash is stored)."""
    from datetime import UTC, datetime

    from driftline.auth import TENANT

    if not TENANT.match(tenant):
        raise click.BadParameter(
            "lowercase letters, digits, '.', '_' or '-'", param_hint="--tenant"
        )
    with _store() as store:
        key, key_id = store.create_api_key(tenant, scope, name, datetime.now(UTC))
    click.echo(key)
    click.echo(
        f"key {key_id} for tenant {tenant} ({scope}): store it now, it is not shown again", err=True
    )


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
def keys_list(tenant: str | None) -> None:
    """Keys (ids, tenants, scopes; never secrets)."""
    with _store() as store:
        rows = store.api_keys(tenant)
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        click.echo(
            f"{row['key_id']}  {row['tenant']:<20} {row['scope']:<6} {state:<10} {row['name']}"
        )


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key (workers stop accepting it within 10 seconds)."""
    from datetime import UTC, datetime

    with _store() as store:
        revoked = store.revoke_api_key(key_id, datetime.now(UTC))
    if not revoked:
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked {key_id}", err=True)


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
    from driftline.store.repository import check_existing_database, create_store_engine

    url = load_settings().database_url
    check_existing_database(url)
    engine = create_store_engine(url)
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
    help="Events: JSON lines (PredictionEvent, LabelEvent or EventBatch per line) or Parquet.",
)
@click.option("--flush", is_flag=True, help="At the end of the file, close the windows still open.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per line: windows, performance windows, triggers and dead letters.",
)
def replay(monitors_path: Path, events: Path, flush: bool, as_json: bool) -> None:
    """Run the worker's processing over a file of events: a backtest, no broker or database.

    Prints each closed window (PSI, JS, thresholds, verdicts) and each retraining
    event the policy would fire, in order; then a summary, with the dead letters by
    reason and the first message of each (on stderr). Nothing is sent, so the targets'
    secrets are not needed. Use it to tune thresholds and the policy before turning
    them on.
    """
    from collections import Counter

    from driftline.monitoring import build_monitor
    from driftline.replay import Replay, as_json_line, read_events
    from driftline.schemas.monitors import load_monitors
    from driftline.stream.deadletter import DeadLetter

    config = load_monitors(monitors_path, resolve_secrets=False)
    monitors = {}
    for spec in config.models:
        if spec.reference.path is None:
            raise ReferenceDataError(
                f"model {spec.model_id}: replay needs reference.path (a file), not a stored profile"
            )
        monitors[spec.model_id] = build_monitor(spec)
    run = Replay(monitors)
    counts: Counter[str] = Counter()
    for item in run.run(read_events(events), flush=flush):
        if as_json:
            click.echo(as_json_line(item))
        elif not isinstance(item, DeadLetter):
            click.echo(format_output(item))
        if isinstance(item, DriftReport | PerformanceReport):
            kind = "windows" if isinstance(item, DriftReport) else "performance"
            counts[kind] += 1
            counts[f"{kind} flagged"] += item.drifted
        elif not isinstance(item, DeadLetter):
            counts["triggers"] += 1
    labelled = (
        f"{counts['performance']} performance windows, {counts['performance flagged']} degraded, "
        if counts["performance"]
        else ""
    )
    dead = ", ".join(f"{k}: {v}" for k, v in sorted(run.dead_lettered.items())) or "none"
    click.echo(
        f"{counts['windows']} windows, {counts['windows flagged']} drifted, {labelled}"
        f"{counts['triggers']} retraining events; dead-lettered: {dead}; "
        f"skipped (unmonitored models): {run.skipped}",
        err=True,
    )
    for reason, letter in sorted(run.first_dead.items()):
        click.echo(f"  {reason}: {letter.message} (line {letter.source.offset}, first)", err=True)


def format_output(item: DriftReport | PerformanceReport | Any) -> str:
    """One line of ``driftline replay``'s text output: a window, or a retraining event."""
    if isinstance(item, DriftReport):
        return format_window(item)
    if isinstance(item, PerformanceReport):
        return format_performance(item)
    data = item.data
    why = (
        "; ".join(data.performance.reasons)
        if data.performance is not None
        else ", ".join(f.name for f in data.drifted_features)
    )
    return (
        f"  -> retraining event {data.trigger_id} for {data.model_id} "
        f"({data.source}, {data.status}, {data.severity}): {why}"
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


def format_performance(report: PerformanceReport) -> str:
    metrics = " ".join(f"{k}={v:.4f}" for k, v in report.metrics.items() if v is not None)
    verdict = (
        ("DEGRADED " + "; ".join(report.reasons))
        if report.drifted
        else ("ok" if report.sufficient else "too few labels")
    )
    coverage = "-" if report.coverage is None else f"{report.coverage:.0%}"
    return (
        f"{report.model_id} {report.window_start:%Y-%m-%d %H:%M:%S}"
        f" - {report.window_end:%H:%M:%S}  labelled={report.labelled:<6} "
        f"coverage={coverage} {metrics}  {verdict}"
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
