"""`relance publish FILE.jsonl` against a real RabbitMQ (and, end to end, the worker and PostgreSQL)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pika
import pytest

from services.ingest.publish import EX_NOINPUT, EX_UNAVAILABLE, describe_line, publish_file
from shared.config import load_settings
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from tests.servers import PrivateRabbitMQ
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def invoice(event_id: str, customer: str = "C-1", amount: str = "100.00") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "invoice.issued",
        "tenant": "acme-fr",
        "customer_id": customer,
        "occurred_at": "2026-11-02T09:15:00Z",
        "data": {
            "invoice_id": f"INV-{event_id}",
            "number": f"F-{event_id}",
            "issue_date": "2026-10-01",
            "due_date": "2026-10-31",
            "currency": "EUR",
            "amount": amount,
        },
    }


def queued(amqp_url: str, queue: str) -> list[tuple[pika.spec.Basic.GetOk, pika.BasicProperties, bytes]]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    messages = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        messages.append((method, properties, body))
    connection.close()
    return messages


def test_every_non_blank_line_is_published_with_confirms_and_reported(
    tmp_path: Path, amqp_url: str, amqp_names: Any
) -> None:
    # Given a JSON Lines file with valid events, a blank line and a line that is not JSON
    lines = [json.dumps(invoice("E-1")), "", json.dumps(invoice("E-2")), "oops, not json", "   "]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out, err = io.StringIO(), io.StringIO()
    settings = load_settings(amqp_url=amqp_url, **amqp_names.settings())

    # When it is published
    status = publish_file(settings, path, out=out, err=err)

    # Then it succeeds and says so, naming the line that is not JSON
    assert status == 0
    assert f"published 3 messages (confirmed) to exchange {amqp_names.exchange}" in out.getvalue()
    assert "line 4: not valid JSON" in err.getvalue()
    # and the queue declared by relance holds the three messages, as they were, with their properties
    messages = queued(amqp_url, amqp_names.queue)
    assert [body for _, _, body in messages] == [lines[0].encode(), lines[2].encode(), b"oops, not json"]
    assert [method.routing_key for method, _, _ in messages] == ["invoice.issued", "invoice.issued", "unknown"]
    assert [properties.message_id for _, properties, _ in messages] == ["E-1", "E-2", None]
    assert all(p.delivery_mode == 2 and p.content_type == "application/json" for _, p, _ in messages)


def test_publish_reads_standard_input_through_the_command_line(amqp_url: str, amqp_names: Any) -> None:
    env = {
        **os.environ,
        "RELANCE_AMQP_URL": amqp_url,
        "RELANCE_EVENTS_EXCHANGE": amqp_names.exchange,
        "RELANCE_INGEST_QUEUE": amqp_names.queue,
        "RELANCE_DEAD_LETTER_QUEUE": amqp_names.dead_letter_queue,
    }
    stdin = "\n".join(json.dumps(invoice(f"E-{n}")) for n in range(5))
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli", "publish", "-"],
        input=stdin.encode(),
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    assert b"published 5 messages (confirmed)" in completed.stdout
    assert len(queued(amqp_url, amqp_names.queue)) == 5


def test_a_missing_file_and_an_unreachable_broker_are_clear_errors(tmp_path: Path, amqp_names: Any) -> None:
    err = io.StringIO()
    settings = load_settings(amqp_url="amqp://guest:guest@127.0.0.1:1/%2F", **amqp_names.settings())
    assert publish_file(settings, tmp_path / "missing.jsonl", out=io.StringIO(), err=err) == EX_NOINPUT
    assert "cannot read" in err.getvalue()

    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(invoice("E-1")) + "\n")
    err = io.StringIO()
    assert publish_file(settings, path, out=io.StringIO(), err=err) == EX_UNAVAILABLE
    assert "cannot connect to RabbitMQ" in err.getvalue()
    assert "guest:guest" not in err.getvalue()


def test_published_events_reach_the_ledger_through_a_worker(
    tmp_path: Path, amqp_url: str, amqp_names: Any, pg_url: str
) -> None:
    # Given a file published with relance publish, including a duplicate and an invalid line
    path = tmp_path / "events.jsonl"
    rows = [invoice("E-1", amount="100.00"), invoice("E-2", amount="50.00"), invoice("E-1", amount="100.00")]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n{broken\n")
    settings = load_settings(amqp_url=amqp_url, database_url=pg_url, ingest_batch_ms=20, **amqp_names.settings())
    assert publish_file(settings, path, out=io.StringIO(), err=io.StringIO()) == 0

    # When a worker runs in this process (on its own thread and connection) until the queue is drained
    from services.ingest.worker import run

    stop = threading.Event()
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(run(settings, stop=stop)))
    thread.start()
    ledger = Ledger(make_engine(pg_url))
    probe = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = probe.channel()

    def dead_lettered() -> int:
        return int(channel.queue_declare(amqp_names.dead_letter_queue, passive=True).method.message_count)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(ledger.read_stream("acme-fr", "C-1")) < 2 or dead_lettered() < 1):
        time.sleep(0.1)
    probe.close()
    stop.set()
    thread.join(30)

    # Then the two distinct events are in the ledger once, and the broken line is dead-lettered
    assert outcome == [0]
    assert [e.event_id for e in ledger.read_stream("acme-fr", "C-1")] == ["E-1", "E-2"]
    ledger.engine.dispose()
    dead = queued(amqp_url, amqp_names.dead_letter_queue)
    assert [(p.headers["x-relance-kind"], body) for _, p, body in dead] == [("not_json", b"{broken")]
    assert queued(amqp_url, amqp_names.queue) == []


def test_describe_line_picks_routing_key_and_message_id() -> None:
    assert describe_line(json.dumps(invoice("E-1")).encode()) == ("invoice.issued", "E-1", None)
    assert describe_line(b'{"event_type": 3}') == ("unknown", None, None)
    assert describe_line(b"[1]") == ("unknown", None, None)
    routing_key, message_id, problem = describe_line(b"{nope")
    assert (routing_key, message_id) == ("unknown", None)
    assert problem and problem.startswith("not valid JSON")


def test_describe_line_reports_a_duplicated_key_and_never_routes_on_either_value() -> None:
    # Given a line whose event_type appears twice (the ingest worker will dead-letter it as schema)
    line = b'{"event_id": "E-1", "event_type": "invoice.issued", "event_type": "payment.received"}'
    # Then it is described from its other keys only, and the problem names the key
    routing_key, message_id, problem = describe_line(line)
    assert (routing_key, message_id) == ("unknown", "E-1")
    assert problem and problem.startswith('event_type: duplicate key "event_type"')
    # And nesting beyond relance's limit is reported as not JSON, without a recursion error
    routing_key, message_id, problem = describe_line(b"[" * 100_000 + b"]" * 100_000)
    assert problem and problem.startswith("not valid JSON (JSON nested deeper")


# ---------------------------------------------------------------------------------------------------- confirms
def write_invoices(path: Path, count: int) -> list[str]:
    ids = [f"E-{n:05d}" for n in range(count)]
    path.write_text(
        "".join(json.dumps(invoice(event_id, customer=f"C-{n % 50}")) + "\n" for n, event_id in enumerate(ids))
    )
    return ids


def test_a_connection_cut_mid_publish_loses_no_line_and_the_report_names_what_was_published_again(
    tmp_path: Path, amqp_url: str, amqp_names: Any
) -> None:
    # Given 3,000 lines, and a network between relance and RabbitMQ that breaks twice in the middle of the stream
    path = tmp_path / "events.jsonl"
    ids = write_invoices(path, 3000)
    host, port = pika.URLParameters(amqp_url).host, pika.URLParameters(amqp_url).port
    with TcpProxy(host, port, cut_every_bytes=250_000, cuts=2) as proxy:
        settings = load_settings(amqp_url=proxy.url(amqp_url), retry_max_seconds=0.2, **amqp_names.settings())
        out, err = io.StringIO(), io.StringIO()
        # When the file is published
        status = publish_file(settings, path, out=out, err=err)
        assert proxy.cuts_done == 2
    # Then every line reached the queue at least once, and the command succeeded saying all were confirmed
    assert status == 0, err.getvalue()
    assert "published 3000 messages (confirmed)" in out.getvalue()
    delivered = [properties.message_id for _, properties, _ in queued(amqp_url, amqp_names.queue)]
    assert set(delivered) == set(ids)
    # And the lines published again are said, as what may now be in the queue twice (never more than a window)
    assert "2 lost connection(s)" in err.getvalue()
    assert "published again" in err.getvalue() and "deduplicates them by event_id" in err.getvalue()
    assert len(delivered) - len(ids) <= 2 * settings.publish_window


def test_a_line_the_broker_refuses_is_published_again_until_it_is_taken(
    tmp_path: Path, amqp_url: str, amqp_names: Any
) -> None:
    # Given an ingest queue that refuses publishes (nack) while it holds 2 messages, drained only after a while
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    arguments = {"x-max-length": 2, "x-overflow": "reject-publish"}
    connection.channel().queue_declare(amqp_names.queue, durable=True, arguments=arguments)
    connection.close()
    path = tmp_path / "events.jsonl"
    ids = write_invoices(path, 30)
    got: list[str] = []

    def consume() -> None:
        time.sleep(0.5)
        consumer = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = consumer.channel()
        deadline = time.monotonic() + 60
        while len(got) < len(ids) and time.monotonic() < deadline:
            method, properties, _ = channel.basic_get(amqp_names.queue, auto_ack=True)
            if method is None:
                time.sleep(0.01)
            else:
                got.append(properties.message_id)
        consumer.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    settings = load_settings(amqp_url=amqp_url, publish_window=5, retry_max_seconds=0.5, **amqp_names.settings())
    err = io.StringIO()
    # When the file is published
    status = publish_file(settings, path, out=io.StringIO(), err=err)
    consumer.join(70)
    # Then the refused lines were published again, and every line was taken exactly once (a nacked one never was)
    assert status == 0, err.getvalue()
    assert "refused" in err.getvalue() and "they were published again" in err.getvalue()
    assert sorted(got) == ids


def test_a_broker_killed_and_restarted_mid_publish_loses_no_line(
    tmp_path: Path, private_rabbitmq: PrivateRabbitMQ, amqp_names: Any
) -> None:
    # Given 6,000 lines being published to a RabbitMQ of this test alone
    path = tmp_path / "events.jsonl"
    ids = write_invoices(path, 6000)
    broker = private_rabbitmq
    settings = load_settings(amqp_url=broker.url, retry_max_seconds=0.5, **amqp_names.settings())
    err = io.StringIO()
    result: list[int] = []
    publishing = threading.Thread(
        target=lambda: result.append(publish_file(settings, path, out=io.StringIO(), err=err))
    )
    publishing.start()

    def depth() -> int:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(broker.url))
        except pika.exceptions.AMQPError:
            return 0
        try:
            return int(connection.channel().queue_declare(amqp_names.queue, passive=True).method.message_count)
        except pika.exceptions.AMQPError:
            return 0
        finally:
            if connection.is_open:
                connection.close()

    # When the broker is killed (SIGKILL) once some of them are in the queue, and started again on the same data
    deadline = time.monotonic() + 60
    while depth() < 500 and time.monotonic() < deadline and publishing.is_alive():
        time.sleep(0.02)
    assert publishing.is_alive(), "the publish ended before the broker could be killed"
    broker.kill()
    broker.start()
    publishing.join(180)
    # Then the publish succeeds, and every line is in the durable queue, once or (if it was in flight) twice
    assert result == [0], err.getvalue()
    assert "1 lost connection(s)" in err.getvalue()
    delivered = [properties.message_id for _, properties, _ in queued(broker.url, amqp_names.queue)]
    assert set(delivered) == set(ids)
    assert len(delivered) - len(ids) <= settings.publish_window
