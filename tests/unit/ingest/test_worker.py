"""The worker's decisions that need no broker: isolating a message that breaks processing, dead-letter headers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pika
import pytest

from services.ingest.service import BatchResult, Delivery, Rejection
from services.ingest.worker import IngestWorker, dead_letter_properties
from shared.config import load_settings
from shared.ledger.store import LedgerUnavailable


class ChokingIngestor:
    """Applies everything, except that any batch holding the poison body blows up (a bug, not bad input)."""

    def __init__(self, poison: bytes | None = None, down: bool = False) -> None:
        self.poison = poison
        self.down = down
        self.calls = 0

    def process(self, batch: Sequence[Delivery]) -> BatchResult:
        self.calls += 1
        if self.down:
            raise LedgerUnavailable("connection refused")
        if any(d.body == self.poison for d in batch):
            raise KeyError("unexpected")
        return BatchResult(applied=len(batch))


def worker(ingestor: ChokingIngestor) -> IngestWorker:
    return IngestWorker(load_settings(), ingestor, threading.Event())  # type: ignore[arg-type]


def batch(size: int) -> list[Delivery]:
    return [Delivery(body=f"m{n}".encode(), tag=n + 1) for n in range(size)]


def test_a_message_that_breaks_processing_is_rejected_alone_instead_of_looping_forever() -> None:
    # Given a batch of 8 where one message trips an unexpected error
    ingestor = ChokingIngestor(poison=b"m5")
    # When the worker processes it
    result = worker(ingestor)._process_isolating(batch(8))
    # Then the 7 others are applied and the culprit is rejected with an internal_error and the exception
    assert result.applied == 7
    assert [(r.kind, r.delivery.body) for r in result.rejections] == [("internal_error", b"m5")]
    assert "KeyError" in result.rejections[0].reason
    assert ingestor.calls <= 1 + 2 * 3  # a bisection, not one call per message


def test_an_outage_is_not_mistaken_for_a_bad_message() -> None:
    with pytest.raises(LedgerUnavailable):
        worker(ChokingIngestor(down=True))._process_isolating(batch(4))


def test_a_stop_during_an_outage_gives_the_batch_back_instead_of_waiting() -> None:
    from services.ingest.worker import _Stopping

    subject = worker(ChokingIngestor(down=True))
    subject.stop.set()
    with pytest.raises(_Stopping):
        subject._process_until_committed(batch(2))


def test_the_worker_never_builds_a_batch_bigger_than_its_prefetch_window() -> None:
    settings = load_settings(ingest_batch_size=2000, ingest_prefetch=300)
    subject = IngestWorker(settings, ChokingIngestor(), threading.Event())  # type: ignore[arg-type]
    assert subject.batcher.max_size == 300


def test_dead_letter_properties_keep_the_original_ones_and_say_why() -> None:
    # Given a rejected delivery with its original properties
    delivery = Delivery(body=b"{}", routing_key="invoice.issued", message_id="m-1", tag=7)
    rejection = Rejection(delivery, "business_rule", "INV-1 already issued with 1000.00", "E-6", "acme-fr", "C-1")
    original = pika.BasicProperties(
        content_type="application/json", message_id="m-1", correlation_id="corr", headers={"erp": "sap"}
    )
    # When the dead-letter properties are built
    properties = dead_letter_properties(rejection, original, datetime(2026, 11, 2, 9, 15, tzinfo=UTC))
    # Then they keep the original's and add the reason, persistently
    assert properties.delivery_mode == 2
    assert (properties.content_type, properties.message_id, properties.correlation_id) == (
        "application/json",
        "m-1",
        "corr",
    )
    assert properties.headers == {
        "erp": "sap",
        "x-relance-reason": "INV-1 already issued with 1000.00",
        "x-relance-kind": "business_rule",
        "x-relance-event-id": "E-6",
        "x-relance-tenant": "acme-fr",
        "x-relance-customer": "C-1",
        "x-relance-original-routing-key": "invoice.issued",
        "x-relance-rejected-at": "2026-11-02T09:15:00.000+00:00",
    }


def test_dead_letter_headers_leave_out_ids_an_unreadable_message_does_not_have() -> None:
    rejection = Rejection(Delivery(body=b"garbage"), "not_json", "body is not JSON")
    headers = dead_letter_properties(rejection, pika.BasicProperties(), datetime.now(UTC)).headers
    assert headers["x-relance-kind"] == "not_json"
    assert "x-relance-event-id" not in headers
    assert headers["x-relance-original-routing-key"] == ""
