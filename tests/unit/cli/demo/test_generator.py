"""The demo's ERP sample: repeatable from its seed, in the v1 contract, with the mix the demo advertises."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.cli.demo.escalation import delivery_days, demo_rates
from services.cli.demo.generator import AS_OF, Sample, generate
from shared.contracts.erp import EVENT_TYPES, InvalidMessage, parse_event


@pytest.fixture(scope="module")
def sample() -> Sample:
    return generate()  # the defaults of `relance demo`


def test_same_seed_gives_byte_identical_messages() -> None:
    # Given two samples built from the same arguments
    first, second = generate(customers=60, months=3, seed=11), generate(customers=60, months=3, seed=11)
    # Then they are the same bytes, so a JSONL file can be regenerated and compared
    assert first.jsonl() == second.jsonl()
    # And another seed gives another sample
    assert generate(customers=60, months=3, seed=12).jsonl() != first.jsonl()


def test_defaults_give_hundreds_of_customers_and_thousands_of_events(sample: Sample) -> None:
    assert sample.as_of == AS_OF == date(2026, 11, 20)
    assert len(sample.customers) == 300
    assert len({c.customer_id for c in sample.customers}) == 300
    assert len({c.name for c in sample.customers}) == 300
    assert 3000 < len(sample.messages) < 20000
    assert {(c.tenant, c.currency) for c in sample.customers} == {
        ("acme-fr", "EUR"),
        ("acme-fr", "USD"),
        ("acme-uk", "GBP"),
    }
    assert {c.language for c in sample.customers} >= {"fr", "en"}


def test_every_payment_habit_and_term_is_represented(sample: Sample) -> None:
    habits = Counter(c.behaviour for c in sample.customers)
    assert set(habits) == {"punctual", "late", "partial", "slow", "never"}
    assert habits["punctual"] > len(sample.customers) / 3  # most customers pay on time
    assert {c.terms for c in sample.customers} == {"30", "45", "60", "45EOM"}


def test_every_event_type_of_the_contract_is_applied(sample: Sample) -> None:
    mix = sample.event_types()
    # every type but the ERP's acknowledgements, which answer relance's commands rather than describe the business
    assert set(mix) == set(EVENT_TYPES) - {"erp.command_acknowledged"}
    assert mix["invoice.issued"] > mix["payment.received"] > mix["credit_note.issued"] > 0
    assert mix["customer.upserted"] > len(sample.customers)  # every customer, and some updated
    for rare in ("invoice.cancelled", "invoice.disputed", "invoice.dispute_resolved", "promise_to_pay.recorded"):
        assert 1 <= mix[rare] <= 20, rare
    assert 1 <= mix["payment_plan.agreed"] <= 5


def test_messages_follow_the_contract_and_invalid_ones_fail_as_planned(sample: Sample) -> None:
    for message in sample.messages:
        assert b"\n" not in message.body  # one message per JSONL line
        try:
            event = parse_event(message.body)
        except InvalidMessage as exc:
            assert message.expect == "rejected", (message.note, exc.reason)
            assert exc.kind == message.kind, (message.note, exc.reason)
            continue
        # Valid on its own: only business-rule violations (checked against the ledger) may still be rejected.
        assert message.expect != "rejected" or message.kind == "business_rule", message.note
        assert event.event_id == message.event_id
        assert event.event_type == message.event_type


def test_money_is_always_a_decimal_string(sample: Sample) -> None:
    def amounts(node: object) -> list[object]:
        if isinstance(node, dict):
            found = [v for k, v in node.items() if k == "amount"]
            return found + [a for v in node.values() for a in amounts(v)]
        if isinstance(node, list):
            return [a for v in node for a in amounts(v)]
        return []

    for message in sample.messages:
        if message.expect == "rejected":
            continue
        for amount in amounts(json.loads(message.body)):
            assert isinstance(amount, str)
            assert Decimal(amount) > 0
            assert Decimal(amount).as_tuple().exponent == -2


def test_the_advertised_disorder_is_there(sample: Sample) -> None:
    # Given the sample's messages in publish order
    notes = sample.notes()
    positions = {m.event_id: n for n, m in enumerate(sample.messages) if m.expect == "applied"}
    invoice_at = {
        json.loads(m.body)["data"]["invoice_id"]: n
        for n, m in enumerate(sample.messages)
        if m.expect == "applied" and m.event_type == "invoice.issued"
    }
    # Then some payments are published before the invoice they pay
    early = [m for m in sample.messages if m.note.startswith("out_of_order")]
    assert len(early) == notes["out_of_order"] >= 10
    for message in early:
        allocation = json.loads(message.body)["data"]["allocations"][0]["invoice_id"]
        assert positions[message.event_id] < invoice_at[allocation]
    # And redeliveries repeat a message byte for byte, after the original
    originals = {m.event_id: (n, m.body) for n, m in enumerate(sample.messages) if m.expect == "applied"}
    redelivered = [(n, m) for n, m in enumerate(sample.messages) if m.note == "redelivered"]
    assert len(redelivered) >= 20
    for n, message in redelivered:
        assert message.event_id is not None
        assert originals[message.event_id][1] == message.body
        assert originals[message.event_id][0] < n
    # And re-sent invoices carry the same data under a new event_id
    resent = [m for m in sample.messages if m.note == "re-sent"]
    assert len(resent) >= 5
    for message in resent:
        body = json.loads(message.body)
        original_id = body["event_id"].rsplit("-resend", 1)[0]
        assert original_id in originals and original_id != body["event_id"]
        assert json.loads(originals[original_id][1])["data"] == body["data"]


def test_a_handful_of_invalid_messages_of_every_kind(sample: Sample) -> None:
    rejected = [m for m in sample.messages if m.expect == "rejected"]
    assert 8 <= len(rejected) <= 30
    assert set(sample.expected_rejections()) == {"not_json", "schema", "unknown_event_type", "business_rule"}
    notes = {m.note for m in rejected}
    for planned in (
        "invalid: truncated JSON",
        "invalid: amount as a JSON number",
        "invalid: event type not in the contract",
        "invalid: unknown currency",
        "invalid: invoice re-issued with another amount",
    ):
        assert planned in notes
    float_message = next(m for m in rejected if m.note == "invalid: amount as a JSON number")
    assert isinstance(json.loads(float_message.body)["data"]["amount"], float)
    # A conflicting re-issue reuses an invoice_id already published, with another amount
    issued = {
        json.loads(m.body)["data"]["invoice_id"]: json.loads(m.body)["data"]
        for m in sample.messages
        if m.expect == "applied" and m.event_type == "invoice.issued"
    }
    for message in (m for m in rejected if m.note == "invalid: invoice re-issued with another amount"):
        data = json.loads(message.body)["data"]
        assert issued[data["invoice_id"]]["amount"] != data["amount"]


def test_nothing_happens_after_the_as_of_date() -> None:
    as_of = date(2025, 3, 31)
    sample = generate(customers=40, months=2, seed=3, as_of=as_of)
    for message in sample.messages:
        if message.expect != "rejected":
            assert json.loads(message.body)["occurred_at"][:10] <= as_of.isoformat()


def test_small_samples_still_work_and_nonsense_is_refused() -> None:
    sample = generate(customers=10, months=1, seed=1)
    assert sample.expected()["applied"] > 10
    with pytest.raises(ValueError, match="at least 10 customers"):
        generate(customers=3)
    with pytest.raises(ValueError, match="months"):
        generate(months=0)


def test_invoice_numbers_run_per_tenant_in_issue_order(sample: Sample) -> None:
    issued = [
        json.loads(m.body)
        for m in sample.messages
        if m.expect == "applied" and m.event_type == "invoice.issued" and not m.note.startswith("out_of_order")
    ]
    for tenant, prefix in (("acme-fr", "FA"), ("acme-uk", "INV")):
        ordered = sorted((e for e in issued if e["tenant"] == tenant), key=lambda e: (e["occurred_at"], e["event_id"]))
        numbers = [e["data"]["number"] for e in ordered]
        assert numbers and all(n.startswith(prefix) for n in numbers)
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def test_customers_name_a_shipped_policy(sample: Sample) -> None:
    from services.escalation.policy import PolicyBook

    shipped = set(PolicyBook.shipped().policies)
    named = {
        json.loads(m.body)["tenant"]: json.loads(m.body)["data"]["policy"]
        for m in sample.messages
        if m.expect == "applied" and m.event_type == "customer.upserted"
    }
    assert named == {"acme-fr": "standard-fr", "acme-uk": "standard-en"}
    assert set(named.values()) <= shipped


def test_messages_are_delivered_on_the_day_they_happened(sample: Sample) -> None:
    # Given the day on which the demo delivers each message
    days = delivery_days(sample)
    assert len(days) == len(sample.messages)
    assert max(days) <= sample.as_of
    bodies = [_json_or_none(m.body) for m in sample.messages]
    # Then nothing is delivered before it happened
    for day, body in zip(days, bodies, strict=True):
        if body is not None and "occurred_at" in body:
            assert day >= date.fromisoformat(body["occurred_at"][:10])
    # And a payment published before its invoice still comes first, on the same day: the invoice was held back
    order = sorted(range(len(days)), key=lambda n: (days[n], n))
    position = {seq: rank for rank, seq in enumerate(order)}
    invoice_seq = {
        body["data"]["invoice_id"]: n
        for n, (m, body) in enumerate(zip(sample.messages, bodies, strict=True))
        if m.expect == "applied" and m.event_type == "invoice.issued" and body is not None
    }
    early = [n for n, m in enumerate(sample.messages) if m.note.startswith("out_of_order")]
    assert early
    for n in early:
        body = bodies[n]
        assert body is not None
        held = invoice_seq[body["data"]["allocations"][0]["invoice_id"]]
        assert days[held] == days[n] and position[n] < position[held]
    # And a faulty re-issue still arrives after the invoice it conflicts with
    for n, message in enumerate(sample.messages):
        if message.note == "invalid: invoice re-issued with another amount":
            original = str(message.event_id).removesuffix("-reissue")
            (first,) = (k for k, m in enumerate(sample.messages) if m.event_id == original)
            assert position[first] < position[n]


def test_a_semester_missing_from_the_rate_table_is_carried_forward(tmp_path: Path) -> None:
    # Given the shipped table and simulated months running into a semester it may lack
    rates, notes = demo_rates(None, date(2030, 11, 20))
    # Then every semester has a rate, and each assumption is said
    assert rates.rate_for(date(2030, 11, 20)) == rates.rate_for(date(2026, 1, 1))
    assert notes and all("the demo assumes" in note for note in notes)
    # And a rate the user supplies is used instead of an assumption
    extra = tmp_path / "rates.csv"
    extra.write_text("semester_start,rate\n2026-07-01,2.00\nboe,2026-06-30,3.50\nlegal-fr,2026-07-01,2.50\n")
    rates, notes = demo_rates(extra, date(2026, 11, 20))
    assert rates.rate_for(date(2026, 11, 20)) == Decimal("2.00") and notes == []
    assert rates.rate_for(date(2026, 11, 20), "boe") == Decimal("3.50")
    # And the Bank of England table is carried forward like the ECB's, each assumption said
    rates, notes = demo_rates(None, date(2026, 11, 20))
    assert rates.rate_for(date(2026, 11, 20), "boe") == Decimal("3.75")
    assert any("Bank of England Bank Rate table: the demo assumes 3.75 %" in note for note in notes)


def _json_or_none(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def test_most_customers_have_a_postal_address_in_their_country_and_a_few_none(sample: Sample) -> None:
    from shared.contracts.erp import PostalAddress

    profiles: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for message in sample.messages:
        try:
            body = json.loads(message.body)
        except ValueError:
            continue  # one of the messages the ingest must refuse
        if isinstance(body, dict) and body.get("event_type") == "customer.upserted" and "data" in body:
            profiles.setdefault((body["tenant"], body["customer_id"]), []).append(body["data"])
    addresses = [versions[-1].get("postal_address") for versions in profiles.values()]
    without = sum(1 for address in addresses if address is None)
    assert 0 < without < len(addresses) * 0.2  # the demo shows the agenda item, and letters for the rest
    for (tenant, _), versions in profiles.items():
        assert len({json.dumps(v.get("postal_address"), sort_keys=True) for v in versions}) == 1  # every revision
        address = versions[-1].get("postal_address")
        if address is not None:
            PostalAddress.model_validate(address)  # valid under the contract
            assert address["country"] in (("GB",) if tenant == "acme-uk" else ("FR", "US"))
