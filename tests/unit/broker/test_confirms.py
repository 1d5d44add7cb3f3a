"""The bookkeeping of a confirm-mode channel (shared/broker/confirms.py), apart from any socket."""

from __future__ import annotations

import pika
import pytest

from shared.broker.confirms import ConfirmingPublisher, InFlight, Outcome, Outgoing
from shared.config import ConfigurationError, load_settings


def message(key: int, routing_key: str = "invoice.issued", body: bytes | None = None) -> Outgoing:
    return Outgoing(
        key, "events", routing_key, body if body is not None else b'{"n": %d}' % key, pika.BasicProperties()
    )


def outcomes(in_flight: InFlight) -> list[tuple[int, Outcome]]:
    return [(item.message.key, item.outcome) for item in in_flight.take_settled()]


def sent(*messages: Outgoing) -> InFlight:
    in_flight = InFlight()
    for item in messages:
        in_flight.sent(item)  # delivery tags 1, 2, … in this order
    return in_flight


def test_a_multiple_ack_settles_every_message_up_to_its_tag_and_leaves_the_rest_unconfirmed() -> None:
    in_flight = sent(*(message(n) for n in range(1, 6)))
    in_flight.answered(3, True, ack=True)
    assert outcomes(in_flight) == [(1, Outcome.CONFIRMED), (2, Outcome.CONFIRMED), (3, Outcome.CONFIRMED)]
    assert [m.key for m in in_flight.messages] == [4, 5] and len(in_flight) == 2
    # And what was settled is handed out once
    assert in_flight.take_settled() == []


def test_single_answers_settle_their_own_tag_in_any_order_and_a_nack_is_not_a_confirm() -> None:
    in_flight = sent(message(1), message(2), message(3))
    in_flight.answered(2, False, ack=False)
    in_flight.answered(3, False, ack=True)
    in_flight.answered(3, False, ack=True)  # an answer for a tag already settled changes nothing
    assert outcomes(in_flight) == [(2, Outcome.NACKED), (3, Outcome.CONFIRMED)]
    assert [m.key for m in in_flight.messages] == [1]
    in_flight.answered(0, True, ack=True)  # tag 0 with multiple: everything outstanding
    assert outcomes(in_flight) == [(1, Outcome.CONFIRMED)]


def test_a_return_belongs_to_the_first_unconfirmed_message_with_its_routing_key_and_body() -> None:
    # Given three messages to the same routing key, of which the broker returns the second (no queue for it)
    in_flight = sent(message(1), message(2), message(3))
    in_flight.returned("events", "invoice.issued", b'{"n": 2}')
    # When the three are acked at once
    in_flight.answered(3, True, ack=True)
    # Then only the second is returned; the others are confirmed
    assert outcomes(in_flight) == [(1, Outcome.CONFIRMED), (2, Outcome.RETURNED), (3, Outcome.CONFIRMED)]


def test_returns_come_in_publish_order_so_a_later_one_never_names_an_earlier_message() -> None:
    # Given identical messages 1 and 3 around message 2, the broker returns 2 and then one copy of the identical pair
    body = b'{"same": true}'
    in_flight = sent(message(1, "a", body), message(2, "b"), message(3, "a", body))
    in_flight.returned("events", "b", b'{"n": 2}')
    in_flight.returned("events", "a", body)
    in_flight.answered(3, True, ack=True)
    # Then the copy returned is the one after message 2 (returns are in publish order), not message 1
    assert outcomes(in_flight) == [(1, Outcome.CONFIRMED), (2, Outcome.RETURNED), (3, Outcome.RETURNED)]


def test_a_nack_after_a_return_is_a_nack() -> None:
    in_flight = sent(message(1))
    in_flight.returned("events", "invoice.issued", b'{"n": 1}')
    in_flight.answered(1, False, ack=False)
    assert outcomes(in_flight) == [(1, Outcome.NACKED)]


def test_a_window_holds_at_least_one_message() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ConfirmingPublisher(pika.URLParameters("amqp://guest:guest@127.0.0.1:1/%2F"), 0)


def test_the_window_setting_is_validated() -> None:
    assert load_settings().publish_window == 1000
    with pytest.raises(ConfigurationError, match="RELANCE_PUBLISH_WINDOW"):
        load_settings(publish_window=0)
