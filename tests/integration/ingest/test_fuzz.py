"""Fuzzing the ingest boundary on the real broker: hostile and careless messages mixed with valid ones.

Hypothesis generates batches of messages, published with plain pika as an ERP (or an attacker) would, to one real
`relance worker ingest` on RabbitMQ and PostgreSQL. Whatever the mix: every bad message is dead-lettered with the
precise kind and a reason naming what is wrong, every valid one is applied exactly once, nothing of a bad one
reaches the ledger, and the worker neither stalls nor dies.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select

from shared.ledger.db import make_engine
from shared.ledger.schema import events
from shared.ledger.store import Ledger
from tests.integration.ingest.test_worker import Rabbit, Worker, rabbit, start_worker, wait_until

pytestmark = pytest.mark.integration
__all__ = ["rabbit", "start_worker"]  # fixtures, used by name

TENANT = "acme-fr"
_ids = itertools.count(1)


@dataclass(frozen=True)
class Sent:
    """One message to publish and what relance must do with it: apply it (kind None) or dead-letter it."""

    body: bytes
    kind: str | None = None
    reason: str = ""  # a fragment the dead-letter reason must contain
    event_id: str | None = None
    repeat: bool = False  # published twice: a redelivery, applied once


Build = Callable[[str], Sent]  # from a unique id to the message


def _now() -> datetime:
    return datetime.now(UTC)


def _envelope(uid: str, event_type: str, data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    occurred = (_now() - timedelta(days=1)).isoformat(timespec="seconds").replace("+00:00", "Z")
    message = {
        "event_id": f"fz-{uid}",
        "event_type": event_type,
        "tenant": TENANT,
        "customer_id": f"FZ-{uid}",
        "occurred_at": occurred,
        "data": data,
    }
    return {**message, **changes}


def _invoice(uid: str, **data_changes: Any) -> dict[str, Any]:
    data = {
        "invoice_id": f"INV-{uid}",
        "number": f"F-{uid}",
        "issue_date": "2026-10-01",
        "due_date": "2026-10-31",
        "currency": "EUR",
        "amount": "100.00",
    }
    return _envelope(uid, "invoice.issued", {**data, **data_changes})


def _customer(uid: str, **data_changes: Any) -> dict[str, Any]:
    data = {"name": "Boulangeries Martin SAS", "emails": ["compta@martin.fr"], "language": "fr"}
    return _envelope(uid, "customer.upserted", {**data, **data_changes})


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode("utf-8")


# ---------------------------------------------------------------------------------------------------- valid
_DAYS = st.dates(date(1900, 1, 1), date(2199, 12, 31))
_AMOUNTS = st.decimals(min_value="0.01", max_value="999999999999999.99", places=2).map(str)
_NAMES = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "Zs", "S"]), min_size=1, max_size=80).filter(
    lambda s: "=?" not in s
)
_ADDRESSES = st.sampled_from(["compta@martin.fr", "ap@dupont.example", "factures@münchen.de", "a.b+c@sub.acme.co.uk"])


@st.composite
def valid(draw: st.DrawFn) -> Build:
    kind = draw(st.sampled_from(["invoice", "customer", "payment"]))
    repeat = draw(st.booleans())
    ahead = draw(st.integers(min_value=-86400 * 365 * 20, max_value=86400 - 3600))  # up to 23 hours ahead
    if kind == "invoice":
        issued, due = sorted(draw(st.lists(_DAYS, min_size=2, max_size=2)))
        changes: dict[str, Any] = {"issue_date": issued.isoformat(), "due_date": due.isoformat()}
        changes |= {"amount": draw(_AMOUNTS), "number": draw(_NAMES).strip() or "F-1"}

        def build(uid: str) -> dict[str, Any]:
            return _invoice(uid, **changes)
    elif kind == "customer":
        changes = {"name": draw(_NAMES), "emails": draw(st.lists(_ADDRESSES, max_size=3, unique=True))}

        def build(uid: str) -> dict[str, Any]:
            return _customer(uid, **changes)
    else:
        amount = draw(_AMOUNTS)
        received_on = draw(_DAYS).isoformat()

        def build(uid: str) -> dict[str, Any]:
            data = {"payment_id": f"P-{uid}", "amount": amount, "currency": "EUR", "received_on": received_on}
            return _envelope(uid, "payment.received", data)

    def make(uid: str) -> Sent:
        message = build(uid)
        message["occurred_at"] = (_now() + timedelta(seconds=ahead)).isoformat()
        return Sent(_encode(message), event_id=message["event_id"], repeat=repeat)

    return make


# ---------------------------------------------------------------------------------------------------- hostile
def _bad(kind: str, reason: str, message: Callable[[str], dict[str, Any] | bytes]) -> Build:
    def make(uid: str) -> Sent:
        built = message(uid)
        return Sent(built if isinstance(built, bytes) else _encode(built), kind, reason, f"fz-{uid}")

    return make


def _duplicate_key(uid: str, where: str) -> bytes:
    text = _encode(_invoice(uid))
    if where == "tenant":
        return text.replace(b'"tenant": "acme-fr"', b'"tenant": "acme-fr", "tenant": "other"')
    return text.replace(b'"amount": "100.00"', b'"amount": "1.00", "amount": "100.00"')


def _deep(uid: str, depth: int) -> bytes:
    return _encode(_invoice(uid)).replace(b'"data": {', b'"x": ' + b"[" * depth + b"]" * depth + b', "data": {')


def _huge_int(uid: str, digits: int) -> bytes:
    return _encode(_invoice(uid)).replace(b'"amount": "100.00"', b'"amount": ' + b"9" * digits)


_CONTROLS = st.sampled_from(["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029"])
_FOREIGN_DIGITS = st.sampled_from(["١٢٣.٤٥", "\uff11\uff12\uff13", "12³", "۱۲۳", "१२३.४५", "12\u00b2.00"])
_ENCODED_WORDS = st.sampled_from(
    ["Acme =?utf-8?q?=0D=0ABcc:_spy@attacker.example?=", "=?UTF-8?B?UmVwbHktVG86IHNweUBhdHRhY2tlci5leGFtcGxl?="]
)
_BAD_ADDRESSES = st.sampled_from(
    ["a@b..com", "compta@martin.fr\r\nBcc: spy@x.example", "Claire <compta@martin.fr>", "compta@localhost", "a@@b.fr"]
)
_BAD_DAYS = st.sampled_from(["9999-12-31", "0001-01-01", "1899-12-31", "2200-01-01", "2026-02-30", "20261101"])
_BAD_INSTANTS = st.sampled_from(
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-11-02T09:15:00", "1700006400"]
)


@st.composite
def hostile(draw: st.DrawFn) -> Build:
    choice = draw(st.integers(min_value=0, max_value=14))
    if choice == 0:
        junk, why = draw(
            st.sampled_from(
                [
                    (b"this is not json {", "not JSON"),
                    (b"\xff\xfe{}", "not UTF-8"),
                    (b"", "not JSON"),
                    (b"{'a': 1}", "not JSON"),
                    (b'{"amount": NaN}', "NaN is not a JSON value"),
                ]
            )
        )
        return _bad("not_json", why, lambda uid: junk)
    if choice == 1:
        where = draw(st.sampled_from(["tenant", "amount"]))
        path = "tenant" if where == "tenant" else "data.amount"
        return _bad("schema", f'{path}: duplicate key "{where}"', lambda uid: _duplicate_key(uid, where))
    if choice == 2:
        depth = draw(st.sampled_from([33, 1000, 100_000]))
        return _bad("not_json", "nested deeper", lambda uid: _deep(uid, depth))
    if choice == 3:
        digits = draw(st.sampled_from([41, 4301, 5000]))
        return _bad("not_json", "JSON number", lambda uid: _huge_int(uid, digits))
    if choice == 4:
        amount = draw(_FOREIGN_DIGITS)
        return _bad("schema", "data.amount", lambda uid: _invoice(uid, amount=amount))
    if choice == 5:
        control = draw(_CONTROLS)
        return _bad("schema", "data.number", lambda uid: _invoice(uid, number=f"F{control}1"))
    if choice == 6:
        word = draw(_ENCODED_WORDS)
        return _bad("schema", "data.name", lambda uid: _customer(uid, name=word))
    if choice == 7:
        address = draw(_BAD_ADDRESSES)
        return _bad("schema", "data.emails.0", lambda uid: _customer(uid, emails=[address]))
    if choice == 8:
        day = draw(_BAD_DAYS)
        return _bad("schema", "data.due_date", lambda uid: _invoice(uid, issue_date="2026-01-01", due_date=day))
    if choice == 9:
        instant = draw(_BAD_INSTANTS)
        return _bad("schema", "occurred_at", lambda uid: {**_invoice(uid), "occurred_at": instant})
    if choice == 10:
        days = draw(st.integers(min_value=2, max_value=60_000))
        return _bad(
            "business_rule",
            "skewed ERP clock",
            lambda uid: {**_invoice(uid), "occurred_at": (_now() + timedelta(days=days)).isoformat()},
        )
    if choice == 11:
        size = draw(st.integers(min_value=262_145, max_value=300_000))
        return _bad("oversize", "limit is 262144", lambda uid: {**_invoice(uid), "padding": "p" * size})
    if choice == 12:
        event_type = draw(st.sampled_from(["invoice.teleported", "INVOICE.ISSUED", "", "invoice.issued "]))
        return _bad("unknown_event_type", "unknown event_type", lambda uid: {**_invoice(uid), "event_type": event_type})
    if choice == 13:
        field, value, path = draw(
            st.sampled_from(
                [
                    ("amount", 100.5, "data.amount"),
                    ("amount", True, "data.amount"),
                    ("currency", ["EUR"], "data.currency"),
                    ("invoice_id", 42, "data.invoice_id"),
                    ("issue_date", 1700006400, "data.issue_date"),
                ]
            )
        )
        return _bad("schema", path, lambda uid: _invoice(uid, **{field: value}))
    envelope_field, value = draw(st.sampled_from([("tenant", 7), ("data", [1, 2]), ("customer_id", None)]))
    return _bad("schema", envelope_field, lambda uid: {**_invoice(uid), envelope_field: value})


# ---------------------------------------------------------------------------------------------------- the test
def _applied(database_url: str, event_ids: list[str]) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            query = (
                select(events.c.event_id, func.count())
                .where(events.c.tenant == TENANT, events.c.event_id.in_(event_ids))
                .group_by(events.c.event_id)
            )
            return {row[0]: int(row[1]) for row in conn.execute(query)}
    finally:
        engine.dispose()


@pytest.mark.timeout(300)
def test_hostile_messages_are_dead_lettered_precisely_and_valid_ones_applied_once(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(pg_url, ingest_batch_ms=20)
    dead_letters: list[tuple[pika.BasicProperties, bytes]] = []

    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(st.one_of(valid(), hostile()), min_size=1, max_size=25))
    def batch(builds: list[Build]) -> None:
        # Given a mix of valid and hostile messages, each under ids of its own
        sent = [build(f"{next(_ids)}") for build in builds]
        by_tag: dict[str, Sent] = {}
        for message in sent:
            tag = f"tag-{next(_ids)}"
            by_tag[tag] = message
            for _ in range(2 if message.repeat else 1):
                rabbit.channel.basic_publish(
                    rabbit.names.exchange,
                    "fuzz",
                    message.body,
                    pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id=tag),
                    mandatory=True,
                )
        bad = {tag: m for tag, m in by_tag.items() if m.kind}
        good = [m.event_id for m in by_tag.values() if not m.kind and m.event_id]
        dead_letters.clear()

        # When the worker drains them
        def drained() -> bool:
            dead_letters.extend(rabbit.drain(rabbit.names.dead_letter_queue))
            return len(dead_letters) >= len(bad) and len(_applied(pg_url, good)) == len(set(good))

        wait_until(drained, "every message applied or dead-lettered", [worker], timeout=60)

        # Then every bad message was dead-lettered once, unchanged, with its precise kind and a reason
        seen = {properties.message_id: (properties, payload) for properties, payload in dead_letters}
        assert len(dead_letters) == len(bad) and set(seen) == set(bad)
        for tag, message in bad.items():
            properties, payload = seen[tag]
            headers = properties.headers
            assert payload == message.body
            assert headers["x-relance-kind"] == message.kind, (headers["x-relance-reason"], message.body[:300])
            assert message.reason in headers["x-relance-reason"], headers["x-relance-reason"]
            assert len(headers["x-relance-reason"]) < 600
        # And every valid message was applied exactly once, redeliveries included, and nothing of a bad one
        applied = _applied(pg_url, good + [m.event_id for m in bad.values() if m.event_id])
        assert applied == dict.fromkeys(good, 1)
        # And the worker is still running, and never failed on a message of its own accord
        assert worker.process.poll() is None
        assert not worker.logged("ingest.unexpected_error")

    batch()
    assert worker.stop() == 0
    assert rabbit.ready(rabbit.names.queue) == 0
    # And every stream is whole: gapless, its hash chain intact
    ledger = Ledger(make_engine(pg_url))
    try:
        assert ledger.verify().ok
    finally:
        ledger.engine.dispose()
