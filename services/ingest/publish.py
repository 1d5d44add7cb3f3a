"""``relance publish FILE.jsonl``: a small publisher of ERP events for integrators, with publisher confirms.

Every non-blank line is published as-is, one message per line, to the events exchange with routing key = the line's
``event_type`` (``unknown`` if it has none), ``message_id`` = its ``event_id``, persistent, ``application/json``.
Lines are deliberately not validated: integrators use this tool to see how relance answers bad input too, and the
ingest worker dead-letters what is invalid, with the reason. Lines that are not even JSON, or that relance's decoder
refuses (a duplicated key, nesting or numbers beyond its limits), are reported with their line number on stderr (and
published anyway).

Publishes are ``mandatory`` and confirmed, pipelined (:mod:`shared.broker.confirms`): up to
``RELANCE_PUBLISH_WINDOW`` messages are in flight, and "published N messages (confirmed)" means RabbitMQ has taken
responsibility for N messages, routed to at least one queue. What is not confirmed is handled, never dropped:

- **nacked** (the broker refused it): published again after a backoff, up to :data:`NACK_ATTEMPTS` times, then
  reported on stderr with its line number (exit status 1);
- **returned unroutable** (no queue bound for it): reported with its line number (exit status 1);
- **connection lost** (a broker restart, a network cut): relance reconnects with backoff for up to
  :data:`RECONNECT_SECONDS` and publishes again every message that was not confirmed yet. The broker may already
  hold some of them, so after a lost connection a line can be in the queue twice, never zero times: at-least-once,
  with the line's ``event_id`` as ``message_id`` so relance's ingest (which deduplicates by ``event_id``) applies it
  once. The summary names the lines published again. A message published again arrives after lines that followed
  it; relance orders events by the ledger, not by the queue.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pika
from pika.exceptions import AMQPError

from services.ingest.topology import declare_topology
from shared.broker.amqp import BROKER_LOST, close_connection, connect
from shared.broker.confirms import ConfirmingPublisher, Outcome, Outgoing, Settled, open_publisher
from shared.config import Settings
from shared.contracts import jsonio
from shared.runtime import Backoff

UNKNOWN_ROUTING_KEY = "unknown"
PROGRESS_EVERY_SECONDS = 2.0
NACK_ATTEMPTS = 8
RECONNECT_SECONDS = 120.0
_MAX_REPORTED = 20
EX_NOINPUT = 66
EX_UNAVAILABLE = 69


@dataclass
class PublishReport:
    published: int = 0
    blank: int = 0
    not_json: list[int] = field(default_factory=list)
    unroutable: list[int] = field(default_factory=list)
    nacked: list[int] = field(default_factory=list)  # refused NACK_ATTEMPTS times: not delivered
    resent: list[int] = field(default_factory=list)  # published again after a lost connection (maybe delivered twice)
    renacked: list[int] = field(default_factory=list)  # published again after a nack
    connections_lost: int = 0

    @property
    def ok(self) -> bool:
        return not self.unroutable and not self.nacked


class BrokerGone(Exception):
    """RabbitMQ stayed unreachable for :data:`RECONNECT_SECONDS` after the connection was lost."""


def publish_file(settings: Settings, path: Path, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Publish every non-blank line of ``path`` (``-`` for stdin); 0 if the broker confirmed them all."""
    out = out or sys.stdout
    err = err or sys.stderr
    exchange = settings.events_exchange
    report = PublishReport()
    line_number = 0
    with contextlib.ExitStack() as stack:
        try:
            source = stack.enter_context(_open(path))
        except OSError as exc:
            print(f"relance: cannot read {path}: {exc.strerror or exc}", file=err)
            return EX_NOINPUT
        try:
            publishing = _Publishing(settings, report, err)
        except AMQPError as exc:
            print(f"relance: cannot connect to RabbitMQ ({_safe_url(settings.amqp_url)}): {_describe(exc)}", file=err)
            return EX_UNAVAILABLE
        stack.callback(publishing.close)
        try:
            progress_at = time.monotonic()
            for line_number, line in _lines(source):
                if not line.strip():
                    report.blank += 1
                    continue
                routing_key, message_id, problem = describe_line(line)
                if problem:
                    report.not_json.append(line_number)
                    if len(report.not_json) <= _MAX_REPORTED:
                        print(f"line {line_number}: {problem}; published as-is (it will be dead-lettered)", file=err)
                properties = pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=message_id,
                    timestamp=int(time.time()),
                    app_id="relance-publish",
                )
                publishing.publish(Outgoing(line_number, exchange, routing_key, line, properties))
                if time.monotonic() - progress_at >= PROGRESS_EVERY_SECONDS:
                    progress_at = time.monotonic()
                    print(f"… {report.published} messages published (line {line_number})", file=err)
            publishing.finish()
        except BrokerGone as exc:
            print(
                f"relance: connection to RabbitMQ lost at line {line_number} and not regained: {exc}; "
                f"{report.published} messages were confirmed, the others were not",
                file=err,
            )
            return EX_UNAVAILABLE
    _summarise(report, exchange, out, err)
    return 0 if report.ok else 1


