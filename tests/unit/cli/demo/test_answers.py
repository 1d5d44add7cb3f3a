"""The demo's answers to relance: customers paying a formal notice in full, a collector waiving an indemnity."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest

from services.cli.demo import answers as demo_answers
from services.cli.demo.answers import Answers, Demand, demanded, payment_message
from services.cli.demo.cadence import Cadence
from services.cli.demo.report import Book
from services.cli.demo.run import EXIT_UNEXPECTED, exit_code
from services.cli.demo.sample import Customer, Message, Sample, encode_envelope
from services.cli.demo.summary import claims_identity, claims_section
from services.ingest.service import Delivery, Ingestor
from shared.contracts import events
from shared.ledger.claims import Figures
from shared.ledger.db import make_engine
from shared.ledger.store import Incoming, Ledger
from tests.factories import Ev, customer, invoice, payment
from tests.unit.ledger.test_claims import claiming, fee, interest

TENANT, CUSTOMER = "acme-fr", "C-0042"
NOTICE_DAY = date(2026, 10, 1)
AT = datetime(2026, 10, 1, 9, tzinfo=UTC)


def line(invoice_id: str, outstanding: str, interest: str, fee: str, **extra: Any) -> events.ReminderLine:
    return events.ReminderLine(
        invoice_id=invoice_id,
        number=f"F-{invoice_id}",
        issue_date=date(2026, 7, 1),
        due_date=date(2026, 8, 31),
        amount=Decimal(outstanding),
        outstanding=Decimal(outstanding),
        days_late=31,
        interest=Decimal(interest),
        fee=Decimal(fee),
        level="formal_notice",
        **extra,
    )


def notice(
    lines: list[events.ReminderLine],
    claims: list[events.ClaimLine] | None = None,
    *,
    level: str = "formal_notice",
    currency: str = "EUR",
) -> dict[str, Any]:
    totals = events.ReminderTotals(
        outstanding=sum((x.outstanding for x in lines), Decimal(0)),
        interest=sum((x.interest for x in lines), Decimal(0)),
        fees=sum((x.fee for x in lines), Decimal(0)),
    )
    reminder = events.ReminderRequested(
        policy="standard-fr",
        policy_version="1",
        as_of="2026-10-01T07:00:00Z",  # type: ignore[arg-type]
        reminder_id=f"rem-{level}-{len(lines)}",
        level=level,
        channel="letter",
        copy_channels=["email"],
        template=None,
        language="fr",
        currency=currency,
        invoice_ids=[x.invoice_id for x in lines],
        lines=lines,
        totals=totals,
        claims=claims,
    )
    return reminder.data()


def claim_line(invoice_id: str, kind: str, amount: str, currency: str = "EUR") -> events.ClaimLine:
    return events.ClaimLine(
        invoice_id=invoice_id,
        number=f"F-{invoice_id}",
        kind=kind,  # type: ignore[arg-type]
        currency=currency,
        amount=Decimal(amount),
    )


# ------------------------------------------------------------------------------------------------ what is demanded
def test_the_total_a_notice_demands_is_principal_interest_indemnity_and_claims_of_its_currency() -> None:
    data = notice(
        [
            line("INV-1", "1000.00", "7.66", "40.00"),
            line("INV-2", "250.00", "1.10", "40.00"),
            line("INV-3", "90.00", "0.20", "40.00", fee_currency="GBP"),  # paid in another currency: not in it
        ],
        [claim_line("INV-0", "interest", "3.05"), claim_line("INV-0", "indemnity", "40.00", currency="GBP")],
    )
    demand = demanded(TENANT, CUSTOMER, data)
    assert demand is not None
    assert demand.principal == {"INV-1": Decimal("1000.00"), "INV-2": Decimal("250.00"), "INV-3": Decimal("90.00")}
    assert demand.total == Decimal("1340.00") + Decimal("8.96") + Decimal("80.00") + Decimal("3.05")
    assert demand.surplus == Decimal("92.01")
    assert (demand.day, demand.currency, demand.reminder_id) == (NOTICE_DAY, "EUR", data["reminder_id"])


def test_a_notice_demanding_no_principal_asks_for_no_transfer() -> None:
    assert demanded(TENANT, CUSTOMER, notice([line("INV-1", "0.00", "0", "0")])) is None


def test_the_transfer_pays_the_principal_and_leaves_the_surplus_unallocated() -> None:
    demand = Demand(TENANT, CUSTOMER, "rem-1", NOTICE_DAY, "EUR", {"INV-1": Decimal("1000.00")}, Decimal("1047.66"))
    message = payment_message(demand, date(2026, 10, 5), 3)
    envelope = json.loads(message.body)
    assert (message.expect, message.event_type, message.event_id) == (
        "applied",
        "payment.received",
        envelope["event_id"],
    )
    assert envelope["occurred_at"] == "2026-10-05T08:30:00Z"
    assert envelope["data"]["amount"] == "1047.66"
    assert envelope["data"]["allocations"] == [{"invoice_id": "INV-1", "amount": "1000.00"}]
    # Clearing the account: the rest of the principal is allocated too, the surplus stays what the notice claimed
    cleared = Demand(
        TENANT, CUSTOMER, "rem-1", NOTICE_DAY, "EUR", {"INV-1": Decimal("1000.00")}, Decimal("1047.66"),
        rest={"INV-9": Decimal("300.00")},
    )  # fmt: skip
    data = json.loads(payment_message(cleared, date(2026, 10, 5), 4).body)["data"]
    assert data["amount"] == "1347.66"
    assert sum(Decimal(a["amount"]) for a in data["allocations"]) == Decimal("1300.00")


def test_who_answers_depends_on_the_seed_alone_in_a_plausible_share() -> None:
    ids = [f"C-{n:04d}" for n in range(1, 1001)]
    chosen = [c for c in ids if demo_answers.answers(7, TENANT, c)]
    assert chosen == [c for c in ids if demo_answers.answers(7, TENANT, c)]  # the same every time
    assert 250 <= len(chosen) <= 450  # about ANSWER_SHARE percent
    assert chosen != [c for c in ids if demo_answers.answers(8, TENANT, c)]
    delays = {demo_answers.answer_delay(7, f"rem-{n}") for n in range(200)}
    assert delays == set(range(demo_answers.ANSWER_DAYS[0], demo_answers.ANSWER_DAYS[1] + 1))


# ------------------------------------------------------------------------------------------------ on a real ledger
@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[Ledger]:
    engine = make_engine(sqlite_url)
    yield Ledger(engine)
    engine.dispose()


def record(ledger: Ledger, history: list[Ev], at: datetime = AT) -> None:
    items = [Incoming(TENANT, CUSTOMER, e.event_id, e.event_type, e.data, at) for e in history]
    assert [o.status for o in ledger.record(items)] == ["applied"] * len(history)


def sample_of(behaviour: str, *messages: Message, seed: int = 7) -> Sample:
    person = Customer(TENANT, CUSTOMER, "Boulangeries Martin SAS", "EUR", "fr", behaviour, "30")  # type: ignore[arg-type]
    return Sample(as_of=date(2026, 11, 20), seed=seed, customers=(person,), messages=messages)


def erp_payment(event_id: str, amount: str, received_on: str, allocations: dict[str, str] | None = None) -> Message:
    data: dict[str, Any] = {"payment_id": event_id, "amount": amount, "currency": "EUR", "received_on": received_on}
    if allocations:
        data["allocations"] = [{"invoice_id": i, "amount": a} for i, a in allocations.items()]
    envelope = {
        "event_id": event_id,
        "event_type": "payment.received",
        "tenant": TENANT,
        "customer_id": CUSTOMER,
        "occurred_at": f"{received_on}T10:00:00Z",
        "data": data,
    }
    return Message(encode_envelope(envelope), "payment.received", event_id, "applied")


def a_seed(draw: Any, *args: str) -> int:
    """A seed for which ``draw(seed, *args)`` is true (the choice is the seed's; the test picks one that chooses)."""
    return next(seed for seed in range(500) if draw(seed, *args))


def notified(ledger: Ledger, *, claimed: bool = True) -> dict[str, Any]:
    """INV-1 (1,000.00, due 31 August) and INV-2 (not yet due), then a formal notice demanding INV-1 with 7.66 of
    interest and the 40.00 indemnity, claimed at that level."""
    history = [
        customer(),
        invoice("INV-1", "1000.00", issue_date="2026-08-01", due_date="2026-08-31"),
        invoice("INV-2", "300.00", issue_date="2026-09-20", due_date="2026-10-20"),
        interest("INV-1", "7.66", through="2026-10-01"),
        fee("INV-1"),
    ]
    if claimed:
        history.append(claiming("INV-1"))
    data = notice([line("INV-1", "1000.00", "7.66", "40.00")])
    history.append(Ev(events.ReminderRequested.TYPE, data, "esc-notice-1"))
    record(ledger, history)
    return data


def test_a_customer_pays_the_notice_in_full_and_the_surplus_settles_its_claims(ledger: Ledger) -> None:
    # Given a customer the seed makes answer and clear its account, sent a formal notice on 1 October
    data = notified(ledger)
    seed = next(
        s
        for s in range(500)
        if demo_answers.answers(s, TENANT, CUSTOMER) and demo_answers.clears(s, data["reminder_id"])
    )
    later = erp_payment("PAY-later", "1000.00", "2026-10-25", {"INV-1": "1000.00"})  # what the sample had planned
    sample = sample_of("late", later, seed=seed)
    answers = Answers(sample, ledger, delivered=[date(2026, 10, 25)])
    # When the demo reads the log that evening, and the day of the answer comes
    answers.read_log(datetime.combine(NOTICE_DAY, time(20), tzinfo=UTC))
    (on,) = answers.scheduled
    assert demo_answers.ANSWER_DAYS[0] <= (on - NOTICE_DAY).days <= demo_answers.ANSWER_DAYS[1]
    (message,) = answers.payments_on(on)
    # Then one transfer pays the notice's total and the rest of the account, the ERP allocating it to principal
    body = json.loads(message.body)["data"]
    assert Decimal(body["amount"]) == Decimal("1047.66") + Decimal("300.00")
    assert {a["invoice_id"]: a["amount"] for a in body["allocations"]} == {"INV-1": "1000.00", "INV-2": "300.00"}
    # And the sample's own later payment of INV-1 is withheld: the customer already paid it
    assert not answers.keeps(0)
    # And once ingested, the surplus settles the claims the notice demanded, nothing left owed
    result = Ingestor(ledger).process([Delivery(body=message.body, received_at=AT.replace(month=10, day=on.day))])
    assert result.applied == 1
    state = ledger.state(TENANT, CUSTOMER)
    assert [(c.kind, c.allocated, c.owed) for c in state.claims.of_invoice("INV-1")] == [
        ("interest", Decimal("7.66"), Decimal(0)),
        ("indemnity", Decimal("40.00"), Decimal(0)),
    ]
    assert state.balances() == {"EUR": Decimal(0)}


def test_a_notice_whose_invoices_moved_is_not_answered(ledger: Ledger) -> None:
    # Given a customer who answers, sent a formal notice, then paying part of the invoice before the answer's day
    notified(ledger)
    seed = a_seed(demo_answers.answers, TENANT, CUSTOMER)
    answers = Answers(sample_of("late", seed=seed), ledger, delivered=[])
    answers.read_log(datetime.combine(NOTICE_DAY, time(20), tzinfo=UTC))
    record(ledger, [payment("P-part", "200.00", received_on="2026-10-02", allocations={"INV-1": "200.00"})])
    (on,) = answers.scheduled
    # Then no transfer answers it: the customer pays as the sample says
    assert answers.payments_on(on) == [] and answers.answered == []


def test_a_notice_is_not_answered_when_the_sample_pays_its_invoice_with_another(ledger: Ledger) -> None:
    notified(ledger)
    seed = a_seed(demo_answers.answers, TENANT, CUSTOMER)
    together = erp_payment("PAY-both", "1200.00", "2026-10-25", {"INV-1": "1000.00", "INV-3": "200.00"})
    answers = Answers(sample_of("late", together, seed=seed), ledger, delivered=[date(2026, 10, 25)])
    answers.read_log(datetime.combine(NOTICE_DAY, time(20), tzinfo=UTC))
    (on,) = answers.scheduled
    assert answers.payments_on(on) == [] and answers.keeps(0)


def test_customers_the_seed_does_not_choose_and_gentler_levels_get_no_answer(ledger: Ledger) -> None:
    data = notified(ledger)
    seed = next(s for s in range(500) if not demo_answers.answers(s, TENANT, CUSTOMER))
    answers = Answers(sample_of("late", seed=seed), ledger, delivered=[])
    answers.read_log(datetime.combine(NOTICE_DAY, time(20), tzinfo=UTC))
    assert answers.scheduled == {}
    # A reminder_2 is not a formal notice, whatever the seed
    other = Answers(sample_of("late", seed=a_seed(demo_answers.answers, TENANT, CUSTOMER)), ledger, delivered=[])
    record(ledger, [Ev(events.ReminderRequested.TYPE, {**data, "level": "reminder_2"}, "esc-r2")])
    other.cursor = answers.cursor
    other.read_log(datetime.combine(NOTICE_DAY, time(20), tzinfo=UTC))
    assert other.scheduled == {}


# ------------------------------------------------------------------------------------------------ waivers
def paid_late(ledger: Ledger, days_late: int) -> None:
    """INV-1 due 31 August, its indemnity charged, paid ``days_late`` days late."""
    received = date(2026, 8, 31).toordinal() + days_late
    record(
        ledger,
        [
            customer(),
            invoice("INV-1", "1000.00", issue_date="2026-08-01", due_date="2026-08-31"),
            fee("INV-1"),
            payment(
                "P-1", "1000.00", received_on=date.fromordinal(received).isoformat(), allocations={"INV-1": "1000.00"}
            ),
        ],
    )


def test_a_collector_waives_the_indemnity_of_a_long_standing_customer_a_few_days_late(ledger: Ledger) -> None:
    # Given a customer late by habit who paid INV-1 four days late, and a seed that picks the invoice
    paid_late(ledger, 4)
    seed = a_seed(demo_answers.waives, "INV-1")
    answers = Answers(sample_of("late", seed=seed), ledger, delivered=[])
    now = datetime(2026, 9, 4, 20, tzinfo=UTC)
    # When the demo reads the day's log
    answers.read_log(now)
    # Then the indemnity is waived, on record, with its reason and author, as relance claims waive records it
    (waived,) = answers.waived
    assert (waived.invoice_id, waived.amount, waived.currency) == ("INV-1", Decimal("40.00"), "EUR")
    (event,) = [e for e in ledger.read_stream(TENANT, CUSTOMER) if e.event_type == events.ClaimWaived.TYPE]
    assert (
        event.data["reason"] == "long-standing customer who paid 4 days late: indemnity waived as a commercial gesture"
    )
    assert event.data["author"] == demo_answers.AUTHORS[TENANT]
    assert event.metadata == {"source": "demo", "author": demo_answers.AUTHORS[TENANT]}
    assert event.occurred_at == now
    claim = ledger.state(TENANT, CUSTOMER).claims.get("INV-1", "indemnity")
    assert claim is not None and (claim.waived, claim.owed) == (Decimal("40.00"), Decimal(0))
    # And reading the log again waives nothing twice
    answers.read_log(now)
    assert len(answers.waived) == 1 and answers.problems() == []


@pytest.mark.parametrize(("behaviour", "days_late"), [("slow", 4), ("late", 25)])
def test_no_waiver_for_a_slow_payer_or_a_long_delay(ledger: Ledger, behaviour: str, days_late: int) -> None:
    paid_late(ledger, days_late)
    answers = Answers(sample_of(behaviour, seed=a_seed(demo_answers.waives, "INV-1")), ledger, delivered=[])
    answers.read_log(datetime(2026, 10, 1, 20, tzinfo=UTC))
    assert answers.waived == []
    assert not [e for e in ledger.read_stream(TENANT, CUSTOMER) if e.event_type == events.ClaimWaived.TYPE]


# ------------------------------------------------------------------------------------------------ the summary
def test_the_claims_table_checks_owed_is_charged_less_paid_less_waived_per_currency() -> None:
    # Given two tenants' EUR claims that add up, and GBP claims whose owed figure does not
    book = Book(as_of=date(2026, 11, 20))
    book.claims[("acme-fr", "EUR")] = Figures(Decimal("100.00"), Decimal("47.66"), Decimal("40.00"), Decimal("12.34"))
    book.claims[("acme-uk", "EUR")] = Figures(Decimal("10.00"), Decimal("0"), Decimal("0"), Decimal("10.00"))
    # Then the EUR line holds, summed over the tenants
    assert claims_identity(book) == []
    assert "  still owed = charged - paid - waived, per currency: holds (EUR 22.34)" in claims_section(book)
    # And a broken identity is a problem of the run (status 1), named in the table
    book.claims[("acme-uk", "GBP")] = Figures(Decimal("70.00"), Decimal("0"), Decimal("40.00"), Decimal("70.00"))
    assert claims_identity(book) == ["GBP: owed 70.00 != 70.00 - 0 - 40.00"]
    assert "per currency: BROKEN (GBP: owed 70.00 != 70.00 - 0 - 40.00)" in "\n".join(claims_section(book))
    assert exit_code(claims_identity(book), Cadence()) == EXIT_UNEXPECTED
