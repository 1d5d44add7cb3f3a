"""HTTP ingest and AMQP ingest side by side on real PostgreSQL and RabbitMQ: the same messages, the same outcomes.

One database is fed by a `relance worker ingest` subprocess reading RabbitMQ (messages published with plain pika,
as an ERP would), the other by POST /api/v1/ingest; both must end with the same ledger and the same refusals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.cli.ingest_http import http_ingest_port
from services.workspace import ingest
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from shared.signing import signature
from tests.integration.ingest.test_worker import Rabbit, Worker, event_count, rabbit, start_worker, wait_until
from tests.unit.workspace.ingest_cases import MAX_MESSAGE_BYTES, OTHER_TENANT, TENANT, cases, comparable, invoice, raw

pytestmark = pytest.mark.integration
__all__ = ["rabbit", "start_worker"]  # fixtures of the AMQP ingest tests, used here as they are

SECRET = "ingest-secret-of-acme-fr-0123"
OTHER_SECRET = "ingest-secret-of-acme-de-0123"


@pytest.fixture
def http_ledger(make_pg_database: Callable[[], str]) -> Iterator[Ledger]:
    ledger = Ledger(make_engine(make_pg_database()))
    yield ledger
    ledger.engine.dispose()


@pytest.fixture
def client(http_ledger: Ledger) -> TestClient:
    app = FastAPI()
    app.include_router(
        ingest.make_router(
            secrets={TENANT: SecretStr(SECRET), OTHER_TENANT: SecretStr(OTHER_SECRET)},
            ingest=http_ingest_port(MAX_MESSAGE_BYTES),
            ledger=lambda: http_ledger,
            now=lambda: datetime.now(UTC),
            max_body_bytes=1 << 20,
        )
    )
    return TestClient(app)


def ledger_contents(ledger: Ledger, customers: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        customer: [(e.version, e.event_id, e.event_type, e.data) for e in ledger.read_stream(TENANT, customer)]
        for customer in customers
    }


def test_the_same_messages_through_amqp_and_http_give_the_same_ledger_and_the_same_refusals(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker], client: TestClient, http_ledger: Ledger
) -> None:
    # Given every kind of message, valid, duplicated and refused
    sent = cases(datetime.now(UTC))
    bodies = [body for _, body in sent]

    # When they go to RabbitMQ and one ingest worker drains the queue
    rabbit.publish(list(bodies))
    worker = start_worker(pg_url, max_message_bytes=MAX_MESSAGE_BYTES, ingest_batch_size=25)
    refusals = sum(outcome not in ("applied", "duplicate") for outcome, _ in sent)
    wait_until(
        lambda: event_count(pg_url) == 3 and rabbit.ready(rabbit.names.dead_letter_queue) == refusals,
        "the valid events applied and the refused ones dead-lettered",
        [worker],
    )
    assert worker.stop() == 0
    dead = rabbit.drain(rabbit.names.dead_letter_queue)
    amqp_refused = sorted(
        (h.get("x-relance-event-id") or "", h["x-relance-kind"], comparable(h["x-relance-reason"]))
        for h in (properties.headers for properties, _ in dead)
    )

    # and they are posted over HTTP: the array, then the one that is not JSON alone (it cannot sit in an array)
    in_array = [body for outcome, body in sent if outcome != "not_json"]
    answer = client.post(ingest.PATH, content=b"[" + b",".join(in_array) + b"]", headers=bearer())
    assert answer.status_code == 200, answer.text
    lone = client.post(ingest.PATH, content=b"this is not json {", headers=bearer())
    assert lone.status_code == 200, lone.text
    http_refused = sorted(
        (r["event_id"] or "", r["kind"], comparable(r["reason"]))
        for r in answer.json()["refused"] + lone.json()["refused"]
    )

    # Then both refused the same messages, of the same kinds, for the same reasons
    assert http_refused == amqp_refused
    assert sorted(kind for _, kind, _ in http_refused) == sorted(
        outcome for outcome, _ in sent if outcome not in ("applied", "duplicate")
    )
    assert answer.json()["applied"] == ["E-0", "E-1", "E-2"]
    assert answer.json()["duplicates"] == ["E-1", "E-5"]
    # and both ledgers hold the same streams, versions and data, verifiable
    amqp_ledger = Ledger(make_engine(pg_url))
    try:
        customers = ["C-1", "C-3"]
        assert ledger_contents(http_ledger, customers) == ledger_contents(amqp_ledger, customers)
        assert [e.event_id for e in http_ledger.read_stream(TENANT, "C-1")] == ["E-0", "E-1", "E-2"]
        assert http_ledger.state(TENANT, "C-1").balances() == amqp_ledger.state(TENANT, "C-1").balances()
        assert http_ledger.verify().ok
        assert amqp_ledger.verify().ok
    finally:
        amqp_ledger.engine.dispose()


def bearer(secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def test_a_signed_request_is_applied_and_unauthenticated_ones_change_nothing(
    client: TestClient, http_ledger: Ledger
) -> None:
    body = raw(invoice("E-1", "C-1", "INV-1", "10.00"))
    now = int(time.time())
    good = {"X-Relance-Timestamp": str(now), "X-Relance-Signature": signature(SECRET, now, body)}
    refused = [
        {},
        {"Authorization": "Bearer " + "x" * 32},
        {**good, "X-Relance-Signature": signature(OTHER_SECRET[::-1], now, body)},
        {
            "X-Relance-Timestamp": str(now - 600),
            "X-Relance-Signature": signature(SECRET, now - 600, body),
        },
    ]
    for headers in refused:
        answer = client.post(ingest.PATH, content=body, headers=headers)
        assert answer.status_code == 401, headers
    assert http_ledger.read_stream(TENANT, "C-1") == []
    applied = client.post(ingest.PATH, content=body, headers=good)
    assert applied.status_code == 200, applied.text
    assert applied.json()["applied"] == ["E-1"]
    # a message for another tenant, signed with this tenant's secret, is refused and stays out of both
    foreign = raw({**invoice("E-2", "C-1", "INV-2", "10.00"), "tenant": OTHER_TENANT})
    signed = {"X-Relance-Timestamp": str(now), "X-Relance-Signature": signature(SECRET, now, foreign)}
    answer = client.post(ingest.PATH, content=foreign, headers=signed).json()
    assert [r["kind"] for r in answer["refused"]] == ["wrong_tenant"]
    assert http_ledger.read_stream(OTHER_TENANT, "C-1") == []
    assert [e.event_id for e in http_ledger.read_stream(TENANT, "C-1")] == ["E-1"]


def test_a_ledger_out_of_reach_is_503_saying_to_send_again() -> None:
    app = FastAPI()
    down = Ledger(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", pool_pre_ping=False))
    app.include_router(
        ingest.make_router(
            secrets={TENANT: SecretStr(SECRET)},
            ingest=http_ingest_port(MAX_MESSAGE_BYTES),
            ledger=lambda: down,
            now=lambda: datetime.now(UTC),
            max_body_bytes=1 << 20,
        )
    )
    answer = TestClient(app).post(ingest.PATH, content=raw(invoice("E-1", "C-1", "INV-1", "1.00")), headers=bearer())
    assert answer.status_code == 503
    assert "send the same body again" in answer.json()["detail"]
    assert answer.headers["Retry-After"]
