"""Publishing with publisher confirms pipelined: a window of messages in flight, each settled by the broker's answer.

Why not ``BlockingChannel.confirm_delivery()``: pika's blocking channel waits for each message's confirm inside
``basic_publish``, one round trip (and one broker fsync) per message. pika's documented way to have many confirms
outstanding is an asynchronous adapter: this module drives a :class:`~pika.SelectConnection` from the caller's own
thread (it runs the connection's I/O loop only while it waits, with ``ioloop.poll()`` and
``ioloop.process_timeouts()``, as ``BlockingConnection`` itself does), so callers stay plain sequential code.

How a message is settled (RabbitMQ's "publisher confirms", strategy 3, confirms handled asynchronously):

- Confirm mode numbers the messages of a channel 1, 2, … (the delivery tag); a ``Basic.Ack`` or ``Basic.Nack``
  settles one tag, or every tag up to it when ``multiple`` is set. At most ``window`` messages are unconfirmed at
  once: :meth:`ConfirmingPublisher.publish` waits for confirms when the window is full.
- **ack**: RabbitMQ took responsibility for the message (persistent messages to durable queues: written to disk).
- **nack**: the broker refused it (an internal error, or a queue that rejects publishes when full): it is *not*
  delivered; the caller publishes it again.
- **returned**: a ``mandatory`` message no queue is bound for comes back as ``Basic.Return`` before its ack. A return
  names no delivery tag, but RabbitMQ returns a channel's messages in publish order, each before its own ack, so a
  return belongs to the first unconfirmed message after the previous return with the same exchange, routing key and
  body (two identical messages are interchangeable).
- **connection or channel lost**: every method that waits raises the reason pika gives (an ``AMQPError``, one of
  :data:`shared.broker.amqp.BROKER_LOST`). :attr:`ConfirmingPublisher.unconfirmed` is then what the broker may or
  may not have: at-least-once means publishing all of it again (same message ids, receivers deduplicate); a message
  that was confirmed is never among them.

Everything settled is kept, in settling order, until the caller takes it with :meth:`ConfirmingPublisher.settled`.
pika is not thread-safe: a publisher belongs to the thread that opened it.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.select_connection import IOLoop
from pika.adapters.utils import connection_workflow
from pika.channel import Channel
from pika.exceptions import AMQPConnectionError, AMQPError, ChannelClosedByClient, ConnectionClosedByClient
from pika.frame import Method
from pika.spec import Basic

from shared.broker import amqp
from shared.config import Settings

CONNECT_TIMEOUT_SECONDS = 30.0


class Outcome(enum.Enum):
    CONFIRMED = "confirmed"
    RETURNED = "returned"  # mandatory and unroutable: acked, but in no queue
    NACKED = "nacked"  # refused by the broker: not delivered


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish; ``key`` is the caller's number for it (a line number, an outbox row id)."""

    key: int
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    mandatory: bool = True


@dataclass(frozen=True, slots=True)
class Settled:
    message: Outgoing
    outcome: Outcome


class InFlight:
    """The bookkeeping of one confirm-mode channel, apart from any socket: tags, returns, acks and nacks."""

    def __init__(self) -> None:
        self._next_tag = 1
        self._unconfirmed: OrderedDict[int, Outgoing] = OrderedDict()
        self._returned: set[int] = set()
        self._last_returned = 0
        self._settled: list[Settled] = []

    def __len__(self) -> int:
        return len(self._unconfirmed)

    @property
    def messages(self) -> list[Outgoing]:
        return list(self._unconfirmed.values())

    def sent(self, message: Outgoing) -> None:
        self._unconfirmed[self._next_tag] = message
        self._next_tag += 1

    def returned(self, exchange: str, routing_key: str, body: bytes) -> None:
        """A ``Basic.Return``: it belongs to the first matching message after the one returned before it."""
        for tag, message in self._unconfirmed.items():
            if tag <= self._last_returned or tag in self._returned:
                continue
            if (message.exchange, message.routing_key, message.body) == (exchange, routing_key, body):
                self._returned.add(tag)
                self._last_returned = tag
                return

    def answered(self, delivery_tag: int, multiple: bool, *, ack: bool) -> None:
        """An ack or a nack of ``delivery_tag`` (with ``multiple``: of every tag up to it; 0 meaning all)."""
        if multiple:
            tags = []
            for tag in self._unconfirmed:  # in tag order
                if delivery_tag and tag > delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [delivery_tag] if delivery_tag in self._unconfirmed else []
        for tag in tags:
            message = self._unconfirmed.pop(tag)
            if not ack:
                outcome = Outcome.NACKED
            elif tag in self._returned:
                outcome = Outcome.RETURNED
            else:
                outcome = Outcome.CONFIRMED
            self._returned.discard(tag)
            self._settled.append(Settled(message, outcome))

    def take_settled(self) -> list[Settled]:
        settled, self._settled = self._settled, []
        return settled


def open_publisher(settings: Settings, role: str) -> ConfirmingPublisher:
    """A publisher on ``RELANCE_AMQP_URL``, named like :func:`shared.broker.amqp.connect`'s connections, with
    ``RELANCE_PUBLISH_WINDOW`` messages in flight at most."""
    return ConfirmingPublisher(amqp.parameters(settings, role), settings.publish_window)


