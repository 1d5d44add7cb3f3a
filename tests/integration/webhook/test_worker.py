"""The webhook adapter: ERP commands POSTed, signed, to a real HTTP server; retried, dead-lettered, re-armed.

Real PostgreSQL and a real ``http.server.ThreadingHTTPServer`` on 127.0.0.1 (RabbitMQ for the relay's part). The
receiver records every request it gets and answers what each test tells it to.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
import structlog
from sqlalchemy import Engine, update

from services.cli import main
from services.relay.worker import Relay
from services.webhook.worker import DEAD_LETTERED, TASK_KIND, fact_id, run, verify_signature
from shared.config import Settings, load_settings
from shared.ledger.db import make_engine
from shared.ledger.outbox import claim
from shared.ledger.schema import outbox
from shared.ledger.store import Ledger
from shared.ledger.tasks import task_views
from tests.integration.relay.test_worker import (  # noqa: F401 (broker: a fixture)
    TENANT,
    Broker,
    blocked,
    broker,
    outbox_rows,
    reminder,
    unblocked,
    wait_until,
)

pytestmark = pytest.mark.integration

SECRET = "webhook-test-secret-0123456789"


# ---------------------------------------------------------------------------------------------------- the receiver
@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int  # what the receiver answered

    @property
    def command_id(self) -> str:
        return self.headers["X-Relance-Command-Id"]


@dataclass
class Receiver:
    """A real HTTP server in a thread. ``answer`` gives the status for each request (the requests before it known)."""

    answer: Callable[[str, list[Request]], int] = lambda command_id, earlier: 200
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: http.server.ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/relance/commands"

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    earlier = list(receiver.requests)
                    status = receiver.answer(self.headers.get("X-Relance-Command-Id", ""), earlier)
                    receiver.requests.append(
                        Request("POST", self.path, dict(self.headers.items()), body, time.monotonic(), status)
                    )
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else f"refused with {status}\nsee logs".encode())

            def do_GET(self) -> None:
                with receiver._lock:
                    receiver.requests.append(Request("GET", self.path, dict(self.headers.items()), b"", 0, 404))
                self.send_error(404)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def of(self, command_id: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.command_id == command_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url, pool_size=5)
    yield engine
    engine.dispose()


# ---------------------------------------------------------------------------------------------------- helpers
def webhook_settings(database_url: str, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "erp_transport": "webhook",
        "webhook_url": url,
        "webhook_secret": SECRET,
        "webhook_timeout": 2,
        "webhook_backoff_seconds": 0.04,
        "webhook_backoff_max_seconds": 0.2,
        "relay_poll_ms": 20,
        "retry_max_seconds": 0.2,
        **overrides,
    }
    return load_settings(**values)


@contextmanager
def webhook_workers(settings: Settings, count: int = 1) -> Iterator[None]:
    """``count`` webhook workers, each started as `relance worker webhook` starts one, stopped on leaving."""
    stop = threading.Event()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(run(settings, stop=stop))) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
    assert results == [0] * count


def rows(engine: Engine) -> dict[str, dict[str, Any]]:
    return {row["command_id"]: row for row in outbox_rows(engine)}


def erp_settled(engine: Engine) -> bool:
    """Every erp.* command delivered or dead-lettered."""
    erp = [r for r in outbox_rows(engine) if r["kind"].startswith("erp.")]
    return all(r["published_at"] is not None or r["dead_at"] is not None for r in erp)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


# ---------------------------------------------------------------------------------------------------- delivery
def test_each_erp_command_is_posted_once_signed_with_the_bytes_the_relay_would_publish(
    pg_url: str, engine: Engine, receiver: Receiver
) -> None:
    Ledger(engine).record([blocked("C-1"), unblocked("C-1"), blocked("C-2"), reminder("C-3")])
    # When a webhook worker runs until the ERP's commands are out (and a little longer)
    with webhook_workers(webhook_settings(pg_url, receiver.url)):
        wait_until(lambda: erp_settled(engine))
        time.sleep(0.2)
    # Then the receiver got each ERP command once, a customer's in order, and no reminder
    got = [r.command_id for r in receiver.requests]
    assert sorted(got) == ["block-C-1-1", "block-C-2-1", "unblock-C-1-1"]
    assert got.index("block-C-1-1") < got.index("unblock-C-1-1")
    outbox_now = rows(engine)
    for request in receiver.requests:
        row = outbox_now[request.command_id]
        # the same bytes the relay publishes, with the headers of the scheme, and a signature that verifies
        assert (request.method, request.path) == ("POST", "/relance/commands")
        assert request.body == orjson.dumps(row["payload"]) and orjson.loads(request.body)["command"] == row["kind"]
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["X-Relance-Command"] == row["kind"]
        timestamp = request.headers["X-Relance-Timestamp"]
        assert abs(int(timestamp) - time.time()) < 60
        assert request.headers["X-Relance-Signature"].startswith("sha256=")
        assert verify_signature(SECRET, timestamp, request.body, request.headers["X-Relance-Signature"])
        assert not verify_signature(
            "not-the-secret-0123456", timestamp, request.body, request.headers["X-Relance-Signature"]
        )
        assert row["published_at"] is not None and row["attempts"] == 1 and row["dead_at"] is None
    # And the reminder was left to the relay and the notifier
    assert outbox_now["reminder-C-3"]["published_at"] is None and outbox_now["reminder-C-3"]["attempts"] == 0


def test_a_receiver_failing_three_times_then_accepting_gets_the_command_with_each_attempt_counted(
    pg_url: str, engine: Engine, receiver: Receiver
) -> None:
    receiver.answer = lambda command_id, earlier: 503 if len(earlier) < 3 else 200
    Ledger(engine).record([blocked("C-1")])
    with webhook_workers(webhook_settings(pg_url, receiver.url)):
        wait_until(lambda: erp_settled(engine))
    # Then it was delivered on the fourth attempt, each try waiting longer than the one before
    assert [r.status for r in receiver.of("block-C-1-1")] == [503, 503, 503, 200]
    row = rows(engine)["block-C-1-1"]
    assert row["published_at"] is not None and row["attempts"] == 4 and row["dead_at"] is None
    assert row["last_error"] == "HTTP 503: refused with 503 see logs"
    times = [r.at for r in receiver.requests]
    assert times[-1] - times[0] >= 0.02 + 0.04 + 0.08  # at least half of each capped, doubling delay


def test_a_refusal_or_a_redirect_is_retried_and_logged_as_the_receivers_misconfiguration(
    pg_url: str, engine: Engine, receiver: Receiver
) -> None:
    answers = iter([401, 302, 200])
    receiver.answer = lambda command_id, earlier: next(answers)
    Ledger(engine).record([blocked("C-1")])
    with structlog.testing.capture_logs() as logs, webhook_workers(webhook_settings(pg_url, receiver.url)):
        wait_until(lambda: erp_settled(engine))
    # Then the redirect was not followed (no GET, no second address), and the command went out on the third POST
    assert [(r.method, r.path, r.status) for r in receiver.requests] == [
        ("POST", "/relance/commands", 401),
        ("POST", "/relance/commands", 302),
        ("POST", "/relance/commands", 200),
    ]
    assert rows(engine)["block-C-1-1"]["attempts"] == 3
    refused = [e for e in logs if e["event"] == "webhook.refused"]
    assert [e["error"].split(":")[0] for e in refused] == ["HTTP 401", "HTTP 302 to /elsewhere"]
    assert all("shared secret" in e["hint"] for e in refused)


def test_commands_wait_while_the_receiver_is_down_and_all_arrive_once_it_is_up(pg_url: str, engine: Engine) -> None:
    # Given a receiver that is not listening (its port refuses connections)
    receiver = Receiver()
    receiver.start()
    receiver.stop()
    Ledger(engine).record([blocked("C-1"), unblocked("C-1"), blocked("C-2")])
    settings = webhook_settings(pg_url, receiver.url, webhook_max_attempts=1000)
    with webhook_workers(settings):
        wait_until(lambda: all(r["attempts"] >= 2 for r in outbox_rows(engine) if r["command_id"].startswith("block")))
        # Then nothing is marked delivered meanwhile, and the errors say why
        assert not any(r["published_at"] for r in outbox_rows(engine))
        assert rows(engine)["block-C-1-1"]["last_error"].startswith("unreachable: ")
        # When the receiver comes up on its address
        receiver.start()
        try:
            wait_until(lambda: erp_settled(engine))
        finally:
            receiver.stop()
    # Then every command arrived, once, a customer's in order
    assert sorted(r.command_id for r in receiver.requests) == ["block-C-1-1", "block-C-2-1", "unblock-C-1-1"]
    c1 = [r.command_id for r in receiver.requests if r.command_id.endswith("C-1-1")]
    assert c1 == ["block-C-1-1", "unblock-C-1-1"]
    assert all(r["published_at"] is not None and r["dead_at"] is None for r in outbox_rows(engine))


def test_two_workers_keep_each_customers_order_through_failures(
    pg_url: str, engine: Engine, receiver: Receiver
) -> None:
    # Given 12 customers each blocked then unblocked, and a receiver that fails the first try of every block
    customers = [f"C-{n:02d}" for n in range(12)]
    ledger = Ledger(engine)
    ledger.record([blocked(c) for c in customers])
    ledger.record([unblocked(c) for c in customers])
    receiver.answer = lambda command_id, earlier: (
        503 if command_id.startswith("block") and not any(r.command_id == command_id for r in earlier) else 200
    )
    with webhook_workers(webhook_settings(pg_url, receiver.url, relay_batch_size=5), count=2):
        wait_until(lambda: erp_settled(engine), seconds=30)
    # Then each unblock reached the receiver only after its block was accepted
    for c in customers:
        got = [(r.command_id, r.status) for r in receiver.requests if r.command_id.endswith(f"{c}-1")]
        assert got == [(f"block-{c}-1", 503), (f"block-{c}-1", 200), (f"unblock-{c}-1", 200)], got
    assert all(r["published_at"] is not None for r in outbox_rows(engine))


# ---------------------------------------------------------------------------------------------------- dead letters
def test_a_command_never_accepted_is_dead_lettered_with_a_task_and_can_be_rearmed_only_when_safe(
    pg_url: str, engine: Engine, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = {"block-C-1-1", "block-C-2-1"}
    receiver.answer = lambda command_id, earlier: 500 if command_id in failing else 200
    ledger = Ledger(engine)
    ledger.record([blocked("C-1"), unblocked("C-1"), blocked("C-2")])
    settings = webhook_settings(pg_url, receiver.url, webhook_max_attempts=3)
    today = datetime.now(UTC).date().isoformat()

    # When the worker runs against a receiver that always fails C-1's and C-2's blocks
    with webhook_workers(settings):
        wait_until(lambda: erp_settled(engine))
    # Then each was tried 3 times and dead-lettered with its last error; C-1's later unblock was still delivered
    assert len(receiver.of("block-C-1-1")) == 3 and len(receiver.of("block-C-2-1")) == 3
    state = rows(engine)
    for command_id in failing:
        assert state[command_id]["dead_at"] is not None and state[command_id]["published_at"] is None
        assert state[command_id]["attempts"] == 3 and state[command_id]["last_error"].startswith("HTTP 500")
    assert state["unblock-C-1-1"]["published_at"] is not None
    assert receiver.requests.index(receiver.of("unblock-C-1-1")[0]) > receiver.requests.index(
        receiver.of("block-C-1-1")[-1]
    )
    # And the customer's stream says so, with a task for the collector, in a chain that still verifies
    stream = ledger.read_stream(TENANT, "C-1")
    dead = [e for e in stream if e.event_type == DEAD_LETTERED]
    assert [e.data for e in dead] == [
        {
            "command_id": "block-C-1-1",
            "command": "erp.credit_block",
            "attempts": 3,
            "last_error": state["block-C-1-1"]["last_error"],
        }
    ]
    task = ledger.state(TENANT, "C-1").tasks[fact_id("block-C-1-1", "task")]
    assert task["kind"] == TASK_KIND and task["due_on"] == today and task["command"] == "erp.credit_block"
    assert ledger.verify(TENANT).ok
    # And the agenda shows C-2's task; C-1's closed by itself, its block lifted since (the unblock was delivered)
    status, out, _ = cli(["agenda", "--tenant", TENANT, "--date", today, "--database-url", pg_url], capsys)
    assert status == 0
    lines = [line for line in out.splitlines() if "ERP did not receive credit block" in line]
    assert sorted(line.split()[2] for line in lines) == ["C-2"], out
    closed = [v for v in task_views(ledger.state(TENANT, "C-1"), date.fromisoformat(today)) if v.kind == TASK_KIND]
    assert [(v.status, v.cause) for v in closed] == [("closed", "block lifted")]
    # And `relance outbox list --dead` lists them with their attempts and last error; nothing is pending
    status, out, _ = cli(["outbox", "list", "--dead", "--database-url", pg_url], capsys)
    assert status == 0 and out.startswith("2 dead-lettered command(s)")
    assert "block-C-1-1" in out and "attempts 3" in out and "last error: HTTP 500" in out
    status, out, _ = cli(["outbox", "list", "--database-url", pg_url], capsys)
    assert status == 0 and out.startswith("0 pending command(s)")

    # When someone asks to send C-1's block again: refused, its unblock was delivered since
    status, _, err = cli(["outbox", "retry", "--command-id", "block-C-1-1", "--database-url", pg_url], capsys)
    assert status == 1 and "unblock-C-1-1" in err and "must not be sent again" in err
    assert rows(engine)["block-C-1-1"]["dead_at"] is not None
    # And a command that is not dead, or does not exist, is not re-armed either
    status, _, err = cli(["outbox", "retry", "--command-id", "unblock-C-1-1", "--database-url", pg_url], capsys)
    assert status == 1 and "was delivered" in err
    status, _, err = cli(["outbox", "retry", "--command-id", "nope", "--database-url", pg_url], capsys)
    assert status == 1 and "no command 'nope'" in err

    # When C-2's block is re-armed while the receiver still fails: it is dead-lettered again, a second fact
    status, out, _ = cli(["outbox", "retry", "--command-id", "block-C-2-1", "--database-url", pg_url], capsys)
    assert status == 0 and "pending again" in out
    assert (rows(engine)["block-C-2-1"]["dead_at"], rows(engine)["block-C-2-1"]["attempts"]) == (None, 0)
    with webhook_workers(settings):
        wait_until(lambda: rows(engine)["block-C-2-1"]["dead_at"] is not None)
    events_c2 = ledger.read_stream(TENANT, "C-2")
    assert [e.event_type for e in events_c2].count(DEAD_LETTERED) == 2
    assert len(ledger.state(TENANT, "C-2").tasks) == 1  # one task per command, however often it died
    # When it is re-armed once the receiver is fixed: delivered
    failing.clear()
    assert cli(["outbox", "retry", "--command-id", "block-C-2-1", "--database-url", pg_url], capsys)[0] == 0
    with webhook_workers(settings):
        wait_until(lambda: rows(engine)["block-C-2-1"]["published_at"] is not None)
    assert [r.status for r in receiver.of("block-C-2-1")] == [500] * 6 + [200]
    assert rows(engine)["block-C-2-1"]["attempts"] == 1


# ---------------------------------------------------------------------------------------------------- the outbox
def test_a_command_waiting_for_its_next_attempt_holds_back_the_customers_later_ones(ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    Ledger(engine).record([blocked("C-1"), unblocked("C-1"), blocked("C-2")])
    later = datetime(2099, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.command_id == "block-C-1-1").values(next_attempt_at=later))
    kinds = ("erp.credit_block", "erp.credit_unblock")
    with engine.begin() as conn:
        assert [c.command_id for c in claim(conn, 10, kinds)] == ["block-C-2-1"]
    with engine.begin() as conn:
        assert [c.command_id for c in claim(conn, 10, kinds, now=later)] == ["block-C-1-1", "block-C-2-1"]
    engine.dispose()


def test_the_relay_leaves_erp_commands_to_the_webhook(
    pg_url: str,
    engine: Engine,
    broker: Broker,  # noqa: F811 (the fixture imported above)
) -> None:
    Ledger(engine).record([blocked("C-1"), reminder("C-1")])
    settings = broker.settings(
        pg_url, erp_transport="webhook", webhook_url="http://127.0.0.1:9/x", webhook_secret=SECRET
    )
    relay = Relay(settings, engine, threading.Event())
    with relay.connected():
        assert relay.publish_round() == 1
    # Then only the reminder went out on AMQP; the block waits, untouched, for the webhook worker
    assert broker.drain(broker.erp_queue) == []
    assert [p.message_id for _, p, _ in broker.drain(broker.notifier_queue)] == ["reminder-C-1"]
    block = rows(engine)["block-C-1-1"]
    assert block["published_at"] is None and block["attempts"] == 0
