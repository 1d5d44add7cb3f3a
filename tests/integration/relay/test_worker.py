"""Commands to the ERP: written to the outbox with their cause, relayed to RabbitMQ with confirms, never lost.

Real PostgreSQL (and SQLite for the outbox itself) and real RabbitMQ. Each test declares its own commands exchange
and queues, bound the way an ERP would bind them, and removes them afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pika
import pytest
from pika.exceptions import AMQPConnectionError
from sqlalchemy import Engine, select, update

from services.relay.worker import Relay
from shared.config import Settings, load_settings
from shared.ledger import outbox as outbox_module
from shared.ledger.db import make_engine
from shared.ledger.schema import events, outbox
from shared.ledger.store import Incoming, Ledger, LedgerRefused
from tests.servers import RUN_ID, CommandQueues, PrivateRabbitMQ
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

TENANT = "acme-fr"
AS_OF = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
_names = itertools.count(1)


# ---------------------------------------------------------------------------------------------------- fixtures
class Broker(CommandQueues):
    def settings(self, database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "amqp_url": self.url,
            "commands_exchange": self.exchange,
            "relay_poll_ms": 20,
            "retry_max_seconds": 0.2,
            **overrides,
        }
        return load_settings(**values)


@pytest.fixture
def broker(amqp_url: str) -> Iterator[Broker]:
    """A commands exchange of this test, with an ERP queue (erp.#) and a notifier queue (notifier.#)."""
    with Broker.declared(amqp_url, f"relance.t.{RUN_ID}.cmd{next(_names)}") as names:
        yield names


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url, pool_size=10)
    yield engine
    engine.dispose()


@pytest.fixture
def any_engine(ledger_url: str) -> Iterator[Engine]:
    engine = make_engine(ledger_url)
    yield engine
    engine.dispose()


# ---------------------------------------------------------------------------------------------------- helpers
def blocked(customer: str, n: int = 1) -> Incoming:
    return Incoming(
        tenant=TENANT,
        customer_id=customer,
        event_id=f"block-{customer}-{n}",
        event_type="credit.blocked",
        data={
            "block_id": f"B-{customer}-{n}",
            "reason": "credit_limit",
            "overdue": {"EUR": "12500.00"},
            "credit_limit": {"amount": "10000.00", "currency": "EUR"},
            "as_of": AS_OF.isoformat(),
        },
        occurred_at=AS_OF,
    )


def unblocked(customer: str, n: int = 1) -> Incoming:
    return Incoming(
        tenant=TENANT,
        customer_id=customer,
        event_id=f"unblock-{customer}-{n}",
        event_type="credit.unblocked",
        data={"block_id": f"B-{customer}-{n}", "reason": "paid", "as_of": AS_OF.isoformat()},
        occurred_at=AS_OF,
    )


def reminder(customer: str) -> Incoming:
    return Incoming(
        tenant=TENANT,
        customer_id=customer,
        event_id=f"reminder-{customer}",
        event_type="reminder.requested",
        data={
            "reminder_id": f"R-{customer}",
            "level": "reminder-1",
            "channel": "email",
            "template": "reminder-1",
            "language": "fr",
            "currency": "EUR",
            "invoice_ids": ["INV-1"],
            "lines": [],
            "totals": {"outstanding": "120.00"},
            "as_of": AS_OF.isoformat(),
        },
        occurred_at=AS_OF,
    )


def note(customer: str, n: int) -> Incoming:
    """An event that causes no command."""
    tick = {"as_of": "2026-12-01T08:00:00Z", "trigger": "manual"}
    return Incoming(TENANT, customer, f"note-{customer}-{n}", "escalation.clock_ticked", tick, AS_OF)


def outbox_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(outbox).order_by(outbox.c.id)).mappings()]


def run_relay(settings: Settings, engine: Engine, **kwargs: Any) -> tuple[Relay, threading.Event, threading.Thread]:
    stop = threading.Event()
    relay = Relay(settings, engine, stop, **kwargs)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    return relay, stop, thread


def wait_until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def all_published(engine: Engine) -> bool:
    return all(row["published_at"] is not None for row in outbox_rows(engine))


