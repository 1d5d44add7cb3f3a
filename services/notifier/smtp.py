"""The SMTP transport: connect, STARTTLS or implicit TLS, AUTH, hand over bytes, and say what replies mean.

What a reply means decides whether a reminder may be tried again, so the transport classifies each one as it comes:

- certain that nothing was accepted, and the server may accept later (4xx, a refused, reset or timed-out
  connection before DATA was sent, a failed login): :class:`TemporaryFailure`;
- certain that the server will not take it (5xx, an address it refuses): :class:`PermanentFailure`;
- the bytes were transmitted and the final reply never came (the connection lost or timed out during or after DATA):
  :class:`UnknownOutcome`. The server may have accepted the message; it must never be sent again blindly.

Each address is offered at RCPT TO on its own. When the server accepts at least one, the message goes to those (one
DATA, once) and :class:`Delivery` names the refused ones with the server's code and text, ``permanent`` (5xx) or
``temporary`` (4xx). When every address is refused, the send fails: permanently if every refusal is, temporarily
otherwise, since that address may accept it later. A 421 at RCPT TO ends the whole send (the server is closing).

Up to ``RELANCE_NOTIFIER_SMTP_CONNECTIONS`` connections are open at once, one send on each at a time; each is
authenticated once and reused for message after message (a transaction the server refused is ended with RSET; one
it accepted ends by itself), checked with NOOP after it was idle for a while, and reopened when lost. What is sent,
once, and what is recorded about it is :mod:`services.notifier.delivery`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import aiosmtplib

from services.notifier.errors import NotifierError
from shared.config import Settings

IDLE_CHECK_SECONDS = 10.0  # a connection unused this long is checked with NOOP before it is used again


# ------------------------------------------------------------------------------------------------------ errors
class SendError(NotifierError):
    """Base of the sending errors; ``reply`` is the server's reply or the local reason."""

    def __init__(self, reason: str, reply: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class TemporaryFailure(SendError):
    """The server certainly did not accept the message, and may later (4xx, refused, timeout before DATA)."""


class PermanentFailure(SendError):
    """The server refused the message for good (5xx) or it cannot be sent as asked (invalid address)."""


class UnknownOutcome(SendError):
    """The message was transmitted but its fate is unknown (connection lost before the final reply)."""


# --------------------------------------------------------------------------------------------------- transports
@dataclass(frozen=True, slots=True)
class Refusal:
    """The server's reply to one RCPT TO it did not accept."""

    address: str
    code: int
    text: str

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def to_json(self) -> dict[str, Any]:
        kind = "permanent" if self.permanent else "temporary"
        return {"address": self.address, "code": self.code, "reply": self.text, "kind": kind}


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the server accepted: its final reply after DATA, and the recipients it refused at RCPT TO (if any)."""

    reply: str
    refused: tuple[Refusal, ...] = ()


class Transport(Protocol):
    @property
    def capacity(self) -> int:
        """How many sends it takes at once (more wait for their turn)."""
        ...

    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivery:
        """Hand the bytes to the server; the server's final reply and the refused recipients, or a SendError.

        Raises :class:`PermanentFailure` / :class:`TemporaryFailure` when no recipient is accepted (temporary when
        any of the refusals is).
        """
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    timeout: float = 30.0
    connections: int = 1  # opened at most at once, each reused: the sends in flight

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            ca_file=settings.smtp_ca_file,
            timeout=settings.smtp_timeout,
            connections=settings.notifier_smtp_connections,
        )


class SmtpTransport:
    """aiosmtplib behind :class:`Transport`: up to ``config.connections`` connections, each reused message after
    message and reopened if lost; a send waits for a free one when all are busy."""

    def __init__(self, config: SmtpConfig, *, timed: Callable[[float], None] | None = None) -> None:
        self.config = config
        self._timed = timed  # told the seconds of each SMTP transaction (relance_smtp_seconds)
        self._idle: list[_Connection] = []
        self._made = 0  # connections handed out or idle (at most config.connections)
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.connections = 0  # how many times a connection was opened (reuse is observable)

    @property
    def capacity(self) -> int:
        return self.config.connections

    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivery:
        connection = await self._take()
        started = time.monotonic()
        try:
            return await connection.send(sender, recipients, data)
        finally:
            if self._timed is not None:
                self._timed(time.monotonic() - started)
            self._give_back(connection)

    async def close(self) -> None:
        idle, self._idle, self._made = self._idle, [], 0
        for connection in idle:
            await connection.close()

    async def _take(self) -> _Connection:
        while True:
            if self._idle:
                return self._idle.pop()  # the one used last: the likeliest to be still open
            if self._made < self.config.connections:
                self._made += 1
                return _Connection(self)
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)

    def _give_back(self, connection: _Connection) -> None:
        self._idle.append(connection)
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class _Connection:
    """One SMTP connection of a :class:`SmtpTransport`, used by one send at a time."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.transport = transport
        self._client: aiosmtplib.SMTP | None = None
        self._used_at = 0.0

    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivery:
        client = await self._connected()
        refused: list[Refusal] = []
        try:
            await client.mail(sender)
            for recipient in recipients:
                try:
                    await client.rcpt(recipient)
                except aiosmtplib.SMTPRecipientRefused as exc:  # this address only: the others may be accepted
                    if exc.code == 421:  # the server is closing the connection: nothing more will be accepted
                        raise
                    refused.append(Refusal(recipient, exc.code, exc.message))
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            raise _by_code(exc) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop()
            raise TemporaryFailure(f"connection lost before the message was sent: {exc}") from exc
        if len(refused) == len(recipients):
            await self._reset()
            raise nobody_accepted(refused)
        try:
            response = await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:  # the server answered: it did not take the message
            await self._reset()
            raise _by_code(exc) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop()
            raise UnknownOutcome(f"connection lost while the message was transmitted: {exc}") from exc
        return Delivery(f"{response.code} {response.message}", tuple(refused))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            if time.monotonic() - self._used_at < IDLE_CHECK_SECONDS:
                self._used_at = time.monotonic()
                return self._client
            try:  # idle for a while: servers drop quiet connections, so check before MAIL FROM
                await self._client.noop()
                self._used_at = time.monotonic()
                return self._client
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                self._drop()
        config = self.transport.config
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.tls == "implicit",
            start_tls=config.tls == "starttls",
            tls_context=context if config.tls != "none" else None,
            timeout=config.timeout,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            reply = f"{exc.code} {exc.message}" if isinstance(exc, aiosmtplib.SMTPResponseException) else ""
            raise TemporaryFailure(f"cannot connect to {config.host}:{config.port}: {exc}", reply) from exc
        self._client = client
        self._used_at = time.monotonic()
        self.transport.connections += 1
        return client

    async def _reset(self) -> None:
        if self._client is None:
            return
        try:
            await self._client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None


def nobody_accepted(refused: Sequence[Refusal]) -> SendError:
    """Every recipient refused at RCPT TO: temporary if any of them may accept later, permanent otherwise."""
    listed = reply = "; ".join(f"{r.address}: {r.code} {r.text}" for r in refused)
    if len(refused) == 1:  # the server's reply as it gave it, as for any other refusal
        reply = f"{refused[0].code} {refused[0].text}"
    if all(r.permanent for r in refused):
        return PermanentFailure(f"server refused every recipient: {listed}", reply)
    return TemporaryFailure(f"server deferred the recipients: {listed}", reply)


def _by_code(exc: aiosmtplib.SMTPResponseException) -> SendError:
    reply = f"{exc.code} {exc.message}"
    if 400 <= exc.code < 500:
        return TemporaryFailure(f"server deferred the message: {reply}", reply)
    return PermanentFailure(f"server refused the message: {reply}", reply)


@dataclass
class MemoryTransport:
    """In-memory fake: records what it is given; ``script`` lists failures to raise first, in order; ``refuse``
    maps a recipient to the ``(code, text)`` it is refused with at RCPT TO."""

    script: list[SendError] = field(default_factory=list)
    sent: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)
    capacity: int = 1000

    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivery:
        if self.script:
            raise self.script.pop(0)
        refused = tuple(Refusal(r, *self.refuse[r]) for r in recipients if r in self.refuse)
        if len(refused) == len(recipients):
            raise nobody_accepted(refused)
        self.sent.append((sender, tuple(r for r in recipients if r not in self.refuse), data))
        return Delivery("250 OK queued", refused)

    async def close(self) -> None:
        return None
