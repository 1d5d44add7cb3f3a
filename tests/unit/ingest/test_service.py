"""Ingestor: one batch in, applied / duplicate / rejected out, with an in-memory ledger standing in for the store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from services.ingest.service import Delivery, Ingestor
from shared.ledger.refusal import Refusal
from shared.ledger.store import Incoming, LedgerNeedsAttention, LedgerRefused, LedgerUnavailable, Outcome

OVERFLOW = Refusal(
    "data", "SQLSTATE 22003", "NumericValueOutOfRange", "numeric field overflow", "customer_balances.balance"
)


class FakeLedger:
    """Records event ids; a duplicate id is a no-op. Can be told to be down, or to choke on one event id."""

    def __init__(self) -> None:
        self.events: dict[str, Incoming] = {}
        self.calls: list[list[str]] = []
        self.down = False
        self.poison: set[str] = set()

    def record(self, items: Sequence[Incoming]) -> list[Outcome]:
        self.calls.append([item.event_id for item in items])
        if self.down:
            raise LedgerUnavailable("connection refused")
        if self.poison & {item.event_id for item in items}:
            raise LedgerRefused(OVERFLOW)
        outcomes = []
        for item in items:
            if item.event_id in self.events:
                outcomes.append(Outcome("duplicate", "already there"))
            else:
                self.events[item.event_id] = item
                outcomes.append(Outcome("applied", version=len(self.events)))
        return outcomes


def message(event_id: str, **overrides: Any) -> bytes:
    envelope: dict[str, Any] = {
        "event_id": event_id,
        "event_type": "invoice.issued",
        "tenant": "acme-fr",
        "customer_id": "C-1",
        "occurred_at": "2026-11-02T09:15:00Z",
        "data": {
            "invoice_id": f"INV-{event_id}",
            "number": f"F-{event_id}",
            "issue_date": "2026-10-01",
            "due_date": "2026-10-31",
            "currency": "EUR",
            "amount": "100.00",
        },
    }
    envelope.update(overrides)
    return json.dumps(envelope).encode()


def deliveries(*bodies: bytes) -> list[Delivery]:
    return [
        Delivery(body=body, routing_key="invoice.issued", message_id=f"m{n}", tag=n) for n, body in enumerate(bodies)
    ]


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


@pytest.fixture
def ingestor(ledger: FakeLedger) -> Ingestor:
    return Ingestor(ledger, max_message_bytes=1024)  # type: ignore[arg-type]


def test_one_bad_message_does_not_reject_the_others(ingestor: Ingestor, ledger: FakeLedger) -> None:
    # Given a batch with valid events around invalid ones
    batch = deliveries(message("E-1"), b"{not json", message("E-2", event_type="invoice.teleported"), message("E-3"))
    # When it is processed
    result = ingestor.process(batch)
    # Then the valid ones are recorded in a single call, the others rejected with their kind and reason
    assert result.applied == 2
    assert ledger.calls == [["E-1", "E-3"]]
    assert [(r.kind, r.delivery.tag) for r in result.rejections] == [("not_json", 1), ("unknown_event_type", 2)]
    assert all(r.reason for r in result.rejections)
    assert result.rejections[1].event_id == "E-2"
    assert result.rejections[1].tenant == "acme-fr"


def test_each_kind_of_invalid_message_is_named(ingestor: Ingestor) -> None:
    float_amount = json.loads(message("E-F"))
    float_amount["data"]["amount"] = 12.5
    batch = deliveries(
        b"\xff\xfe",
        b"[1, 2]",
        message("E-S", customer_id=""),
        json.dumps(float_amount).encode(),
        message("E-O", data={"padding": "x" * 2000}),
    )
    kinds = [r.kind for r in ingestor.process(batch).rejections]
    assert kinds == ["not_json", "schema", "schema", "schema", "oversize"]


def test_duplicates_are_counted_not_rejected(ingestor: Ingestor) -> None:
    ingestor.process(deliveries(message("E-1")))
    result = ingestor.process(deliveries(message("E-1"), message("E-2")))
    assert (result.applied, result.duplicates, result.rejections) == (1, 1, [])


def test_a_database_outage_fails_the_whole_batch_so_it_can_be_retried(ingestor: Ingestor, ledger: FakeLedger) -> None:
    ledger.down = True
    with pytest.raises(LedgerUnavailable):
        ingestor.process(deliveries(message("E-1"), b"not json"))


def test_a_message_the_database_refuses_is_isolated_and_the_rest_applied(
    ingestor: Ingestor, ledger: FakeLedger
) -> None:
    # Given a batch where the database refuses one event (not an outage, not a lost race)
    ledger.poison = {"E-3"}
    batch = deliveries(*(message(f"E-{n}") for n in range(6)))
    # When it is processed
    result = ingestor.process(batch)
    # Then that one event alone is rejected as a storage problem and the five others are applied
    assert result.applied == 5
    assert [(r.kind, r.event_id) for r in result.rejections] == [("storage", "E-3")]
    assert "SQLSTATE 22003" in result.rejections[0].reason
    assert "customer_balances.balance" in result.rejections[0].reason
    assert set(ledger.events) == {"E-0", "E-1", "E-2", "E-4", "E-5"}


def test_the_ledger_gets_the_message_metadata(ingestor: Ingestor, ledger: FakeLedger) -> None:
    ingestor.process(
        [Delivery(body=message("E-1"), routing_key="invoice.issued", message_id="m-1", correlation_id="c")]
    )
    metadata = ledger.events["E-1"].metadata
    assert metadata["message_id"] == "m-1"
    assert metadata["correlation_id"] == "c"
    assert metadata["routing_key"] == "invoice.issued"
    assert metadata["received_at"]


def test_a_batch_whose_every_message_the_database_refuses_is_dead_lettered_message_by_message(
    ingestor: Ingestor, ledger: FakeLedger
) -> None:
    # Given a batch where the database refuses the data of every message (a balance overflow for each, say)
    ledger.poison = {f"E-{n}" for n in range(4)}
    # When it is processed
    result = ingestor.process(deliveries(*(message(f"E-{n}") for n in range(4))))
    # Then each is set aside as a storage problem naming the SQLSTATE: the batch does not come back for ever
    assert sorted((r.kind, r.event_id) for r in result.rejections) == [("storage", f"E-{n}") for n in range(4)]
    assert all("SQLSTATE 22003" in r.reason for r in result.rejections)
    assert result.applied == 0


def test_a_database_a_person_must_fix_fails_the_whole_batch_instead_of_dead_lettering_it() -> None:
    # Given a ledger whose database refuses any append for a reason of its own (a schema out of step, say)
    class OutOfStep:
        def record(self, items: object) -> object:
            raise LedgerNeedsAttention('relation "customer_balances" does not exist (SQLSTATE 42P01, UndefinedTable)')

    ingestor = Ingestor(OutOfStep())  # type: ignore[arg-type]
    # When a batch goes through, even of one message, Then it is retried whole rather than dead-lettered
    for size in (1, 4):
        with pytest.raises(LedgerUnavailable, match="42P01"):
            ingestor.process(deliveries(*(message(f"E-{n}") for n in range(size))))


def test_hostile_json_is_classified_before_the_batch_is_applied_in_one_transaction(ledger: FakeLedger) -> None:
    # Given valid messages mixed with text nested 100,000 deep, a 5,000-digit integer, a duplicated tenant and an
    # instant that overflows when converted to UTC
    deep = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = message("E-H").replace(b'"amount": "100.00"', b'"amount": ' + b"9" * 5000)
    twice = message("E-T").replace(b'"tenant": "acme-fr"', b'"tenant": "acme-fr", "tenant": "other"')
    overflow = message("E-O", occurred_at="9999-12-31T23:59:59-01:00")
    # When the batch is processed (with the default size limit: these are no larger than a big payment)
    ingestor = Ingestor(ledger)  # type: ignore[arg-type]
    result = ingestor.process(deliveries(message("E-1"), deep, huge, twice, overflow, message("E-2")))
    # Then the bad ones are refused as the message's fault, each with a short reason, and never reach the ledger:
    # the valid ones are applied in a single call, nothing bisected
    assert [(r.kind, r.reason.split(":")[0]) for r in result.rejections] == [
        ("not_json", "JSON nested deeper than 32 levels"),
        (
            "not_json",
            "a JSON number of 5000 characters (999999999999…); relance reads numbers of at most 40 (money is a "
            "decimal string)",
        ),
        ("schema", "tenant"),
        ("schema", "occurred_at"),
    ]
    assert all(len(r.reason) < 300 for r in result.rejections)
    assert ledger.calls == [["E-1", "E-2"]] and result.applied == 2
    # and a duplicated key is never guessed at in the dead-letter headers
    assert (result.rejections[2].event_id, result.rejections[2].tenant) == ("E-T", None)


def test_an_event_stamped_more_than_a_day_after_its_reception_is_refused_before_the_batch(
    ingestor: Ingestor, ledger: FakeLedger
) -> None:
    # Given an ERP whose clock runs days ahead, next to one a few hours ahead
    received = datetime(2026, 11, 2, 9, 15, tzinfo=UTC)
    skewed = Delivery(body=message("E-9", occurred_at="2026-11-05T09:15:00Z"), received_at=received, tag=1)
    close = Delivery(body=message("E-1", occurred_at="2026-11-02T20:00:00Z"), received_at=received, tag=2)
    # When relance receives them
    result = ingestor.process([skewed, close])
    # Then the skewed one is a business-rule refusal that says why, and only the other reaches the ledger
    [rejection] = result.rejections
    assert rejection.kind == "business_rule" and "skewed ERP clock" in rejection.reason
    assert rejection.event_id == "E-9"
    assert ledger.calls == [["E-1"]]