# ---------------------------------------------------------------------------------------------------- the outbox
def test_a_command_is_written_with_the_event_that_causes_it(any_engine: Engine) -> None:
    ledger = Ledger(any_engine)
    # When the ledger records a block, an unblock, a reminder request and an event that commands nothing
    outcomes = ledger.record([blocked("C-1"), note("C-1", 1), unblocked("C-1"), reminder("C-2")])
    assert [o.status for o in outcomes] == ["applied"] * 4
    # Then the outbox holds exactly one command per causing event, named after it, with its envelope and data
    rows = outbox_rows(any_engine)
    assert [(r["kind"], r["command_id"]) for r in rows] == [
        ("erp.credit_block", "block-C-1-1"),
        ("erp.credit_unblock", "unblock-C-1-1"),
        ("notifier.send_reminder", "reminder-C-2"),
    ]
    block = rows[0]["payload"]
    assert block["command_id"] == "block-C-1-1"
    assert block["command"] == "erp.credit_block"
    assert (block["tenant"], block["customer_id"]) == (TENANT, "C-1")
    assert block["reason"] == "credit_limit"
    assert block["overdue"] == {"EUR": "12500.00"}
    assert block["credit_limit"] == {"amount": "10000.00", "currency": "EUR"}
    assert block["occurred_at"] == AS_OF.isoformat()
    assert block["sequence"] == 1 and rows[1]["payload"]["sequence"] == 3
    assert all(r["published_at"] is None and r["attempts"] == 0 for r in rows)
    # And recording the same events again writes no second command
    assert {o.status for o in ledger.record([blocked("C-1"), reminder("C-2")])} == {"duplicate"}
    assert len(outbox_rows(any_engine)) == 3


def test_a_rolled_back_append_leaves_neither_the_event_nor_its_command(any_engine: Engine) -> None:
    # Given an outbox row that already uses the command id the next block would get (so its insert must fail)
    with any_engine.begin() as conn:
        conn.execute(
            outbox.insert().values(
                tenant=TENANT,
                customer_id="C-X",
                command_id="block-C-1-1",
                kind="erp.credit_block",
                payload={},
                created_at=AS_OF,
                attempts=0,
            )
        )
    ledger = Ledger(any_engine, max_attempts=1)
    # When the ledger appends the block and an unrelated event in one batch, Then the clash is a refusal of the data
    # (no race a retry could win), on both engines
    with pytest.raises(LedgerRefused, match=r"uq_outbox_tenant_command_id|outbox\.tenant"):
        ledger.record([note("C-2", 1), blocked("C-1")])
    # Then the transaction rolled back whole: no event in the log, no new command
    with any_engine.connect() as conn:
        assert conn.execute(select(events.c.event_id)).all() == []
    assert [r["customer_id"] for r in outbox_rows(any_engine)] == ["C-X"]
    # And once the clash is gone the same append writes both
    with any_engine.begin() as conn:
        conn.execute(outbox.delete())
    assert [o.status for o in Ledger(any_engine).record([note("C-2", 1), blocked("C-1")])] == ["applied", "applied"]
    assert [r["command_id"] for r in outbox_rows(any_engine)] == ["block-C-1-1"]


# ---------------------------------------------------------------------------------------------------- the relay
def test_the_relay_publishes_exactly_the_pending_commands_with_their_ids(pg_engine: Engine, broker: Broker) -> None:
    ledger = Ledger(pg_engine)
    ledger.record([blocked("C-1"), unblocked("C-1"), blocked("C-2"), reminder("C-3")])
    # Given one command already published earlier
    with pg_engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.command_id == "block-C-2-1").values(published_at=AS_OF))
    settings = broker.settings(pg_engine.url.render_as_string(hide_password=False))
    # When a relay runs until the outbox is empty
    relay, stop, thread = run_relay(settings, pg_engine)
    wait_until(lambda: all_published(pg_engine))
    stop.set()
    thread.join(10)
    # Then the ERP's queue got the pending credit commands, in order, as persistent JSON named by command id
    erp = broker.drain(broker.erp_queue)
    assert [(m.routing_key, p.message_id) for m, p, _ in erp] == [
        ("erp.credit_block", "block-C-1-1"),
        ("erp.credit_unblock", "unblock-C-1-1"),
    ]
    _, properties, body = erp[0]
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert properties.type == "erp.credit_block"
    assert body["command_id"] == "block-C-1-1" and body["customer_id"] == "C-1" and body["tenant"] == TENANT
    assert body["reason"] == "credit_limit" and body["overdue"] == {"EUR": "12500.00"}
    # And the reminder went to the notifier's binding; nothing was published twice
    notifier = broker.drain(broker.notifier_queue)
    assert [p.message_id for _, p, _ in notifier] == ["reminder-C-3"]
    assert relay.totals.published == 3
    assert all(r["attempts"] == 1 for r in outbox_rows(pg_engine) if r["command_id"] != "block-C-2-1")