class _Publishing:
    """A pipelined publisher that publishes again what was nacked, and what was in flight when the connection was
    lost (after reconnecting), and keeps the report."""

    def __init__(self, settings: Settings, report: PublishReport, err: IO[str]) -> None:
        self.settings = settings
        self.report = report
        self.err = err
        self._attempts: dict[int, int] = {}
        self._nack_backoff = Backoff(settings.retry_max_seconds)
        self._publisher = self._open()

    def _open(self) -> ConfirmingPublisher:
        connection = connect(self.settings, "publish")
        try:
            declare_topology(connection, self.settings)
        finally:
            close_connection("publish", connection)
        return open_publisher(self.settings, "publish")

    def publish(self, message: Outgoing) -> None:
        self._send([message])

    def finish(self) -> None:
        """Wait until every message is settled, publishing again what was nacked or in flight on a lost connection."""
        while True:
            try:
                self._publisher.flush()
            except BROKER_LOST as exc:
                self._send(self._reconnect(exc))
                continue
            retry = self._take(self._publisher.settled())
            if not retry:
                return
            self._send(retry, delay=self._nack_backoff.next())

    def close(self) -> None:
        self._publisher.close()

    def _send(self, messages: list[Outgoing], delay: float = 0.0) -> None:
        """Publish ``messages`` (after ``delay`` seconds), and again any of them, or of those before, that is
        nacked on the way; reconnect if the connection is lost, and publish again what it had unconfirmed."""
        pending = deque(messages)
        while pending:
            try:
                if delay:
                    self._publisher.wait(delay)
                    delay = 0.0
                while pending:
                    self._publisher.publish(pending[0])  # raises only before the message is sent
                    pending.popleft()
                retry = self._take(self._publisher.settled())
                if retry:  # refused, so not delivered: publish again, later
                    pending.extend(retry)
                    delay = self._nack_backoff.next()
            except BROKER_LOST as exc:
                pending.extendleft(reversed(self._reconnect(exc)))

    def _take(self, settled: list[Settled]) -> list[Outgoing]:
        """Count what settled; the nacked messages to publish again."""
        retry = []
        for item in settled:
            line = item.message.key
            if item.outcome is Outcome.CONFIRMED:
                self.report.published += 1
                self._nack_backoff.reset()
            elif item.outcome is Outcome.RETURNED:
                self.report.unroutable.append(line)
            else:
                attempts = self._attempts[line] = self._attempts.get(line, 0) + 1
                if attempts < NACK_ATTEMPTS:
                    self.report.renacked.append(line)
                    retry.append(item.message)
                else:
                    self.report.nacked.append(line)
        return retry

    def _reconnect(self, lost: BaseException) -> list[Outgoing]:
        """A new connection after ``lost``; returns what must be published again (the unconfirmed messages)."""
        self.report.connections_lost += 1
        retry = self._take(self._publisher.settled())
        unconfirmed = self._publisher.unconfirmed
        self._publisher.close()
        print(
            f"relance: connection to RabbitMQ lost ({_describe(lost)}); reconnecting, then publishing again the "
            f"{len(unconfirmed)} messages not confirmed yet",
            file=self.err,
        )
        backoff = Backoff(self.settings.retry_max_seconds)
        deadline = time.monotonic() + RECONNECT_SECONDS
        while True:
            try:
                self._publisher = self._open()
                break
            except BROKER_LOST as exc:
                if time.monotonic() >= deadline:
                    raise BrokerGone(_describe(exc)) from exc
                time.sleep(backoff.next())
        self.report.resent.extend(m.key for m in unconfirmed)
        return unconfirmed + retry


