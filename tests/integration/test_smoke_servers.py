"""Given the run's servers, the fixtures hand out isolated, migrated databases and AMQP names of each test alone."""

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker
from sqlalchemy import create_engine, inspect

from tests.servers import AmqpNames

pytestmark = pytest.mark.integration


def test_each_test_gets_a_migrated_database(ledger_url: str) -> None:
    engine = create_engine(ledger_url)
    assert {"events", "customer_state", "invoice_balances"} <= set(inspect(engine).get_table_names())
    engine.dispose()


@pytest.mark.parametrize("run", ["first", "second"])
def test_amqp_names_are_unique_per_test(amqp_url: str, amqp_names: AmqpNames, run: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        # Given the names this test was handed: nothing exists under them on the broker (had the other run of this
        # test been handed the same names, or its queues not been deleted afterwards, the second run would find them)
        named = [*(("queue", q) for q in amqp_names.queues), *(("exchange", e) for e in amqp_names.exchanges)]
        for kind, name in named:
            channel = connection.channel()
            with pytest.raises(ChannelClosedByBroker) as refused:
                if kind == "queue":
                    channel.queue_declare(name, passive=True)
                else:
                    channel.exchange_declare(name, passive=True)
            assert refused.value.reply_code == 404, (run, name)
        # When the test declares them all, as the workers would (the fixture deletes them afterwards)
        channel = connection.channel()
        for exchange in amqp_names.exchanges:
            channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        for queue in amqp_names.queues:
            channel.queue_declare(queue, durable=True)
    finally:
        connection.close()