def test_a_relay_that_crashed_after_the_confirm_republishes_only_what_it_had_not_marked(
    pg_engine: Engine, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = broker.settings(pg_engine.url.render_as_string(hide_password=False))
    ledger = Ledger(pg_engine)
    # Given two commands published and marked by a first relay
    ledger.record([blocked("C-1"), blocked("C-2")])
    relay = Relay(settings, pg_engine, threading.Event())
    with relay.connected():
        assert relay.publish_round() == 2
        # And two more, which a second relay publishes and has confirmed, then dies before marking them
        ledger.record([blocked("C-3"), blocked("C-4")])
        marking = outbox_module.mark_published

        def die_before_marking(*args: Any, **kwargs: Any) -> None:
            raise SystemExit("killed between confirm and mark")

        monkeypatch.setattr("services.relay.worker.mark_published", die_before_marking)
        with pytest.raises(SystemExit):
            relay.publish_round()
    monkeypatch.setattr("services.relay.worker.mark_published", marking)
    # When a relay starts again
    restarted = Relay(settings, pg_engine, threading.Event())
    with restarted.connected():
        assert restarted.publish_round() == 2
    # Then only the unmarked commands went out again, with the same message ids (the ERP deduplicates on them)
    ids = [p.message_id for _, p, _ in broker.drain(broker.erp_queue)]
    assert sorted(ids) == sorted(["block-C-1-1", "block-C-2-1"] + ["block-C-3-1", "block-C-4-1"] * 2)
    assert all_published(pg_engine)


def test_the_relay_retries_while_rabbitmq_is_unreachable_and_loses_nothing(pg_engine: Engine, broker: Broker) -> None:
    settings = broker.settings(pg_engine.url.render_as_string(hide_password=False))
    Ledger(pg_engine).record([blocked("C-1"), unblocked("C-1")])
    attempts = []

    def flaky_connect(s: Settings) -> pika.BlockingConnection:
        # The broker refuses the first three connections, as when it is down or restarting
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            raise AMQPConnectionError("connection refused")
        return pika.BlockingConnection(pika.URLParameters(s.amqp_url))

    # When a relay starts while RabbitMQ is unreachable
    _, stop, thread = run_relay(settings, pg_engine, connect=flaky_connect)
    wait_until(lambda: len(attempts) >= 2)
    # Then nothing is marked published meanwhile
    assert not any(r["published_at"] for r in outbox_rows(pg_engine))
    # And once the broker answers, every command is delivered, in order
    wait_until(lambda: all_published(pg_engine))
    stop.set()
    thread.join(10)
    assert len(attempts) == 4
    assert [p.message_id for _, p, _ in broker.drain(broker.erp_queue)] == ["block-C-1-1", "unblock-C-1-1"]


def test_a_command_nobody_listens_for_stays_in_the_outbox(pg_engine: Engine, broker: Broker) -> None:
    # Given no queue bound for reminders (the notifier is not deployed yet)
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    connection.channel().queue_unbind(broker.notifier_queue, broker.exchange, routing_key="notifier.#")
    connection.close()
    settings = broker.settings(pg_engine.url.render_as_string(hide_password=False))
    Ledger(pg_engine).record([reminder("C-1"), blocked("C-1")])
    relay = Relay(settings, pg_engine, threading.Event())
    # When the relay runs
    with relay.connected():
        relay.publish_round()
    # Then the block is delivered (the stalled reminder does not hold up the ERP's commands)
    assert [p.message_id for _, p, _ in broker.drain(broker.erp_queue)] == ["block-C-1-1"]
    # And the reminder, returned as unroutable, is still pending with its attempt counted
    rows = {r["command_id"]: r for r in outbox_rows(pg_engine)}
    assert rows["reminder-C-1"]["published_at"] is None and rows["reminder-C-1"]["attempts"] == 1
    assert rows["block-C-1-1"]["published_at"] is not None


def test_two_relays_at_once_publish_every_command_in_each_customers_order(pg_engine: Engine, broker: Broker) -> None:
    settings = broker.settings(pg_engine.url.render_as_string(hide_password=False), relay_batch_size=7)
    ledger = Ledger(pg_engine)
    customers = [f"C-{n:02d}" for n in range(40)]
    # Given each of 40 customers blocked, unblocked and blocked again
    for round_ in (1, 2):
        ledger.record([blocked(c, round_) for c in customers])
        ledger.record([unblocked(c, round_) for c in customers])
    expected = {f"{kind}-{c}-{r}" for c in customers for r in (1, 2) for kind in ("block", "unblock")}
    # When two relays run side by side
    runs = [run_relay(settings, pg_engine) for _ in range(2)]
    wait_until(lambda: all_published(pg_engine), seconds=60)
    for _, stop, thread in runs:
        stop.set()
        thread.join(10)
    # Then every command was published (at least once, always under its own id), and both relays did some
    messages = broker.drain(broker.erp_queue)
    assert {p.message_id for _, p, _ in messages} == expected
    assert sum(relay.totals.published for relay, _, _ in runs) == len(expected)
    # And each customer's commands reached the queue in the order they were decided
    sequences: dict[str, list[int]] = {}
    for _, _, body in messages:
        sequences.setdefault(body["customer_id"], []).append(body["sequence"])
    assert all(seq == sorted(seq) and len(seq) == 4 for seq in sequences.values())


def test_the_relay_process_starts_from_settings_and_stops_on_request(pg_url: str, broker: Broker) -> None:
    from services.relay.worker import run

    engine = make_engine(pg_url)
    Ledger(engine).record([blocked("C-1")])
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run(broker.settings(pg_url), stop=stop)))
    thread.start()
    wait_until(lambda: all_published(engine))
    stop.set()
    thread.join(20)
    assert result == [0]
    assert [p.message_id for _, p, _ in broker.drain(broker.erp_queue)] == ["block-C-1-1"]
    engine.dispose()


