"""Ingest by customer partition (``RELANCE_INGEST_PARTITIONS`` > 1) against real RabbitMQ and PostgreSQL.

The ERP publishes exactly as before (plain pika, to the exchange, routing key = event type); the workers run as
`relance worker ingest` subprocesses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from tests.integration.ingest.test_worker import (
    TENANT,
    Rabbit,
    Worker,
    event_count,
    event_ids,
    invoice,
    rabbit,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.integration

__all__ = ["rabbit", "start_worker"]  # fixtures, used by name

PARTITIONS = 4


@pytest.fixture
def partition_names(amqp_url: str, amqp_names: Any) -> Iterator[None]:
    """Delete the partition queues and the workers queue of this test afterwards (amqp_names deletes the rest)."""
    yield
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for name in [f"{amqp_names.queue}.p{n}" for n in range(PARTITIONS)] + [f"{amqp_names.queue}.workers"]:
            channel.queue_delete(name)
    finally:
        connection.close()


def workload(count: int, customers: int) -> list[dict[str, Any] | bytes]:
    """Invoices numbered in publish order, spread over the customers."""
    return [invoice(f"I-{n}", f"K-{n % customers}", f"INV-{n}", "20.00") for n in range(count)]


def assert_in_publish_order(database_url: str, customers: int) -> None:
    """Every customer's stream holds its events in the order they were published, gapless, each once."""
    ledger = Ledger(make_engine(database_url))
    try:
        for n in range(customers):
            stream = ledger.read_stream(TENANT, f"K-{n}")
            assert [e.version for e in stream] == list(range(1, len(stream) + 1))
            numbers = [int(e.event_id.split("-")[1]) for e in stream]
            assert numbers == sorted(numbers), f"K-{n}'s events were applied out of publish order"
        assert ledger.verify().ok
    finally:
        ledger.engine.dispose()


def drained(rabbit: Rabbit) -> bool:
    """Nothing waits in the ingest queue or in a partition."""
    queues = [rabbit.names.queue, *(f"{rabbit.names.queue}.p{n}" for n in range(PARTITIONS))]
    return all(rabbit.ready(queue) == 0 for queue in queues)


def holding(worker: Worker) -> list[int]:
    """The partitions the worker said it held last."""
    moves = [
        line for line in worker.lines() if line.get("event") in ("ingest.partition_taken", "ingest.partition_released")
    ]
    return list(moves[-1]["held"]) if moves else []


def taking_partitions(*workers: Worker) -> Callable[[], bool]:
    return lambda: all(w.logged("ingest.partition_taken") for w in workers)


def test_two_workers_share_the_partitions_and_apply_each_customer_in_order_never_both_at_once(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker], partition_names: None
) -> None:
    # Given two workers of four partitions, small batches so that both are busy with the same few customers' events
    settings = {"ingest_partitions": PARTITIONS, "ingest_batch_size": 20, "ingest_prefetch": 40}
    workers = [start_worker(pg_url, **settings) for _ in range(2)]
    wait_until(taking_partitions(*workers), "workers to take partitions", workers)

    # When the ERP publishes 3,000 events of 12 customers, interleaved
    rabbit.publish(workload(3000, 12))
    wait_until(lambda: event_count(pg_url) == 3000, "all events applied", workers, timeout=120)
    held = [set(holding(w)) for w in workers]
    for worker in workers:
        assert worker.stop() == 0

    # Then each customer's events are in the log in publish order, and no batch found a stream moved under it
    # (which is what happens when another worker appended to the same customer meanwhile)
    assert_in_publish_order(pg_url, 12)
    assert held[0] and held[1] and not held[0] & held[1]
    assert not any(w.logged("ledger.replan") or w.logged("ledger.retry_conflict") for w in workers)
    assert rabbit.ready(rabbit.names.queue) == 0
    assert rabbit.ready(rabbit.names.dead_letter_queue) == 0


def test_a_worker_killed_mid_batch_with_partitions_on_loses_and_doubles_nothing_and_keeps_the_order(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker], partition_names: None
) -> None:
    # Given three workers of four partitions (one of them also routes the ingest queue to the partitions)
    settings = {"ingest_partitions": PARTITIONS, "ingest_batch_size": 20, "ingest_prefetch": 40}
    workers = [start_worker(pg_url, **settings) for _ in range(3)]
    wait_until(lambda: {p for w in workers for p in holding(w)} == set(range(PARTITIONS)), "partitions held", workers)
    messages = workload(3000, 25)
    rabbit.publish(messages + messages[::7])  # with duplicates

    # When the router, which holds partitions too, is killed with SIGKILL in the middle of the work
    wait_until(lambda: event_count(pg_url) >= 600, "work under way", workers)
    router = next(w for w in workers if w.logged("ingest.router_started"))
    assert holding(router)
    router.kill()
    survivors = [w for w in workers if w is not router]
    wait_until(lambda: event_count(pg_url) == 3000, "all events applied", survivors, timeout=120)
    wait_until(lambda: drained(rabbit), "the duplicates consumed too", survivors)
    for worker in survivors:
        assert worker.stop() == 0

    # Then every event is in the log once, in publish order per customer, and the queues are empty
    ids = event_ids(pg_url)
    assert len(ids) == len(set(ids)) == 3000
    assert_in_publish_order(pg_url, 25)
    assert rabbit.ready(rabbit.names.queue) == 0
    assert rabbit.ready(rabbit.names.dead_letter_queue) == 0


TOTAL = 8000


def test_a_worker_that_joins_a_busy_one_gets_its_share_and_the_handover_keeps_each_customer_in_order(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker], partition_names: None
) -> None:
    # Given one worker busy with a long queue, holding all four partitions (small batches, one commit each: the
    # queue lasts long enough for a newcomer to start and join, however fast the machine)
    settings = {"ingest_partitions": PARTITIONS, "ingest_batch_size": 5, "ingest_prefetch": 10}
    first = start_worker(pg_url, **settings)
    rabbit.publish(workload(TOTAL, 12))
    wait_until(lambda: event_count(pg_url) >= 300, "work under way", [first])
    assert len(holding(first)) == PARTITIONS

    # When a second worker joins while the first is busy
    second = start_worker(pg_url, **settings)
    wait_until(lambda: len(holding(second)) == PARTITIONS // 2, "the newcomer to get its share", [first, second])
    taken_at = event_count(pg_url)
    wait_until(lambda: event_count(pg_url) == TOTAL, "all events applied", [first, second], timeout=180)
    for worker in (first, second):
        assert worker.stop() == 0

    # Then the first gave two partitions back before the end, and no customer's events were applied out of order
    assert taken_at < TOTAL
    assert first.logged("ingest.partition_released")
    assert_in_publish_order(pg_url, 12)
    assert not any(w.logged("ledger.replan") for w in (first, second))
