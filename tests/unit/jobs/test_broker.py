"""Which broker the jobs get from settings, built without connecting: RabbitMQ with publisher confirms on PostgreSQL,
the stub broker in-process on SQLite, either when asked; the queue named by the settings, a bad name refused."""

from __future__ import annotations

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker

from services.jobs.broker import in_process, make_broker
from shared.config import ConfigurationError, load_settings

PG = "postgresql://relance@db.example.com:5432/relance"


def test_on_postgresql_jobs_go_through_rabbitmq_with_publisher_confirms() -> None:
    settings = load_settings(database_url=PG, amqp_url="amqp://u:p@mq.example.com:5672/%2F")
    broker = make_broker(settings)
    assert isinstance(broker, RabbitmqBroker) and broker.confirm_delivery is True
    assert not broker.connections  # nothing connected yet
    assert not in_process(settings)


def test_on_sqlite_jobs_run_in_process_unless_told_otherwise() -> None:
    sqlite = "sqlite:////tmp/relance-jobs-broker-test.db"
    assert isinstance(make_broker(load_settings(database_url=sqlite)), StubBroker)
    assert isinstance(make_broker(load_settings(database_url=sqlite, jobs_broker="rabbitmq")), RabbitmqBroker)
    assert isinstance(make_broker(load_settings(database_url=PG, jobs_broker="inprocess")), StubBroker)


def test_a_queue_name_dramatiq_would_refuse_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match="RELANCE_JOBS_QUEUE: must start with a letter or '_'"):
        load_settings(database_url=PG, jobs_queue="9 jobs")