# ---------------------------------------------------------------------------------------------------- confirms
@pytest.fixture
def refusing_broker(amqp_url: str) -> Iterator[Broker]:
    """Commands queues as ``broker``'s, except that the ERP's queue refuses publishes (nack) while it holds 3."""
    base = f"relance.t.{RUN_ID}.cmd{next(_names)}"
    names = Broker(amqp_url, f"{base}.commands", f"{base}.erp", f"{base}.notifier")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(names.exchange, exchange_type="topic", durable=True)
    refusing = {"x-max-length": 3, "x-overflow": "reject-publish"}
    channel.queue_declare(names.erp_queue, durable=True, arguments=refusing)
    channel.queue_bind(names.erp_queue, names.exchange, routing_key="erp.#")
    channel.queue_declare(names.notifier_queue, durable=True)
    channel.queue_bind(names.notifier_queue, names.exchange, routing_key="notifier.#")
    yield names
    for queue in (names.erp_queue, names.notifier_queue):
        channel.queue_delete(queue)
    channel.exchange_delete(names.exchange)
    connection.close()


def test_the_relay_marks_published_only_what_the_broker_confirmed_and_publishes_the_nacked_again(
    pg_engine: Engine, refusing_broker: Broker
) -> None:
    broker = refusing_broker
    settings = broker.settings(pg_engine.url.render_as_string(hide_password=False))
    customers = [f"C-{n:02d}" for n in range(10)]
    Ledger(pg_engine).record([blocked(c) for c in customers])
    relay = Relay(settings, pg_engine, threading.Event())
    with relay.connected():
        # When the relay publishes the ten blocks at once into a queue that takes three
        assert relay.publish_round() == 3
        # Then exactly the three the broker confirmed are marked published; the seven it nacked are pending
        rows = outbox_rows(pg_engine)
        marked = {r["command_id"] for r in rows if r["published_at"] is not None}
        assert len(marked) == 3
        assert all(r["attempts"] == 1 for r in rows)
        assert {p.message_id for _, p, _ in broker.drain(broker.erp_queue)} == marked
        assert relay.totals.nacked == 7
        # And once the queue has room again, the nacked ones are published, each exactly once
        delivered = set(marked)
        deadline = time.monotonic() + 30
        while not all_published(pg_engine) and time.monotonic() < deadline:
            relay.publish_round()
            delivered |= {p.message_id for _, p, _ in broker.drain(broker.erp_queue)}
            time.sleep(0.05)
    assert all_published(pg_engine)
    assert delivered == {f"block-{c}-1" for c in customers}


