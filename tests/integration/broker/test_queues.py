"""Quorum and classic queues (``RELANCE_QUEUE_TYPE``) on the real RabbitMQ: what relance declares, what it refuses.

The rest of the suite runs on classic queues (tests.servers.QUEUE_TYPE); here the ingest workers (partitioned, with
their router), the notifier (with its retry queue) and the relay (publishing to the notifier's queue with confirms)
run on quorum queues, and a classic queue left by an earlier release stops a quorum worker with the way out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from services.ingest.topology import declare_topology, partition_queue, workers_queue
from services.notifier.worker import declare_notifier_topology, notifier_queue_arguments, retry_queue
from shared.broker import queues
from shared.config import load_settings
from tests.integration.ingest.test_partitions import (
    PARTITIONS,
    assert_in_publish_order,
    holding,
    partition_names,
    taking_partitions,
    workload,
)
from tests.integration.ingest.test_worker import ROOT, Rabbit, Worker, event_count, start_worker, wait_until
from tests.integration.notifier.test_worker import REMIND, Rig, make_rig
from tests.servers import AmqpNames

pytestmark = pytest.mark.integration

__all__ = ["make_rig", "partition_names", "start_worker"]  # fixtures, used by name

QUORUM = {"x-queue-type": "quorum"}


def is_quorum(amqp_url: str, queue: str, arguments: dict[str, Any] = QUORUM) -> bool:
    """Whether ``queue`` is a quorum queue with these arguments: declaring it with them is refused otherwise."""
    assert arguments["x-queue-type"] == "quorum"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_declare(queue, durable=True, arguments=arguments)
        return True
    except ChannelClosedByBroker as exc:
        assert exc.reply_code == queues.PRECONDITION_FAILED, exc
        return False
    finally:
        if connection.is_open:
            connection.close()


class QuorumRabbit(Rabbit):
    """The ERP side of tests.integration.ingest's tests, with the ingest queues declared as quorum queues."""

    def __init__(self, url: str, names: Any) -> None:
        self.names = names
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.exchange_declare(names.exchange, exchange_type="topic", durable=True)
        for queue in (names.queue, names.dead_letter_queue):
            self.channel.queue_declare(queue, durable=True, arguments=QUORUM)
        self.channel.queue_bind(names.queue, names.exchange, routing_key="#")


@pytest.fixture
def quorum_rabbit(amqp_url: str, amqp_names: AmqpNames) -> Iterator[QuorumRabbit]:
    client = QuorumRabbit(amqp_url, amqp_names)
    yield client
    client.close()


# ---------------------------------------------------------------------------------------------------- refusals
def test_a_quorum_worker_finding_a_classic_queue_stops_and_says_how_to_migrate(
    amqp_url: str, amqp_names: AmqpNames
) -> None:
    # Given the ingest queue left by a release that declared classic queues
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare(amqp_names.queue, durable=True)
    settings = load_settings(amqp_url=amqp_url, **{**amqp_names.settings(), "queue_type": "quorum"})

    # When a worker configured for quorum queues declares its topology
    with pytest.raises(queues.QueueTypeMismatch) as raised:
        declare_topology(connection, settings)
    connection.close()

    # Then it stops with what is wrong and both ways out
    message = str(raised.value)
    assert f"{amqp_names.queue!r} exists as a classic queue, but RELANCE_QUEUE_TYPE is quorum" in message
    assert "set RELANCE_QUEUE_TYPE=classic" in message and "deploy/rabbitmq/MIGRATION.md" in message


def test_the_ingest_worker_process_exits_78_on_a_queue_of_the_other_type(
    tmp_path: Any, pg_url: str, amqp_url: str, amqp_names: AmqpNames
) -> None:
    # Given a classic ingest queue
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare(amqp_names.queue, durable=True)
    connection.close()
    env = {**os.environ, **amqp_names.env(), "RELANCE_QUEUE_TYPE": "quorum"}
    env |= {"RELANCE_DATABASE_URL": pg_url, "RELANCE_AMQP_URL": amqp_url, "RELANCE_LOG_FORMAT": "json"}

    # When `relance worker ingest` starts with quorum queues
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "worker", "ingest"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )

    # Then it exits with the configuration status, naming the queue and the migration
    assert done.returncode == 78, done.stderr.decode()
    assert amqp_names.queue in done.stderr.decode() and "MIGRATION.md" in done.stderr.decode()


