"""deploy/rabbitmq/definitions.json: the topology an operator can load into RabbitMQ before relance starts (the
management UI's import, or ``load_definitions``), with exactly the queues, arguments and bindings relance declares
for the default settings with quorum queues and 8 ingest partitions, so that the workers accept what it made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pika
import pytest
from structlog.testing import capture_logs

from services.ingest.topology import BINDING_KEY, declare_topology, partition_queue, workers_queue
from services.notifier.command import KINDS
from services.notifier.worker import declare_notifier_topology, notifier_queue_arguments
from shared.broker import queues
from shared.config import Settings, load_settings
from tests.servers import AmqpNames

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
PARTITIONS = 8
ERP_QUEUE = "erp.relance.commands"  # an example of the ERP's own queue


def definitions() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return document


def settings() -> Settings:
    return Settings(queue_type="quorum", ingest_partitions=PARTITIONS)


def declared(s: Settings) -> dict[str, dict[str, Any]]:
    """Every queue relance declares with these settings, with its arguments."""
    every = {
        s.ingest_queue: queues.arguments(s),
        s.dead_letter_queue: queues.arguments(s),
        **{partition_queue(s, n): queues.arguments(s) for n in range(PARTITIONS)},
        workers_queue(s): queues.arguments(s),
    }
    return every | notifier_queue_arguments(s)


def test_the_definitions_hold_the_queues_relance_declares_with_their_arguments() -> None:
    document, s = definitions(), settings()
    [vhost] = [entry["name"] for entry in document["vhosts"]]
    found = {q["name"]: q for q in document["queues"]}
    assert {name: found[name]["arguments"] for name in declared(s)} == declared(s)
    assert set(found) == set(declared(s)) | {ERP_QUEUE}
    assert all(q["durable"] and not q["auto_delete"] and q["vhost"] == vhost for q in found.values())
    assert all(q["arguments"]["x-queue-type"] == "quorum" for q in found.values())
    exchanges = {(e["name"], e["type"], e["durable"]) for e in document["exchanges"]}
    assert exchanges == {(s.events_exchange, "topic", True), (s.commands_exchange, "topic", True)}
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in document["bindings"]}
    assert bindings == {
        (s.events_exchange, s.ingest_queue, BINDING_KEY),
        *((s.commands_exchange, s.notifier_queue, kind) for kind in KINDS),
        (s.commands_exchange, ERP_QUEUE, "erp.#"),
    }


def test_the_definitions_name_users_without_a_password_to_be_set_by_the_operator() -> None:
    users = {user["name"]: user for user in definitions()["users"]}
    assert set(users) == {"relance", "relance-keda"}
    assert all(user["password_hash"] == "" for user in users.values())  # `rabbitmqctl change_password` sets them
    assert users["relance-keda"]["tags"] == ["monitoring"]  # KEDA reads queue depths from the management API
    permissions = {p["user"]: p for p in definitions()["permissions"]}
    assert permissions["relance-keda"]["write"] == permissions["relance-keda"]["configure"] == "^$"


@pytest.mark.integration
def test_workers_accept_the_queues_the_definitions_create(amqp_url: str, amqp_names: AmqpNames) -> None:
    # Given the queues of the definitions created beforehand under this test's names, with their arguments
    s = load_settings(
        amqp_url=amqp_url, **{**amqp_names.settings(), "queue_type": "quorum", "ingest_partitions": PARTITIONS}
    )
    by_name = {q["name"]: q["arguments"] for q in definitions()["queues"]}
    production = settings()
    renamed = dict(zip(declared(production), declared(s), strict=True))  # the same roles, in the same order
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for name, test_name in renamed.items():
            arguments = {key: renamed.get(value, value) for key, value in by_name[name].items()}  # dead-letter keys
            channel.queue_declare(test_name, durable=True, arguments=arguments)

        # When the ingest and notifier workers declare their topology
        with capture_logs() as logs:
            declare_topology(connection, s)
            declare_notifier_topology(connection.channel(), s)

        # Then the broker accepts every declaration as it is (none is a queue kept with other arguments)
        assert [line for line in logs if line["event"] == "broker.queue_kept_as_is"] == []
    finally:
        channel = connection.channel()
        for test_name in renamed.values():
            channel.queue_delete(test_name)
        connection.close()