def test_each_customers_commands_keep_their_order_when_the_connection_is_cut_mid_batch(
    pg_engine: Engine, broker: Broker
) -> None:
    # Given 30 customers blocked, unblocked, blocked and unblocked again
    ledger = Ledger(pg_engine)
    customers = [f"C-{n:02d}" for n in range(30)]
    for round_ in (1, 2):
        ledger.record([blocked(c, round_) for c in customers])
        ledger.record([unblocked(c, round_) for c in customers])
    expected = {f"{kind}-{c}-{r}" for c in customers for r in (1, 2) for kind in ("block", "unblock")}
    # And a network to RabbitMQ that breaks three times while the relay publishes batches of 7
    parameters = pika.URLParameters(broker.url)
    with TcpProxy(parameters.host, parameters.port, cut_every_bytes=15_000, cuts=3) as proxy:
        settings = load_settings(
            database_url=pg_engine.url.render_as_string(hide_password=False),
            amqp_url=proxy.url(broker.url),
            commands_exchange=broker.exchange,
            relay_poll_ms=20,
            relay_batch_size=7,
            retry_max_seconds=0.2,
        )
        # When a relay runs until everything is published
        relay, stop, thread = run_relay(settings, pg_engine)
        wait_until(lambda: all_published(pg_engine), seconds=60)
        stop.set()
        thread.join(10)
        assert proxy.cuts_done == 3
    # Then every command reached the ERP's queue (what was in flight at a cut, possibly twice)
    messages = broker.drain(broker.erp_queue)
    assert {p.message_id for _, p, _ in messages} == expected
    assert relay.totals.published == len(expected)
    # And no command of a customer overtook an earlier one, not even a copy published again after a cut
    sequences: dict[str, list[int]] = {}
    for _, _, body in messages:
        sequences.setdefault(body["customer_id"], []).append(body["sequence"])
    assert all(seq == sorted(seq) and len(set(seq)) == 4 for seq in sequences.values())


def test_a_broker_killed_and_restarted_mid_relay_loses_no_command_and_keeps_each_customers_order(
    pg_engine: Engine, private_rabbitmq: PrivateRabbitMQ
) -> None:
    # Given 1,500 customers each blocked then unblocked, and a RabbitMQ of this test alone
    ledger = Ledger(pg_engine)
    customers = [f"C-{n:04d}" for n in range(1500)]
    ledger.record([blocked(c) for c in customers])
    ledger.record([unblocked(c) for c in customers])
    expected = {f"{kind}-{c}-1" for c in customers for kind in ("block", "unblock")}
    broker = private_rabbitmq
    with Broker.declared(broker.url, f"relance.t.{RUN_ID}.cmd{next(_names)}") as names:
        settings = names.settings(pg_engine.url.render_as_string(hide_password=False), relay_batch_size=50)
        _, stop, thread = run_relay(settings, pg_engine)

        # When the broker is killed (SIGKILL) while the relay publishes, and started again on the same data
        def queued() -> int:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection = pika.BlockingConnection(pika.URLParameters(broker.url))
                try:
                    return int(connection.channel().queue_declare(names.erp_queue, passive=True).method.message_count)
                finally:
                    connection.close()
            return 0

        wait_until(lambda: queued() >= 300)
        assert not all_published(pg_engine), "the relay finished before the broker could be killed"
        broker.kill()
        broker.start()
        wait_until(lambda: all_published(pg_engine), seconds=120)
        stop.set()
        thread.join(10)
        messages = names.drain(names.erp_queue)
    # Then every command is in the ERP's durable queue (what was in flight at the kill, possibly twice)
    assert {p.message_id for _, p, _ in messages} == expected
    # And no customer's unblock is ahead of its block, not even a copy published again after the restart
    sequences: dict[str, list[int]] = {}
    for _, _, body in messages:
        sequences.setdefault(body["customer_id"], []).append(body["sequence"])
    assert all(seq == sorted(seq) for seq in sequences.values())


def test_the_relay_publishes_batch_after_batch_on_either_database(any_engine: Engine, broker: Broker) -> None:
    # Given 5 customers blocked then unblocked, relayed in batches of 2 (SQLite has one writer: one batch at a time)
    ledger = Ledger(any_engine)
    customers = [f"C-{n}" for n in range(5)]
    ledger.record([blocked(c) for c in customers])
    ledger.record([unblocked(c) for c in customers])
    settings = broker.settings(any_engine.url.render_as_string(hide_password=False), relay_batch_size=2)
    relay = Relay(settings, any_engine, threading.Event())
    # When the relay runs rounds until nothing is left
    with relay.connected():
        while relay.publish_round():
            pass
    # Then every command went out once, each customer's block before its unblock
    messages = broker.drain(broker.erp_queue)
    assert sorted(p.message_id for _, p, _ in messages) == sorted(
        f"{kind}-{c}-1" for c in customers for kind in ("block", "unblock")
    )
    first_seen = [body["customer_id"] + body["command"] for _, _, body in messages]
    assert all(first_seen.index(f"{c}erp.credit_block") < first_seen.index(f"{c}erp.credit_unblock") for c in customers)
    assert all_published(any_engine)
