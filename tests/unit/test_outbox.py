"""The outbox with more than one relay (several workers), on SQLite and PostgreSQL: each
attempt of a delivery has one sender; a dead relay's lease is taken over; a delivery
keeps the target it was recorded with; deleting its monitor cancels it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy.exc import SQLAlchemyError

from driftline.schemas.monitors import MonitorSpec, WebhookTarget
from driftline.schemas.retraining import RetrainingEvent
from driftline.store import Store
from driftline.triggers.relay import OutboxRelay, lease_s
from driftline.triggers.webhook import WebhookSender
from tests.integration.receivers import FlakyWebhook, serving
from tests.unit.helpers import SECRET, mark_delivered
from tests.unit.test_store import NOW, drifting_results


@pytest.fixture
def stores(database_url: str) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database: two workers' connections."""
    first = Store.connect(database_url)
    second = Store.connect(database_url)
    yield first, second
    first.close()
    second.close()


def triggers(count: int) -> tuple[list[Any], list[RetrainingEvent]]:
    reports, (trigger,) = drifting_results()
    copies = [
        trigger.model_copy(
            update={"data": trigger.data.model_copy(update={"trigger_id": f"trg_lease{i:02d}"})}
        )
        for i in range(count)
    ]
    return reports, copies


async def relay_loop(
    relay: OutboxRelay, until: float, errors: list[str], done: Callable[[], bool]
) -> None:
    """A worker's relay: passes until ``done()`` or ``until`` (a pass that fails is
    retried, as the worker does; SQLite refuses a second writer now and then)."""
    while time.monotonic() < until and not done():
        try:
            await relay.run_once()
        except SQLAlchemyError as exc:
            errors.append(type(exc).__name__)
        await asyncio.sleep(0.01)


def test_two_relays_attempt_each_delivery_once_at_a_time(stores: tuple[Store, Store]) -> None:
    """Two workers' relays poll the same outbox as fast as they can, against a receiver
    that fails for 2 s and holds each request 0.3 s: without a claim both would send
    each delivery; with leases each is accepted once and never attempted twice at once."""
    first, second = stores
    receiver = FlakyWebhook(SECRET, failing_s=2.0, delay_s=0.3)
    with serving(receiver) as url:
        target = WebhookTarget(url=url, secret=SECRET, timeout_s=5)  # type: ignore[arg-type]
        reports, fired = triggers(6)
        first.record_results(reports, fired, {"m": [target]}, NOW)

        async def both() -> list[str]:
            errors: list[str] = []
            async with aiohttp.ClientSession() as http:
                relays = [
                    OutboxRelay(store, {"webhook": WebhookSender(http)}, {"m": [target]})
                    for store in (first, second)
                ]
                until = time.monotonic() + 30.0

                def done() -> bool:
                    return len(receiver.accepted) == len(fired)

                await asyncio.gather(*(relay_loop(r, until, errors, done) for r in relays))
                await asyncio.sleep(1.0)  # a second copy would be in flight by now
            return errors

        errors = asyncio.run(both())
    ids = {t.data.trigger_id for t in fired}
    assert receiver.flight.overlapping == {}
    assert dict(receiver.accepted) == dict.fromkeys(ids, 1)
    assert receiver.unverified == 0
    rows = first.deliveries()
    assert {r["status"] for r in rows} == {"delivered"}
    for row in rows:  # every request is an attempt in the log, and none is missing
        assert len(row["attempt_log"]) == receiver.flight.requests[row["trigger_id"]]
    assert len(errors) <= 5, errors


def test_the_lease_of_a_dead_relay_expires_and_is_taken_over(store: Store) -> None:
    reports, fired = triggers(1)
    target = WebhookTarget(url="http://127.0.0.1:9/x", secret=SECRET, timeout_s=2)  # type: ignore[arg-type]
    store.record_results(reports, fired, {"m": [target]}, NOW)
    (claimed,) = store.claim_due(NOW, "crashed-relay", lease_s)
    held = lease_s(claimed)
    assert held == 2 + 5 + 30  # the attempt's bound (timeout, slack) and the margin
    assert store.claim_due(NOW + timedelta(seconds=held - 1), "another", lease_s) == []
    (taken,) = store.claim_due(NOW + timedelta(seconds=held + 1), "another", lease_s)
    assert taken.id == claimed.id
    later = NOW + timedelta(seconds=held + 2)
    moved = mark_delivered(store, taken.id, later, owner="another")
    assert moved
    # The crashed relay comes back with its old attempt: logged, but it changes nothing.
    stale = store.record_attempt(
        claimed.id,
        status="dead",
        http_status=None,
        error="boom",
        latency_s=1.0,
        next_attempt_at=later,
        now=later,
        owner="crashed-relay",
    )
    assert not stale
    (row,) = store.deliveries()
    assert (row["status"], len(row["attempt_log"])) == ("delivered", 2)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store.connect(database_url)
    yield store
    store.close()


