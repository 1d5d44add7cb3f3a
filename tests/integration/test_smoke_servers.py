"""Given the run's servers, the fixtures hand out isolated, migrated databases and AMQP names."""

from sqlalchemy import create_engine, inspect


def test_each_test_gets_a_migrated_database(ledger_url: str) -> None:
    engine = create_engine(ledger_url)
    assert {"events", "customer_state", "invoice_balances"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_amqp_names_are_unique_per_test(amqp_names, amqp_url) -> None:  # type: ignore[no-untyped-def]
    assert amqp_names.queue != amqp_names.dead_letter_queue
    assert amqp_url.startswith("amqp")
