"""The reminder as MIME bytes: multipart/alternative (plain text and HTML), built by the stdlib email package.

What is built here is exactly what goes over SMTP and what the evidence hashes, so the rules are strict:

- Every address is checked on its own (:func:`check_address`): one bare ``local@domain``, no display name, no
  control character. ``"a@example.com\\r\\nBcc: x@example.com"`` is refused with :class:`InvalidAddress`; it is
  never neutralised into something else, because a reminder must go where the ledger says or not at all.
- Headers are set through :data:`email.policy.SMTP`, which refuses CR or LF in any header value, so no field can
  start a new header; the subject is also folded onto one line first.
- The Message-ID is derived from the command id alone (:func:`message_id`): every attempt to send one reminder
  carries the same id, so a duplicate that slips through can be recognised by the receiving side.
- :func:`build` is a pure function of its inputs (the Date is an input too), and its bytes end with CRLF and
  use CRLF throughout, which SMTP transmits unchanged: the SHA-256 of these bytes is the hash of what the server got.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Protocol

_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN = re.compile(r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}|localhost")
_ID_LEFT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class MimeError(ValueError):
    """The message cannot be built as asked; retrying cannot help."""


class InvalidAddress(MimeError):
    """An address is not one plain ``local@domain`` (e.g. it carries CR/LF or a second address)."""


class Rendered(Protocol):
    """What the renderer hands over (services/notifier/render.py's RenderedReminder has this shape)."""

    @property
    def subject(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def html(self) -> str: ...
    @property
    def template_name(self) -> str: ...
    @property
    def template_version(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Built:
    message_id: str  # with its angle brackets, as in the header
    sender: str
    recipients: tuple[str, ...]
    subject: str
    data: bytes

    @property
    def sha256(self) -> str:
        return sha256(self.data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_address(value: str) -> str:
    """The address itself if it is one plain ``local@domain``; :class:`InvalidAddress` saying why otherwise."""
    if not isinstance(value, str) or not value:
        raise InvalidAddress("empty email address")
    if _CONTROL.search(value):
        raise InvalidAddress(f"email address {value!r} contains a control character (CR, LF, …): refused")
    local, at, domain = value.rpartition("@")
    if not at or len(value) > 254 or len(local) > 64:
        raise InvalidAddress(f"{value!r} is not an email address of the form local@domain")
    if not _LOCAL.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        raise InvalidAddress(f"{value!r} is not a plain email address (no display name, spaces, commas or quotes)")
    return value


def message_id(command_id: str, domain: str) -> str:
    """``<command_id@domain>``; a command id that is not a valid msg-id left part is replaced by its hash."""
    if not _DOMAIN.fullmatch(domain) and not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        raise MimeError(f"{domain!r} is not a domain for Message-IDs")
    left = command_id
    if not _ID_LEFT.fullmatch(left) or left.startswith(".") or left.endswith(".") or ".." in left:
        left = "h-" + hashlib.sha256(command_id.encode("utf-8")).hexdigest()[:40]
    return f"<{left}@{domain}>"


def build(
    rendered: Rendered,
    *,
    sender: str,
    recipients: Sequence[str],
    command_id: str,
    domain: str,
    date: datetime | None = None,
) -> Built:
    """The reminder as the exact bytes to hand to SMTP DATA."""
    checked = tuple(check_address(r) for r in recipients)
    if not checked:
        raise InvalidAddress("the reminder has no recipient")
    check_address(sender)
    subject = " ".join(_CONTROL.sub(" ", rendered.subject).split())
    ident = message_id(command_id, domain)
    message = EmailMessage(policy=SMTP)
    try:
        message["From"] = _address(sender)
        message["To"] = [_address(r) for r in checked]
        message["Subject"] = subject
        message["Date"] = format_datetime((date or datetime.now(UTC)).astimezone(UTC))
        message["Message-ID"] = ident
        message.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
        message.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
        for part in message.iter_parts():
            del part["MIME-Version"]  # the stdlib repeats it on a part moved under multipart/alternative
        # Derived from the content, so the content cannot contain it (it would need its own hash in it).
        content = "\x1f".join((command_id, rendered.text, rendered.html)).encode("utf-8")
        message.set_boundary("=_" + hashlib.sha256(content).hexdigest()[:40])
        data = message.as_bytes(policy=SMTP)
    except (ValueError, TypeError) as exc:  # the email package refuses CR/LF and malformed values
        raise MimeError(f"cannot build the message: {exc}") from exc
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return Built(message_id=ident, sender=sender, recipients=checked, subject=subject, data=data)


def _address(value: str) -> Address:
    local, _, domain = value.rpartition("@")
    return Address(username=local, domain=domain)
