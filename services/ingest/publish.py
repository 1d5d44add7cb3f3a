"""``relance publish FILE.jsonl``: a small publisher of ERP events for integrators, with publisher confirms.

Every non-blank line is published as-is, one message per line, to the events exchange with routing key = the line's
``event_type`` (``unknown`` if it has none), ``message_id`` = its ``event_id``, persistent, ``application/json``.
Lines are deliberately not validated: integrators use this tool to see how relance answers bad input too, and the
ingest worker dead-letters what is invalid, with the reason. Lines that are not even JSON, or that relance's decoder
refuses (a duplicated key, nesting or numbers beyond its limits), are reported with their line number on stderr (and
published anyway).

Each publish waits for the broker's confirm and is ``mandatory``, so "published N messages (confirmed)" means
RabbitMQ has taken responsibility for N messages, routed to at least one queue.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pika
from pika.exceptions import AMQPError, NackError, UnroutableError

from services.ingest.topology import declare_topology
from shared.broker.amqp import connect
from shared.config import Settings
from shared.contracts import jsonio

UNKNOWN_ROUTING_KEY = "unknown"
PROGRESS_EVERY_SECONDS = 2.0
_MAX_REPORTED = 20
EX_NOINPUT = 66
EX_UNAVAILABLE = 69


@dataclass
class PublishReport:
    published: int = 0
    blank: int = 0
    not_json: list[int] = field(default_factory=list)
    unroutable: list[int] = field(default_factory=list)
    nacked: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unroutable and not self.nacked


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
            connection = connect(settings, "publish")
        except AMQPError as exc:
            print(f"relance: cannot connect to RabbitMQ ({_safe_url(settings.amqp_url)}): {_describe(exc)}", file=err)
            return EX_UNAVAILABLE
        try:
            declare_topology(connection, settings)
            channel = connection.channel()
            channel.confirm_delivery()
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
                try:
                    channel.basic_publish(
                        exchange=exchange,
                        routing_key=routing_key,
                        body=line,
                        properties=pika.BasicProperties(
                            content_type="application/json",
                            delivery_mode=pika.DeliveryMode.Persistent,
                            message_id=message_id,
                            timestamp=int(time.time()),
                            app_id="relance-publish",
                        ),
                        mandatory=True,
                    )
                    report.published += 1
                except UnroutableError:
                    report.unroutable.append(line_number)
                except NackError:
                    report.nacked.append(line_number)
                if time.monotonic() - progress_at >= PROGRESS_EVERY_SECONDS:
                    progress_at = time.monotonic()
                    print(f"… {report.published} messages published (line {line_number})", file=err)
        except AMQPError as exc:
            print(
                f"relance: connection to RabbitMQ lost at line {line_number}: {_describe(exc)}; "
                f"{report.published} messages before it were confirmed, line {line_number} and later were not",
                file=err,
            )
            return EX_UNAVAILABLE
        finally:
            with contextlib.suppress(AMQPError):
                if connection.is_open:
                    connection.close()
    _summarise(report, exchange, out, err)
    return 0 if report.ok else 1


def describe_line(line: bytes) -> tuple[str, str | None, str | None]:
    """Routing key and message id for a line, and why relance will not decode it (None if it will).

    A line with a duplicated key is described from its other keys only: its routing key is never a guess between
    two ``event_type`` values.
    """
    problem = None
    try:
        jsonio.loads(line)
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
    if report.nacked:
        print(
            f"relance: the broker refused {len(report.nacked)} messages (lines {_list(report.nacked)}); "
            "publish them again",
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