def api_monitor(url: str) -> MonitorSpec:
    return MonitorSpec.model_validate(
        {
            "model_id": "m",
            "tenant": "team-a",
            "reference": {"stored": "latest"},
            "window": {"duration": "1m"},
            "features": [{"name": "x", "kind": "numeric"}],
            "targets": [{"url": url, "secret_env": "OUTBOX_TEST_SECRET", "timeout_s": 2}],
        }
    )


def test_a_delivery_keeps_its_target_when_its_monitor_is_paused_or_edited(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay sends a delivery to the target it was recorded with: a paused monitor
    (not running: no configured targets at all) or one edited to another URL changes
    nothing of a delivery already recorded."""
    monkeypatch.setenv("OUTBOX_TEST_SECRET", SECRET)
    receiver = FlakyWebhook(SECRET, failing_s=0.0, delay_s=0.0)
    with serving(receiver) as url:
        spec = api_monitor(url)
        store.create_monitor(spec, NOW)
        reports, fired = triggers(1)
        store.record_results(reports, fired, {"m": spec.targets}, NOW, tenants={"m": "team-a"})
        store.set_paused("m", True, NOW)
        edited = spec.model_copy(update={"targets": [spec.targets[0].model_copy()]})
        store.update_monitor(edited, NOW)

        async def deliver() -> int:
            async with aiohttp.ClientSession() as http:
                relay = OutboxRelay(store, {"webhook": WebhookSender(http)}, {})
                return await relay.run_once()

        assert asyncio.run(deliver()) == 1
    assert dict(receiver.accepted) == {fired[0].data.trigger_id: 1}
    (row,) = store.deliveries(tenant="team-a")
    assert (row["status"], row["tenant"]) == ("delivered", "team-a")


def test_deleting_a_monitor_cancels_its_pending_deliveries(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_TEST_SECRET", SECRET)
    spec = api_monitor("http://127.0.0.1:9/x")
    store.create_monitor(spec, NOW)
    reports, fired = triggers(2)
    store.record_results(reports, fired, {"m": spec.targets}, NOW, tenants={"m": "team-a"})
    first = store.deliveries()[-1]
    mark_delivered(store, first["id"], NOW)
    assert store.delete_monitor("m", NOW)
    rows = {r["trigger_id"]: r for r in store.deliveries(tenant="team-a", models=[])}
    assert rows[first["trigger_id"]]["status"] == "delivered"  # what was done stays
    (cancelled,) = [r for r in rows.values() if r["status"] == "cancelled"]
    assert cancelled["reason"] == f"its monitor was deleted at {NOW.isoformat()}"
    assert store.claim_due(NOW + timedelta(days=1), "relay", lease_s) == []
    assert store.deliveries(tenant="team-b", models=[]) == []  # only its tenant sees it


def test_a_delivery_recorded_before_deliveries_kept_their_target_gets_a_long_lease(
    store: Store,
) -> None:
    """Its target (and so its timeout) is known only when it is sent: the lease, and the
    bound of its attempt, assume the longest a target has."""
    from sqlalchemy import text

    from driftline.triggers.relay import attempt_limit_s, bounds_of

    reports, fired = triggers(1)
    target = WebhookTarget(url="http://127.0.0.1:9/x", secret=SECRET, timeout_s=50)  # type: ignore[arg-type]
    store.record_results(reports, fired, {"m": [target]}, NOW)
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE deliveries SET target = NULL, target_type = 'kubeflow'"))
    (claimed,) = store.claim_due(NOW, "relay", lease_s)
    assert claimed.target is None
    assert attempt_limit_s(bounds_of(claimed)) == 3 * 60 + 5
    assert lease_s(claimed) == 3 * 60 + 5 + 30
    assert store.claim_due(NOW + timedelta(seconds=214), "another", lease_s) == []


def test_a_trigger_fired_after_its_monitor_was_deleted_is_not_delivered(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers run a deleted monitor until they next look at the registry (a few
    seconds): a trigger they fire meanwhile is recorded, its deliveries cancelled; a
    delivery that slipped in pending (its transaction did not see the deletion) is
    cancelled when a relay claims; a dead one does not replay. A monitor of the model
    made again delivers again."""
    from sqlalchemy import text

    monkeypatch.setenv("OUTBOX_TEST_SECRET", SECRET)
    spec = api_monitor("http://127.0.0.1:9/x")
    store.create_monitor(spec, NOW)
    reports, fired = triggers(3)
    store.record_results(reports, fired[:1], {"m": spec.targets}, NOW, tenants={"m": "team-a"})
    store.record_attempt(
        store.deliveries()[0]["id"],
        status="dead",
        http_status=500,
        error="HTTP 500",
        latency_s=0.1,
        next_attempt_at=NOW,
        now=NOW,
    )
    assert store.delete_monitor("m", NOW)
    store.record_results(reports, fired[1:2], {"m": spec.targets}, NOW, tenants={"m": "team-a"})
    late = store.deliveries(fired[1].data.trigger_id)[0]
    assert (late["status"], late["reason"]) == (
        "cancelled",
        f"its monitor was deleted at {NOW.isoformat()}",
    )
    with store.engine.begin() as connection:  # as if recorded in a race with the deletion
        connection.execute(
            text("UPDATE deliveries SET status = 'pending' WHERE id = :id"), {"id": late["id"]}
        )
    assert store.claim_due(NOW + timedelta(seconds=1), "relay", lease_s) == []
    assert store.deliveries(fired[1].data.trigger_id)[0]["status"] == "cancelled"
    dead = store.deliveries(fired[0].data.trigger_id)[0]
    with pytest.raises(ValueError, match="its monitor was deleted"):
        store.replay_delivery(dead["id"], NOW)
    store.create_monitor(spec, NOW)  # made again
    store.record_results(reports, fired[2:], {"m": spec.targets}, NOW, tenants={"m": "team-a"})
    assert store.deliveries(fired[2].data.trigger_id)[0]["status"] == "pending"


def test_a_trigger_of_a_monitor_deleted_and_made_again_by_another_tenant_is_not_delivered(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_TEST_SECRET", SECRET)
    spec = api_monitor("http://127.0.0.1:9/a")
    store.create_monitor(spec, NOW)
    assert store.delete_monitor("m", NOW)
    store.create_monitor(spec.model_copy(update={"tenant": "team-b"}), NOW)
    reports, fired = triggers(2)
    # A worker still running team-a's monitor fires; then one running team-b's.
    store.record_results(reports, fired[:1], {"m": spec.targets}, NOW, tenants={"m": "team-a"})
    store.record_results(reports, fired[1:], {"m": spec.targets}, NOW, tenants={"m": "team-b"})
    old, new = (store.deliveries(t.data.trigger_id)[0] for t in fired)
    assert (old["status"], old["tenant"]) == ("cancelled", "team-a")
    assert "another tenant's monitor" in old["reason"]
    assert (new["status"], new["tenant"]) == ("pending", "team-b")


def test_a_trigger_of_a_monitor_deleted_and_made_again_by_its_tenant_is_not_delivered(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """team-a deletes its monitor and makes it again at once, with another target; a
    worker still running the old one fires: not to the old target (nor the new)."""
    monkeypatch.setenv("OUTBOX_TEST_SECRET", SECRET)
    old = api_monitor("http://127.0.0.1:9/old")
    made = store.create_monitor(old, NOW).created_at
    assert store.delete_monitor("m", NOW)
    new = api_monitor("http://127.0.0.1:9/new")
    again = store.create_monitor(new, NOW + timedelta(seconds=1)).created_at
    assert made is not None
    assert again not in (None, made)
    reports, fired = triggers(2)
    tenants = {"m": "team-a"}
    store.record_results(
        reports, fired[:1], {"m": old.targets}, NOW, tenants=tenants, made={"m": made}
    )
    store.record_results(
        reports, fired[1:], {"m": new.targets}, NOW, tenants=tenants, made={"m": again}
    )
    stale, current = (store.deliveries(t.data.trigger_id)[0] for t in fired)
    assert (stale["status"], stale["target_url"]) == ("cancelled", "http://127.0.0.1:9/old")
    assert "deleted and made again" in stale["reason"]
    assert (current["status"], current["target_url"]) == ("pending", "http://127.0.0.1:9/new")


@pytest.mark.parametrize("tenant", ["team-a", "team-b"])
def test_a_delivery_that_slipped_past_a_deletion_is_not_sent_once_the_model_is_remade(
    store: Store, monkeypatch: pytest.MonkeyPatch, tenant: str
) -> None:
    """Recorded pending in a transaction that could not see the deletion; then the model
    gets a monitor again (its tombstone goes): when due, it is cancelled, not sent."""
    from sqlalchemy import text

    monkeypatch.setenv("OUTBOX_TEST_SECRET", SECRET)
    spec = api_monitor("http://127.0.0.1:9/a")
    made = store.create_monitor(spec, NOW).created_at
    assert made is not None
    assert store.delete_monitor("m", NOW)
    reports, fired = triggers(2)
    store.record_results(
        reports, fired[:1], {"m": spec.targets}, NOW, tenants={"m": "team-a"}, made={"m": made}
    )
    with store.engine.begin() as connection:  # as if recorded in a race with the deletion
        connection.execute(text("UPDATE deliveries SET status = 'pending', reason = NULL"))
    later = NOW + timedelta(seconds=1)
    remade = store.create_monitor(spec.model_copy(update={"tenant": tenant}), later).created_at
    assert remade is not None
    store.record_results(
        reports, fired[1:], {"m": spec.targets}, NOW, tenants={"m": tenant}, made={"m": remade}
    )
    (claimed,) = store.claim_due(NOW + timedelta(seconds=1), "relay", lease_s)
    assert claimed.trigger_id == fired[1].data.trigger_id
    (stale,) = store.deliveries(fired[0].data.trigger_id)
    assert stale["status"] == "cancelled"


@pytest.mark.parametrize("runs", ["the old monitor", "the new one"])
def test_a_worker_records_its_triggers_with_the_monitor_it_runs(
    store: Store, monkeypatch: pytest.MonkeyPatch, runs: str
) -> None:
    """Through the service: a worker that has not seen the monitor deleted and made
    again fires with the old one (not delivered); once it runs the new one, delivered."""
    import dataclasses

    from prometheus_client import CollectorRegistry

    from driftline.stream.metrics import Metrics
    from driftline.stream.service import DriftService, _Pending
    from tests.unit.helpers import make_monitor

    monkeypatch.setenv("OUTBOX_TEST_SECRET", SECRET)
    spec = api_monitor("http://127.0.0.1:9/a")
    made = store.create_monitor(spec, NOW).created_at
    assert store.delete_monitor("m", NOW)
    again = store.create_monitor(spec, NOW + timedelta(seconds=1)).created_at
    base = make_monitor()
    running = dataclasses.replace(
        base, spec=spec, made_at=made if runs == "the old monitor" else again
    )

    async def dead_letter(letters: object) -> None:
        return None

    service = DriftService({"m": running}, store, Metrics(CollectorRegistry()), dead_letter)  # type: ignore[arg-type]
    reports, fired = triggers(1)
    asyncio.run(service._write(_Pending(reports=reports, triggers=fired), NOW, {}, {}))
    (row,) = store.deliveries(fired[0].data.trigger_id)
    assert row["status"] == ("cancelled" if runs == "the old monitor" else "pending")


def test_a_change_while_a_worker_starts_is_applied_at_its_first_look(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The versions a worker starts from are those its monitors were built from (a
    change between building them and starting the app is not taken for seen)."""
    from driftline.registry import registry_changes
    from driftline.stream.worker import load_registry

    monkeypatch.setenv("OUTBOX_TEST_SECRET", SECRET)
    store.create_monitor(api_monitor("http://127.0.0.1:9/a"), NOW)
    _, seen = load_registry(store, {})
    store.set_paused("m", True, NOW)  # while the worker makes its topics
    changed, deleted = registry_changes(seen, store.monitor_records())
    assert [r.model_id for r in changed] == ["m"]
    assert deleted == set()
