"""The store on SQLite and PostgreSQL (each test gets a fresh database)."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftline.detectors.profile import ReferenceProfile
from driftline.schemas.monitors import WebhookTarget
from driftline.store import Store
from driftline.stream.processing import MonitorState
from tests.unit.helpers import SECRET, make_monitor, make_rows, mark_delivered

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store.connect(database_url)
    yield store
    store.close()


def drifting_results() -> tuple[list, list]:  # type: ignore[type-arg]
    rng = np.random.default_rng(4)
    state = MonitorState(make_monitor(panes=1, min_events=50))
    rows = make_rows(rng, 3000, 0, 25) + make_rows(rng, 3000, 120, 25, shift=2.0)
    result = state.process([*rows, *make_rows(rng, 1, 400, 1)], now=NOW)
    return result.reports, result.triggers


def test_profiles_are_versioned_by_content(store: Store) -> None:
    profile = make_monitor(seed=1).profile
    other = make_monitor(seed=2).profile
    assert store.save_profile("m", profile, "a.parquet", NOW) == 1
    assert store.save_profile("m", profile, "a.parquet", NOW) == 1
    assert store.save_profile("m", other, "b.parquet", NOW) == 2
    assert store.save_profile("other-model", other, "b.parquet", NOW) == 1
    version, loaded = store.load_profile("m", "latest")  # type: ignore[misc]
    assert version == 2
    assert isinstance(loaded, ReferenceProfile)
    assert loaded.fingerprint() == other.fingerprint()
    assert store.load_profile("m", 1)[1].fingerprint() == profile.fingerprint()  # type: ignore[index]
    assert store.load_profile("m", 9) is None


def test_results_triggers_and_outbox_in_one_write(store: Store) -> None:
    reports, triggers = drifting_results()
    assert len(triggers) == 1
    target = WebhookTarget(url="http://127.0.0.1:9/hook", secret=SECRET)  # type: ignore[arg-type]
    store.record_results(reports, triggers, {"m": [target]}, NOW)
    # Reprocessing after a restart: same windows replace, the trigger is not duplicated.
    store.record_results(reports, triggers, {"m": [target]}, NOW)
    stored = store.reports("m", limit=100)
    assert [r["window_end"] for r in stored] == sorted(
        (r.model_dump(mode="json")["window_end"] for r in reports), reverse=True
    )
    assert store.reports("m", limit=1)[0]["n"] == reports[-1].n
    assert [t["trigger_id"] for t in store.triggers()] == [triggers[0].data.trigger_id]
    (delivery,) = store.deliveries()
    assert delivery["status"] == "pending"
    assert delivery["target_url"] == "http://127.0.0.1:9/hook"


def test_due_deliveries_and_attempts(store: Store) -> None:
    reports, triggers = drifting_results()
    target = WebhookTarget(url="http://127.0.0.1:9/hook", secret=SECRET)  # type: ignore[arg-type]
    store.record_results(reports, triggers, {"m": [target]}, NOW)
    (due,) = store.due_deliveries(NOW)
    assert due.payload == triggers[0].model_dump_json()
    later = NOW + timedelta(seconds=30)
    store.record_attempt(
        due.id,
        status="pending",
        http_status=503,
        error="HTTP 503",
        latency_s=0.01,
        next_attempt_at=later,
        now=NOW,
    )
    assert store.due_deliveries(NOW) == []
    (again,) = store.due_deliveries(later)
    assert again.attempts == 1
    mark_delivered(store, due.id, later)
    assert store.due_deliveries(later + timedelta(days=1)) == []
    (row,) = store.deliveries(triggers[0].data.trigger_id)
    assert row["status"] == "delivered"
    assert row["attempts"] == 2
    assert row["last_status"] == 204
    assert row["delivered_at"] == later.isoformat()


def test_ping(store: Store) -> None:
    assert store.ping()


def test_segment_reports_are_kept_apart(store: Store) -> None:
    reports, _ = drifting_results()
    eu = [r.model_copy(update={"segment": "eu", "n": r.n // 2}) for r in reports]
    store.record_results([*reports, *eu], [], {}, NOW)
    store.record_results(eu, [], {}, NOW)  # reprocessed: replaces, never duplicates
    overall = store.reports("m", limit=100)
    segment = store.reports("m", limit=100, segment="eu")
    assert len(overall) == len(segment) == len(reports)
    assert {r["segment"] for r in overall} == {None}
    assert [r["n"] for r in segment] == [r["n"] for r in overall_halves(overall)]


def overall_halves(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{**r, "n": int(r["n"]) // 2} for r in rows]  # type: ignore[call-overload]


def test_prune_keeps_recent_rows_and_pending_deliveries(store: Store) -> None:
    reports, triggers = drifting_results()
    target = WebhookTarget(url="http://127.0.0.1:9/hook", secret=SECRET)  # type: ignore[arg-type]
    old = NOW - timedelta(days=40)
    store.record_results(reports[:3], triggers, {"m": [target]}, old)  # old, pending delivery
    store.record_results(reports[3:], [], {}, NOW)
    assert store.prune(NOW - timedelta(days=30), NOW - timedelta(days=30)) == (3, 0)
    assert len(store.reports("m", limit=100)) == len(reports) - 3
    (delivery,) = store.deliveries()  # pending: never pruned, however old
    mark_delivered(store, delivery["id"], NOW)
    assert store.prune(NOW - timedelta(days=30), NOW - timedelta(days=30)) == (0, 1)
    assert store.deliveries() == []
    assert len(store.triggers()) == 1  # the audit record stays


def test_a_missing_driver_is_a_config_error_with_a_hint() -> None:
    from driftline.exceptions import ConfigError
    from driftline.store.repository import create_store_engine

    with pytest.raises(ConfigError, match="driver that is not installed"):
        create_store_engine("mysql://root@127.0.0.1/test")  # mysqlclient is not a dependency
    with pytest.raises(ConfigError, match="not a database URL"):
        create_store_engine("not a url at all")
