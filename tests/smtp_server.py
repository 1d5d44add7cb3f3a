"""A real SMTP server on loopback for tests: aiosmtpd with STARTTLS required and AUTH, a self-signed certificate."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as Server
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from services.notifier.smtp import SmtpConfig, SmtpTransport

USER, PASSWORD = "relance", "s3cret"


@dataclass
class Sink:
    """Handler: answers ``script`` replies to DATA first, then accepts and keeps what it got."""

    script: list[str] = field(default_factory=list)
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Server, session: Session, envelope: Envelope) -> str:
        if self.script:
            return self.script.pop(0)
        assert isinstance(envelope.original_content, bytes)
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Ok: queued"


class Recording(Sink):
    """A :class:`Sink` that also keeps how each message came (TLS, AUTH), can refuse recipients at RCPT with scripted
    replies or for good, and can hold the next message: keep its bytes but not answer until released (a send cut
    short)."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[tuple[bool, bool]] = []  # (TLS on, authenticated) of each accepted message
        self.at_rcpt: dict[str, list[str]] = {}  # recipient -> replies to give first, in order
        self.refuse: dict[str, str] = {}  # recipient -> the reply it gets at every RCPT TO (e.g. a 550)
        self.hold_next = threading.Event()  # set by the test: hold the next message
        self.holding = threading.Event()  # set by the server: it has the bytes and has not answered yet
        self.release = threading.Event()  # set by the test: answer the held message

    async def handle_RCPT(
        self, server: Server, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        scripted = self.at_rcpt.get(address)
        if scripted:
            return scripted.pop(0)
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Server, session: Session, envelope: Envelope) -> str:
        held = self.hold_next.is_set() and not self.script
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            self.sessions.append((session.ssl is not None, bool(session.authenticated)))
        if held:
            self.hold_next.clear()
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
        return reply

    def messages(self) -> list[EmailMessage]:
        return received_messages(self)


def authenticate(server: Server, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == USER.encode() and data.password == PASSWORD.encode()
    return AuthResult(success=ok)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    key, crt = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, crt


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Smtp:
    sink: Sink
    port: int
    cert: tuple[Path, Path]
    controller: Controller | None = None

    def start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert[1]), str(self.cert[0]))
        self.controller = Controller(
            self.sink,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            authenticator=authenticate,
            auth_required=True,
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def transport(self) -> SmtpTransport:
        return SmtpTransport(
            SmtpConfig("127.0.0.1", self.port, "starttls", USER, PASSWORD, ca_file=self.cert[1], timeout=5)
        )


@pytest.fixture
def smtp(cert: tuple[Path, Path]) -> Iterator[Smtp]:
    server = Smtp(Recording(), free_port(), cert)
    server.start()
    yield server
    server.stop()


def received_messages(sink: Sink) -> list[Any]:
    """What the sink accepted, parsed as e-mail messages."""
    import email
    from email import policy

    return [email.message_from_bytes(data, policy=policy.default) for _, _, data in sink.received]


def bodies(message: EmailMessage) -> tuple[str, str]:
    """The text and the HTML part of a reminder."""
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html is not None, message
    return plain.get_content(), html.get_content()