def test_a_classic_worker_finding_quorum_queues_stops_too(amqp_url: str, amqp_names: AmqpNames) -> None:
    # Given the notifier's queues declared as quorum queues
    quorum = load_settings(amqp_url=amqp_url, **{**amqp_names.settings(), "queue_type": "quorum"})
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    declare_notifier_topology(connection.channel(), quorum)

    # When a notifier configured for classic queues starts, then it refuses with the setting to change
    classic = load_settings(amqp_url=amqp_url, **{**amqp_names.settings(), "queue_type": "classic"})
    with pytest.raises(queues.QueueTypeMismatch) as raised:
        declare_notifier_topology(connection.channel(), classic)
    connection.close()
    message = str(raised.value)
    assert f"queue {amqp_names.notifier_queue!r} exists with other arguments" in message
    assert "with RELANCE_QUEUE_TYPE=quorum, set that again" in message and "MIGRATION.md" in message


# ---------------------------------------------------------------------------------------------------- locks
def test_a_lock_is_held_by_one_connection_and_freed_with_it(amqp_url: str, amqp_names: AmqpNames) -> None:
    first = pika.BlockingConnection(pika.URLParameters(amqp_url))
    second = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        # Given a queue's lock taken by one connection
        assert queues.take_lock(first, amqp_names.queue) is not None
        # Then another connection cannot take it
        assert queues.take_lock(second, amqp_names.queue) is None
        # When the holder's connection goes away (a worker killed), then the other takes it
        first.close()
        assert queues.take_lock(second, amqp_names.queue) is not None
    finally:
        for connection in (first, second):
            if connection.is_open:
                connection.close()


# ---------------------------------------------------------------------------------------------------- workers
def test_ingest_partitions_on_quorum_queues_are_held_by_one_worker_each_and_keep_each_customers_order(
    pg_url: str,
    amqp_url: str,
    quorum_rabbit: QuorumRabbit,
    start_worker: Callable[..., Worker],
    partition_names: None,
) -> None:
    # Given two workers of four quorum partitions (quorum queues accept a second "exclusive" consumer: the locks
    # are what keeps them apart)
    settings = {"queue_type": "quorum", "ingest_partitions": PARTITIONS, "ingest_batch_size": 20}
    workers = [start_worker(pg_url, ingest_prefetch=40, **settings) for _ in range(2)]
    wait_until(taking_partitions(*workers), "workers to take partitions", workers)

    # When the ERP publishes 3,000 events of 12 customers, interleaved
    quorum_rabbit.publish(workload(3000, 12))
    wait_until(lambda: event_count(pg_url) == 3000, "all events applied", workers, timeout=120)
    held = [set(holding(w)) for w in workers]
    routers = sum(len(w.logged("ingest.router_started")) for w in workers)  # before a stop hands the queue over
    for worker in workers:
        assert worker.stop() == 0

    # Then every queue is a quorum queue, each partition had one worker, one router moved every event, and each
    # customer's order held
    names = load_settings(**{**quorum_rabbit.names.settings(), **settings})
    every = [names.ingest_queue, names.dead_letter_queue, workers_queue(names)]
    assert all(is_quorum(amqp_url, q) for q in [*every, *(partition_queue(names, n) for n in range(PARTITIONS))])
    assert held[0] and held[1] and not held[0] & held[1] and routers == 1
    assert not any(w.logged("ledger.replan") or w.logged("ledger.retry_conflict") for w in workers)
    assert_in_publish_order(pg_url, 12)
    assert quorum_rabbit.ready(names.ingest_queue) == quorum_rabbit.ready(names.dead_letter_queue) == 0


def test_the_relay_and_the_notifier_on_quorum_queues_send_a_deferred_reminder_once(
    amqp_url: str, make_rig: Callable[..., Rig]
) -> None:
    # Given the notifier's queues as quorum queues, and an SMTP server down at first
    rig = make_rig(started=False, queue_type="quorum")
    declared = notifier_queue_arguments(rig.settings)
    assert declared and all(is_quorum(amqp_url, queue, arguments) for queue, arguments in declared.items())
    rig.customers("C-1")
    [command] = rig.decide(REMIND, "C-1")
    rig.start()

    # When the relay publishes the command (confirmed by the quorum queue) and the first attempts fail
    assert rig.relay() == 1
    rig.wait(lambda: rig.depth(retry_queue(rig.settings)) == 1, "the command in the retry queue")
    rig.server.start()

    # Then the retry queue gives it back when it expires (at-least-once dead-lettering) and it is sent once
    rig.wait(lambda: rig.done([command]), "the reminder to be sent", timeout=15)
    time.sleep(1.5)
    rig.stop()
    assert rig.outcome(command) == ["reminder.sent"] and len(rig.sink.received) == 1
    assert rig.depth(rig.settings.notifier_queue) == rig.depth(retry_queue(rig.settings)) == 0
