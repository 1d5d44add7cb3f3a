"""The action layer on PostgreSQL: every action applied once and a retry a duplicate, the same request sent by two
processes at once recorded once, an action racing with other writers checked again, and the log verified after."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from services.relay.worker import Relay
from services.workspace.actions import ActionRefused, ActionResult, perform
from shared.config import load_settings
from shared.ledger.db import make_engine
from shared.ledger.schema import outbox
from shared.ledger.store import Incoming, Ledger
from tests.factories import payment
from tests.servers import RUN_ID, CommandQueues
from tests.unit.workspace.test_actions import CASES, CUSTOMER, NOW, PLAN, PROMISE, TENANT, act, prepare, seed

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(pg_url: str) -> Iterator[Ledger]:
    engine = make_engine(pg_url)
    ledger = Ledger(engine)
    seed(ledger)
    yield ledger
    engine.dispose()


@pytest.mark.parametrize("action", sorted(CASES))
def test_every_action_is_applied_once_on_postgresql(ledger: Ledger, action: str) -> None:
    steps, payload, types = CASES[action]
    payload = prepare(ledger, steps, payload)
    before = ledger.state(TENANT, CUSTOMER).version
    result = act(ledger, action, **payload)
    assert result.status == "applied" and len(result.event_ids) == len(types)
    assert act(ledger, action, **payload).status == "duplicate"
    assert [e.event_type for e in ledger.read_stream(TENANT, CUSTOMER, before + 1)] == types
    report = ledger.verify(TENANT, CUSTOMER)
    assert report.ok, report.problems


def test_the_same_request_sent_by_two_processes_at_once_is_recorded_once(pg_url: str, ledger: Ledger) -> None:
    results: list[ActionResult | ActionRefused] = []
    start = threading.Barrier(4)

    def send() -> None:
        engine = make_engine(pg_url)
        mine = Ledger(engine)
        start.wait()
        try:
            results.append(act(mine, "agree_plan", "same", **PLAN))
        except ActionRefused as exc:  # pragma: no cover - reported by the assertion below
            results.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status if isinstance(r, ActionResult) else str(r) for r in results)
    assert statuses == ["applied", "duplicate", "duplicate", "duplicate"]
    assert len({tuple(r.event_ids) for r in results if isinstance(r, ActionResult)}) == 1
    plans = [e for e in ledger.read_stream(TENANT, CUSTOMER) if e.event_type == "payment_plan.agreed"]
    assert len(plans) == 1
    with ledger.engine.connect() as conn:
        kinds = [r.kind for r in conn.execute(select(outbox.c.kind).order_by(outbox.c.id))]
    assert kinds == ["erp.payment_plan", "notifier.send_confirmation"]


def test_actions_by_many_people_at_once_all_land_in_order(pg_url: str, ledger: Ledger) -> None:
    errors: list[BaseException] = []

    def note(n: int) -> None:
        engine = make_engine(pg_url)
        try:
            mine = Ledger(engine)
            for k in range(5):
                perform(
                    mine,
                    TENANT,
                    CUSTOMER,
                    "add_note",
                    {"request_id": f"n-{n}-{k}", "text": f"note {n}.{k}"},
                    author=f"user{n}",
                    source="api",
                    now=NOW,
                )
        except BaseException as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=note, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    notes = [e for e in ledger.read_stream(TENANT, CUSTOMER) if e.event_type == "note.added"]
    assert len(notes) == 20
    report = ledger.verify(TENANT, CUSTOMER)
    assert report.ok, report.problems


def test_a_promise_checked_again_after_a_payment_raced_with_it(pg_url: str, ledger: Ledger) -> None:
    # Given a payment the ERP records between the collector's read and the append (another process)
    class Racing(Ledger):
        raced = False

        def record(self, items: Any, **kwargs: Any) -> Any:
            if not self.raced:
                self.raced = True
                ev = payment("P-RACE", "1500.00", received_on="2026-03-19", allocations={"INV-1": "1000.00"})
                ledger.record([Incoming(TENANT, CUSTOMER, ev.event_id, ev.event_type, ev.data, NOW)])
            return super().record(items, **kwargs)

    engine = make_engine(pg_url)
    racing = Racing(engine)
    # Then the promise is checked on the state after the payment: INV-1 is paid, nothing to promise on it
    with pytest.raises(ActionRefused, match="is paid"):
        act(racing, "record_promise", **PROMISE)
    engine.dispose()


def test_the_relay_delivers_what_people_recorded_to_the_erps_queue(pg_url: str, amqp_url: str, ledger: Ledger) -> None:
    # Given a promise, a dispute and a plan recorded by a collector, and the ERP's queue bound with erp.#
    act(ledger, "open_dispute", "r-1", invoice_id="INV-2", reason="two pallets missing")
    act(ledger, "record_promise", "r-2", **{**PROMISE, "invoice_ids": ["INV-1"], "amount": "1000.00"})
    with CommandQueues.declared(amqp_url, f"relance.t.{RUN_ID}.actions") as queues:
        settings = load_settings(database_url=pg_url, amqp_url=amqp_url, commands_exchange=queues.exchange)
        relay = Relay(settings, ledger.engine, threading.Event())
        # When the relay publishes (a customer's commands one at a time, each once confirmed)
        with relay.connected():
            while relay.publish_round():
                pass
        # Then the ERP receives both, in order, with the person who recorded them
        received = queues.drain(queues.erp_queue)
    assert [(m.routing_key, body["author"]) for m, _, body in received] == [
        ("erp.dispute_opened", "claire"),
        ("erp.promise_to_pay", "claire"),
    ]
    assert received[1][1].message_id == received[1][2]["command_id"] == received[1][2]["promise_id"]
    with ledger.engine.connect() as conn:
        assert all(r.published_at is not None for r in conn.execute(select(outbox)))
