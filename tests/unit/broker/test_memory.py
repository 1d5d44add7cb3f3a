"""The in-process queue behaves like a RabbitMQ queue with a dead-letter queue."""

from __future__ import annotations

import pytest

from shared.broker.memory import KIND_HEADER, REASON_HEADER, MemoryQueue, UnknownDelivery


def _queue(*bodies: bytes) -> MemoryQueue:
    queue = MemoryQueue()
    for body in bodies:
        queue.publish(body, routing_key="invoice.issued", headers={"h": 1})
    return queue


def test_deliveries_stay_unacknowledged_until_settled() -> None:
    # Given three messages
    queue = _queue(b"a", b"b", b"c")
    # When a consumer takes a window of two
    batch = queue.get(2)
    # Then they are in flight, in publish order, with distinct tags
    assert [m.body for m in batch] == [b"a", b"b"]
    assert len({m.tag for m in batch}) == 2
    assert (queue.ready, queue.unacked) == (1, 2)
    # And acking one settles only that one
    queue.ack(batch[0].tag)
    assert (queue.ready, queue.unacked, queue.acked) == (1, 1, 1)


def test_dead_letter_keeps_the_message_and_adds_the_reason() -> None:
    queue = _queue(b"not json")
    (message,) = queue.get(10)
    queue.dead_letter(message.tag, "not_json", "body is not JSON")
    (dead,) = queue.dead_letters
    assert dead.message.body == b"not json"
    assert dead.message.headers == {"h": 1, KIND_HEADER: "not_json", REASON_HEADER: "body is not JSON"}
    assert (dead.kind, dead.reason) == ("not_json", "body is not JSON")
    assert queue.unacked == 0 and queue.acked == 0


def test_recover_puts_unacknowledged_deliveries_back_first_in_order() -> None:
    # Given a batch in flight when its processing failed
    queue = _queue(b"a", b"b", b"c")
    batch = queue.get(2)
    # When the consumer recovers
    assert queue.recover() == 2
    # Then the same messages come back first, in their order, flagged as redelivered, with new tags
    again = queue.get(3)
    assert [m.body for m in again] == [b"a", b"b", b"c"]
    assert [m.redelivered for m in again] == [True, True, False]
    # And the old tags are no longer valid
    with pytest.raises(UnknownDelivery):
        queue.ack(batch[0].tag)


def test_a_delivery_cannot_be_settled_twice() -> None:
    queue = _queue(b"a")
    (message,) = queue.get(1)
    queue.ack(message.tag)
    with pytest.raises(UnknownDelivery):
        queue.dead_letter(message.tag, "schema", "late")