class ConfirmingPublisher:
    """One connection and one confirm-mode channel, publishing with up to ``window`` messages unconfirmed."""

    def __init__(self, parameters: pika.URLParameters, window: int) -> None:
        if window < 1:
            raise ValueError("the window of unconfirmed messages holds at least one")
        self.window = window
        self._in_flight = InFlight()
        self._lost: BaseException | None = None
        self._ready = False
        self._closed = False
        self._channel: Channel | None = None
        self._last_poll = time.monotonic()
        self._ioloop = IOLoop()
        self._ioloop.activate_poller()  # what IOLoop.start() does; we poll it ourselves
        self._connection = pika.SelectConnection(
            parameters,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_failed,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._ioloop,
        )
        try:
            self._run_until(lambda: self._ready, CONNECT_TIMEOUT_SECONDS, "the broker did not open a channel")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------------ publishing
    @property
    def unconfirmed(self) -> list[Outgoing]:
        """The messages the broker has not answered yet, in publish order."""
        return self._in_flight.messages

    def publish(self, message: Outgoing) -> None:
        """Send ``message``, first waiting for confirms while ``window`` messages are unconfirmed."""
        if len(self._in_flight) >= self.window:
            self._run_until(lambda: len(self._in_flight) < self.window)
        channel = self._open_channel()
        channel.basic_publish(
            message.exchange, message.routing_key, message.body, message.properties, mandatory=message.mandatory
        )
        self._in_flight.sent(message)
        if time.monotonic() - self._last_poll >= 0.05:
            self._poll(0)  # send what is buffered and take the confirms in, without waiting

    def flush(self) -> None:
        """Wait until the broker answered every message published."""
        self._run_until(lambda: not self._in_flight)

    def wait_until(self, done: Callable[[], bool]) -> None:
        """Serve the connection until ``done()`` (checked after each burst of I/O), e.g. some messages answered."""
        self._run_until(done)

    def settled(self) -> list[Settled]:
        """Every message answered since the last call, in the order the answers came."""
        return self._in_flight.take_settled()

    def declare_exchange(self, name: str, exchange_type: str, *, durable: bool = True) -> None:
        done: list[Method] = []
        self._open_channel().exchange_declare(name, exchange_type=exchange_type, durable=durable, callback=done.append)
        self._run_until(lambda: bool(done), CONNECT_TIMEOUT_SECONDS, f"the broker did not declare exchange {name}")

    def wait(self, seconds: float) -> None:
        """Serve the connection (heartbeats, confirms) for ``seconds``."""
        self._run_until(lambda: False, seconds)

    def wake(self) -> None:
        """Make a wait check its condition again now: the one method another thread may call."""
        with contextlib.suppress(Exception):  # a publisher closed meanwhile has nobody waiting
            self._ioloop.add_callback_threadsafe(_nothing)

    @property
    def is_open(self) -> bool:
        return self._lost is None and self._connection.is_open

    def close(self) -> None:
        """Close the connection (unconfirmed messages stay unconfirmed) and release its I/O loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._connection.is_open:
            self._connection.close()
        if not self._connection.is_closed:
            with contextlib.suppress(AMQPError, OSError):  # a broken connection: nothing left to release
                self._run_until(lambda: self._connection.is_closed, 5.0)
        self._ioloop.close()

    # ------------------------------------------------------------------------------------------------ the I/O loop
    def _run_until(self, done: Callable[[], bool], timeout: float | None = None, timeout_error: str = "") -> None:
        """Run the connection's I/O until ``done()``; raise what lost the connection; after ``timeout`` seconds,
        return, or raise ``AMQPConnectionError(timeout_error)`` if one is given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._raise_if_lost()
            if done():
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if timeout_error:
                    raise AMQPConnectionError(timeout_error)
                return
            self._poll(left)

    def _poll(self, seconds: float | None) -> None:
        ioloop = self._ioloop
        timer = None if seconds is None else ioloop.call_later(max(seconds, 0), _nothing)
        ioloop.poll()
        ioloop.process_timeouts()
        if timer is not None:
            ioloop.remove_timeout(timer)
        self._last_poll = time.monotonic()

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise self._lost

    def _open_channel(self) -> Channel:
        self._raise_if_lost()
        assert self._channel is not None
        return self._channel

    # ------------------------------------------------------------------------------------------------ pika's callbacks
    def _on_connection_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_answer, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Method) -> None:
        self._ready = True

    def _on_answer(self, frame: Method) -> None:
        method = frame.method
        self._in_flight.answered(method.delivery_tag, method.multiple, ack=isinstance(method, Basic.Ack))

    def _on_return(self, _channel: Channel, method: Any, _properties: Any, body: bytes) -> None:
        self._in_flight.returned(method.exchange, method.routing_key, body)

    def _on_channel_closed(self, _channel: Channel, reason: BaseException) -> None:
        if not isinstance(reason, ChannelClosedByClient) and self._lost is None:
            self._lost = reason

    def _on_connection_failed(self, _connection: Any, error: BaseException) -> None:
        self._lost = _workflow_error(error)

    def _on_connection_closed(self, _connection: Any, reason: BaseException) -> None:
        if self._lost is None and not isinstance(reason, ConnectionClosedByClient):
            self._lost = reason


def _workflow_error(error: BaseException) -> BaseException:
    """The exception that made pika's connection workflow fail, as ``BlockingConnection`` would raise it (an
    ``AMQPError``: authentication refused, or ``AMQPConnectionError`` for the rest)."""
    if isinstance(error, connection_workflow.AMQPConnectionWorkflowFailed):
        last: BaseException = error.exceptions[-1]
        error = last
        if isinstance(last, connection_workflow.AMQPConnectorPhaseErrorBase) and not isinstance(
            last, connection_workflow.AMQPConnectorSocketConnectError
        ):
            inner: BaseException = last.exception
            error = inner
    raised: BaseException = error if isinstance(error, AMQPError) else AMQPConnectionError(error)
    return raised


def _nothing() -> None:
    """A timer that only bounds how long the I/O loop waits."""