def describe_line(line: bytes) -> tuple[str, str | None, str | None]:
    """Routing key and message id for a line, and why relance will not decode it (None if it will).

    A line with a duplicated key is described from its other keys only: its routing key is never a guess between
    two ``event_type`` values.
    """
    problem = None
    try:
        value = jsonio.loads(line)
        raw = value if isinstance(value, dict) else {}  # decoded: no key appears twice
    except jsonio.JsonRefused as exc:
        problem = f"not valid JSON ({exc.reason})" if exc.kind == "not_json" else exc.reason
        raw = jsonio.fields_once(line)
    event_type, event_id = raw.get("event_type"), raw.get("event_id")
    routing_key = event_type if isinstance(event_type, str) and 0 < len(event_type.encode()) <= 255 else None
    message_id = event_id if isinstance(event_id, str) and 0 < len(event_id.encode()) <= 255 else None
    return routing_key or UNKNOWN_ROUTING_KEY, message_id, problem


def _summarise(report: PublishReport, exchange: str, out: IO[str], err: IO[str]) -> None:
    summary = f"published {report.published} messages (confirmed) to exchange {exchange}"
    notes = []
    if report.not_json:
        notes.append(
            f"{len(report.not_json)} not valid JSON or refused by relance's decoder (lines {_list(report.not_json)})"
        )
    if report.blank:
        notes.append(f"{report.blank} blank lines skipped")
    print(summary + (f"; {', '.join(notes)}" if notes else ""), file=out)
    if report.unroutable:
        print(
            f"relance: {len(report.unroutable)} messages were returned unroutable, no queue is bound to {exchange} "
            f"for them (lines {_list(report.unroutable)})",
            file=err,
        )
    if report.resent:
        lines = sorted(set(report.resent))
        print(
            f"relance: {report.connections_lost} lost connection(s): {len(lines)} lines that were not confirmed when "
            f"the connection was lost were published again (lines {_list(lines)}): each is in the queue at least "
            "once, possibly twice, and relance's ingest deduplicates them by event_id",
            file=err,
        )
    if report.renacked:
        print(
            f"relance: the broker refused {len(report.renacked)} publishes at first; they were published again "
            f"(lines {_list(sorted(set(report.renacked)))})",
            file=err,
        )
    if report.nacked:
        print(
            f"relance: the broker refused {len(report.nacked)} messages {NACK_ATTEMPTS} times "
            f"(lines {_list(report.nacked)}); publish them again",
            file=err,
        )


@contextlib.contextmanager
def _open(path: Path) -> Iterator[IO[bytes]]:
    if str(path) == "-":
        yield sys.stdin.buffer  # not ours to close
        return
    with path.open("rb") as source:
        yield source


def _lines(source: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(source, start=1):
        yield number, raw.rstrip(b"\r\n")


def _list(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:_MAX_REPORTED])
    return shown + (f", … {len(numbers) - _MAX_REPORTED} more" if len(numbers) > _MAX_REPORTED else "")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text and text != "()" else type(exc).__name__


def _safe_url(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://…@{rest.split('@', 1)[1]}"
