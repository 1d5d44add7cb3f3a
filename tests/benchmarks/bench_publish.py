"""Publishers with confirms: ``relance publish`` and the relay, each next to a pipelined pika publisher, same run.

    python -m tests.benchmarks.bench_publish [--invoices 5000] [--customers 500] [--rounds 3]

Everything is durable: topic exchanges, durable queues, persistent messages, publisher confirms, ``mandatory``.
The baseline is the smallest pipelined publisher pika allows (the ERP simulator's: a ``SelectConnection`` keeping
``RELANCE_PUBLISH_WINDOW`` messages in flight, all in pika's callbacks), publishing the same bytes with the same
routing keys to the same exchange. Rounds alternate baseline and relance; each figure is the median of its rounds.

- **publish**: a file of ``--invoices`` valid v1 ERP lines (the ERP simulator's, invalid ones left out), published
  by ``relance publish FILE`` as a subprocess. Its rate is timed from its first message in the queue (a probe polls
  the queue's depth) to its summary line (printed once every message is confirmed), so Python's start-up and exit
  and the connection are left out; the baseline is timed from its first message to its last confirm. The whole
  command's wall time is printed too.
- **relay**: ``--invoices`` outbox rows written through the ledger (a credit block and its unblock for
  ``--invoices / 2`` customers, the unblock eligible only once the block is published), published by the relay's own
  rounds in this process, with its JSON logging on, until every row is marked published; the baseline publishes the
  same number of commands of the same bodies and routing keys.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select

from services.ingest.publish import describe_line
from services.ingest.topology import declare_topology
from services.relay.worker import Relay
from shared.broker.amqp import connect
from shared.config import Settings, load_settings
from shared.ledger.db import make_engine
from shared.ledger.outbox import claim
from shared.ledger.schema import outbox
from shared.ledger.store import Incoming, Ledger
from shared.logging import configure_logging
from tests.benchmarks import common
from tests.e2e.erp_simulator import Message, generate, publish

TARGET_RATIO = 0.5
TARGET = ">= 0.5 of a pipelined publisher"
AS_OF = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------- helpers
class DepthProbe:
    """Polls a queue's depth on a connection of its own; notes when the first message arrived."""

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.first: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DepthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        def poll(channel: Any) -> None:
            while not self._stop.is_set() and self.first is None:
                if channel.queue_declare(self.queue, passive=True).method.message_count:
                    self.first = time.perf_counter()
                    return
                time.sleep(0.002)

        common.on_broker(self.amqp_url, poll)


def purge(amqp_url: str, queue: str) -> None:
    common.on_broker(amqp_url, lambda channel: channel.queue_purge(queue))


def depth(amqp_url: str, queue: str) -> int:
    return int(common.on_broker(amqp_url, lambda ch: ch.queue_declare(queue, passive=True).method.message_count))


def timed_from_first_message(amqp_url: str, queue: str, action: Callable[[], float | None]) -> tuple[float, float]:
    """(seconds from the first message in ``queue`` to the last confirm, seconds of the whole action).

    ``action`` returns when its last confirm came (None: when it returns)."""
    purge(amqp_url, queue)
    began = time.perf_counter()
    with DepthProbe(amqp_url, queue) as probe:
        confirmed = action()
        ended = time.perf_counter()
    first = probe.first if probe.first is not None else began
    return (confirmed or ended) - first, ended - began


def median_rate(count: int, seconds: list[float]) -> float:
    return count / statistics.median(seconds)


# ---------------------------------------------------------------------------------------------------- publish
def baseline_publish(messages: list[Message], amqp_url: str, exchange: str, window: int) -> None:
    """The pipelined publisher, returning once its last message is confirmed."""
    publish(messages, amqp_url, exchange, window=window)


