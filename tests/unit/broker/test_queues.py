"""The arguments relance declares its queues with (shared/broker/queues.py), and the messages that say what to do
when a queue exists otherwise; tests/integration/broker/test_queues.py declares them on the real RabbitMQ."""

from __future__ import annotations

import pytest

from shared.broker import queues
from shared.config import ConfigurationError, load_settings

QUORUM = load_settings(queue_type="quorum")
CLASSIC = load_settings(queue_type="classic")


def test_quorum_is_the_default_queue_type_for_new_deployments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELANCE_QUEUE_TYPE", raising=False)  # the tests' environment says classic (tests/conftest.py)
    assert load_settings().queue_type == "quorum"


def test_quorum_queues_carry_their_type_and_classic_ones_no_argument_at_all() -> None:
    assert queues.arguments(QUORUM) == {"x-queue-type": "quorum"}
    assert queues.arguments(QUORUM, **{"x-delivery-limit": 20}) == {"x-queue-type": "quorum", "x-delivery-limit": 20}
    # as relance declared its queues before quorum queues, so that existing ones are declared the same
    assert queues.arguments(CLASSIC) == {}
    assert queues.arguments(CLASSIC, **{"x-delivery-limit": 20, "x-dead-letter-exchange": ""}) == {
        "x-dead-letter-exchange": ""
    }


def test_a_queue_of_the_other_type_is_a_configuration_error_saying_both_ways_out() -> None:
    reply = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'relance.ingest' in vhost '/'"
    error = queues.type_mismatch("relance.ingest", QUORUM, reply)
    assert isinstance(error, ConfigurationError)  # exit status 78: retrying cannot cure it
    message = str(error)
    assert message.startswith("RabbitMQ queue 'relance.ingest' exists as a classic queue, but RELANCE_QUEUE_TYPE is")
    assert "set RELANCE_QUEUE_TYPE=classic" in message and queues.MIGRATION in message and reply in message
    assert "exists as a quorum queue, but RELANCE_QUEUE_TYPE is classic" in str(
        queues.type_mismatch("relance.ingest", CLASSIC, reply)
    )


def test_a_queue_with_other_arguments_names_what_relance_declares() -> None:
    error = queues.arguments_mismatch("relance.notifier", QUORUM, queues.arguments(QUORUM), "PRECONDITION_FAILED")
    assert "(x-queue-type='quorum'; the broker said: PRECONDITION_FAILED)" in str(error)
    assert "RELANCE_QUEUE_TYPE=classic, set that again" in str(error)


def test_a_lock_is_named_after_its_queue() -> None:
    assert queues.lock_name("relance.ingest.p3") == "relance.ingest.p3.owner"