def run_publish(command: list[str], env: dict[str, str]) -> float:
    """Run ``relance publish``; when its summary (printed once every message is confirmed) came out."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        confirmed = 0.0
        for line in process.stdout:
            if line.startswith(b"published "):
                confirmed = time.perf_counter()
        if process.wait(timeout=600) != 0 or not confirmed:
            errors.seek(0)
            raise SystemExit(f"relance publish failed: {errors.read().decode()[-2000:]}")
    return confirmed


def erp_lines(count: int, customers: int) -> list[Message]:
    scenario = generate(count + count // 5 + 50, customers=customers, prefix="bench")
    invalid = {item.key for item in scenario.invalid}
    valid = [m for m in scenario.all_messages() if m.message_id not in invalid and describe_line(m.body)[2] is None]
    return valid[:count]


def bench_publish(args: argparse.Namespace, amqp_url: str) -> None:
    names = common.bench_names()
    values = {"events_exchange": f"{names}.events", "ingest_queue": f"{names}.ingest"}
    values["dead_letter_queue"] = f"{names}.dead"
    settings = load_settings(amqp_url=amqp_url, **values)
    connection = connect(settings, "bench")
    declare_topology(connection, settings)
    connection.close()
    messages = erp_lines(args.invoices, args.customers)
    env = {**os.environ, "RELANCE_AMQP_URL": amqp_url, **{f"RELANCE_{k.upper()}": v for k, v in values.items()}}
    env["RELANCE_LOG_FORMAT"] = "json"
    baseline: list[float] = []
    relance: list[float] = []
    whole: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "events.jsonl"
            path.write_bytes(b"".join(m.body + b"\n" for m in messages))
            command = [sys.executable, "-m", "services.cli", "publish", str(path)]
            for round_ in range(1, args.rounds + 1):
                seconds, _ = timed_from_first_message(
                    amqp_url,
                    settings.ingest_queue,
                    lambda: baseline_publish(messages, amqp_url, settings.events_exchange, settings.publish_window),
                )
                baseline.append(seconds)
                seconds, total = timed_from_first_message(
                    amqp_url, settings.ingest_queue, lambda: run_publish(command, env)
                )
                queued = depth(amqp_url, settings.ingest_queue)
                if queued < len(messages):
                    raise SystemExit(f"relance publish left {queued} of {len(messages)} messages in the queue")
                relance.append(seconds)
                whole.append(total)
                print(
                    f"  round {round_}: baseline {len(messages) / baseline[-1]:,.0f}/s, relance publish "
                    f"{len(messages) / seconds:,.0f}/s from its first message ({len(messages) / total:,.0f}/s "
                    "for the whole command)",
                    flush=True,
                )
    finally:
        common.delete_broker_names(
            amqp_url,
            [settings.ingest_queue, settings.dead_letter_queue],
            [settings.events_exchange],
        )
    value, base = median_rate(len(messages), relance), median_rate(len(messages), baseline)
    detail = {"lines": len(messages), "whole_command_per_s": round(median_rate(len(messages), whole), 1)}
    detail["window"] = settings.publish_window
    common.report(
        common.Figure("publish", value, "messages/s", base, TARGET, value >= TARGET_RATIO * base, detail=detail)
    )


# ---------------------------------------------------------------------------------------------------- relay
def block(customer: str) -> Incoming:
    data = {"block_id": f"B-{customer}", "reason": "credit_limit", "overdue": {"EUR": "12500.00"}}
    data |= {"credit_limit": {"amount": "10000.00", "currency": "EUR"}, "as_of": AS_OF.isoformat()}
    return Incoming("bench", customer, f"block-{customer}", "credit.blocked", data, AS_OF)


def unblock(customer: str) -> Incoming:
    data = {"block_id": f"B-{customer}", "reason": "paid", "as_of": AS_OF.isoformat()}
    return Incoming("bench", customer, f"unblock-{customer}", "credit.unblocked", data, AS_OF)


def fill_outbox(ledger: Ledger, customers: int) -> None:
    names = [f"C-{n:06d}" for n in range(customers)]
    for make in (block, unblock):
        for start in range(0, customers, 1000):
            ledger.record([make(c) for c in names[start : start + 1000]])


def outbox_messages(engine: Any) -> list[Message]:
    """What the relay will publish, as the baseline publishes it: same bodies, same routing keys."""
    with engine.begin() as conn:
        rows = conn.execute(select(outbox.c.kind, outbox.c.payload, outbox.c.command_id).order_by(outbox.c.id))
        return [Message(kind, orjson.dumps(payload), command_id) for kind, payload, command_id in rows]


@contextlib.contextmanager
def commands_queue(amqp_url: str, exchange: str) -> Iterator[str]:
    queue = f"{exchange}.all"

    def declare(channel: Any) -> None:
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key="#")

    common.on_broker(amqp_url, declare)
    try:
        yield queue
    finally:
        common.delete_broker_names(amqp_url, [queue], [exchange])


def reset_outbox(engine: Any) -> None:
    with engine.begin() as conn:
        conn.execute(outbox.update().values(published_at=None, attempts=0))


def relay_until_published(settings: Settings, engine: Any, count: int) -> None:
    relay = Relay(settings, engine, threading.Event())
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull), relay.connected():
        while relay.totals.published < count:
            relay.publish_round()
    with engine.begin() as conn:
        left = conn.execute(select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))).scalar()
        assert left == 0 and not claim(conn, 1), f"{left} commands left unpublished"


def bench_relay(args: argparse.Namespace, amqp_url: str, admin_url: str) -> None:
    exchange = f"{common.bench_names()}.commands"
    customers = max(1, args.invoices // 2)
    configure_logging("info", "json")
    with common.temp_database(admin_url, "publish") as url, commands_queue(amqp_url, exchange) as queue:
        database_url = common.sqlalchemy_url(url)
        settings = load_settings(database_url=database_url, amqp_url=amqp_url, commands_exchange=exchange)
        engine = make_engine(database_url)
        try:
            fill_outbox(Ledger(engine), customers)
            messages = outbox_messages(engine)
            baseline: list[float] = []
            relance: list[float] = []
            for round_ in range(1, args.rounds + 1):
                purge(amqp_url, queue)
                began = time.perf_counter()
                publish(messages, amqp_url, exchange, window=settings.publish_window)
                baseline.append(time.perf_counter() - began)
                purge(amqp_url, queue)
                reset_outbox(engine)
                began = time.perf_counter()
                relay_until_published(settings, engine, len(messages))
                relance.append(time.perf_counter() - began)
                print(
                    f"  round {round_}: baseline {len(messages) / baseline[-1]:,.0f}/s, relay "
                    f"{len(messages) / relance[-1]:,.0f}/s ({len(messages)} commands, {customers} customers)",
                    flush=True,
                )
        finally:
            engine.dispose()
    value, base = median_rate(len(messages), relance), median_rate(len(messages), baseline)
    detail = {"commands": len(messages), "batch_size": settings.relay_batch_size, "window": settings.publish_window}
    common.report(
        common.Figure("relay", value, "commands/s", base, TARGET, value >= TARGET_RATIO * base, detail=detail)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    common.sizing(parser, customers=500, invoices=5000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of baseline then relance (3)")
    parser.add_argument("--only", choices=("publish", "relay"), help="one of the two figures")
    args = parser.parse_args(argv)
    admin_url, amqp_url = common.database_server(), common.broker_server()
    common.print_machine(common.machine_facts(admin_url, amqp_url))
    if args.only in (None, "publish"):
        bench_publish(args, amqp_url)
    if args.only in (None, "relay"):
        bench_relay(args, amqp_url, admin_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
