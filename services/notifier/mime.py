"""The reminder as MIME bytes: multipart/alternative (plain text and HTML), with headers relance writes itself.

What is built here is exactly what goes over SMTP and what the evidence hashes, so the rules are strict:

- Every address is checked on its own (:func:`check_address`): one bare ``local@domain``, no display name, no
  control character. ``"a@example.com\\r\\nBcc: x@example.com"`` is refused with :class:`InvalidAddress`; it is
  never neutralised into something else, because a reminder must go where the ledger says or not at all.
- Every text that can reach a header (the subject and what it is made of: customer names, invoice numbers, the
  sender's details) passes :func:`check_header_text`, which *refuses* (:class:`UnsafeHeaderText`) any control
  character or Unicode line break (C0, DEL, C1 including NEL U+0085, U+2028, U+2029), bidirectional overrides and
  U+FEFF, and any RFC 2047 encoded-word opening (``=?charset?q?`` / ``?b?``, any case, even with whitespace
  inside). Nothing is cleaned up into something else: a reminder whose text is unsafe is not sent.
- The top-level header lines are written here, not by :mod:`email.policy`: the subject is plain folded ASCII or
  RFC 2047 ``Q`` encoded words this module encodes itself, From and To are bare checked addresses, Date and
  Message-ID are generated.
- :func:`verify` re-reads the bytes before anything is sent: the header section with the stdlib parser under both
  ``compat32`` and ``default`` policies, which must read exactly the seven intended header fields, each once,
  From/To/Subject/Message-ID parsing back to the intended values, and the same multipart boundary; the body split at
  that boundary must be exactly the two parts relance writes, with their fixed part headers, decoding (by
  :mod:`binascii`) to the rendered text. Any difference is :class:`RefusedMessage` and the message is never handed
  to SMTP.
- The top-level MIME fields and the body are assembled here too (:func:`mime_body`), byte for byte as the email
  package writes them, with its quoted-printable encoder: no message object is built and generated per reminder.
- The Message-ID is derived from the command id alone (:func:`message_id`): every attempt to send one reminder
  carries the same id, so a duplicate that slips through can be recognised by the receiving side.
- :func:`build` is a pure function of its inputs (the Date is an input too), and its bytes end with CRLF and
  use CRLF throughout, which SMTP transmits unchanged: the SHA-256 of these bytes is the hash of what the server got.

Why this does not depend on the interpreter's patch level
---------------------------------------------------------
CPython's ``email`` package before 3.11.10 / 3.12.5 (gh-121650, CVE-2024-6923, and a later related fix) decodes an
encoded word such as ``=?utf-8?q?=0D=0ABcc:_x@example.com?=`` found in a header value and, when it folds the header
again, can write the decoded CR LF as a real line break: a new ``Bcc:`` or ``Reply-To:`` header, or an early end of
the headers. relance never gives the email package a header value to parse or fold: encoded words and line breaks
are refused before use, the header lines are assembled here from checked ASCII, and the finished bytes are parsed
back and compared with the intent. Each of the three layers alone keeps a forged header out of what relance sends;
none relies on a fix in the interpreter, so relance behaves the same on every Python it supports (3.11 and later,
whatever the patch level).
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email import quoprimime
from email.header import decode_header, make_header
from email.headerregistry import HeaderRegistry
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime, getaddresses
from typing import Any, Protocol

import idna

from services.notifier.errors import NotifierError

_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN = re.compile(r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}|localhost")
_ID_LEFT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,128}")
# C0, DEL, C1 (NEL U+0085 included), line and paragraph separators, bidi embeddings/overrides/isolates, the BOM,
# and lone surrogates (which cannot be encoded at all).
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")
# The opening of an RFC 2047 encoded word, checked on the text with all whitespace removed.
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[bq]\?", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_UNFOLD = re.compile(r"\r\n(?=[ \t])")
HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type")
# The header of each part, as the email package writes them (and as relance has always sent them).
PART_HEADERS = {
    subtype: f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable'
    for subtype in ("plain", "html")
}
_LINE = 78  # folding width for header lines (RFC 5322 recommends 78, requires at most 998)
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_PAYLOAD = 76 - len("Subject: ") - len("=?utf-8?q??=")  # every line of encoded words stays within 76


class MimeError(NotifierError, ValueError):
    """The message cannot be built as asked; retrying cannot help."""


class InvalidAddress(MimeError):
    """An address is not one plain ``local@domain`` (e.g. it carries CR/LF or a second address)."""


class UnsafeHeaderText(MimeError):
    """A text that would reach a header carries a line break, a control character or an RFC 2047 encoded word."""


class RefusedMessage(MimeError):
    """The built bytes do not parse back to exactly the intended headers, recipients and body: never sent."""


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
    """The bytes and what they were built to say (what :func:`verify` compares them with)."""

    message_id: str  # with its angle brackets, as in the header
    sender: str
    recipients: tuple[str, ...]
    subject: str
    data: bytes
    text: str  # the rendered parts the body must decode to
    html: str

    @property
    def sha256(self) -> str:
        return sha256(self.data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unsafe_reason(value: str) -> str | None:
    """Why ``value`` may not reach a header, or None when it may."""
    found = UNSAFE.search(value)
    if found is not None:
        return f"contains the control character or line break U+{ord(found.group()):04X}"
    if _ENCODED_WORD.search(_WHITESPACE.sub("", value)):
        return "contains an RFC 2047 encoded word (=?charset?q?…?=), which mail software would decode into headers"
    return None


def check_header_text(value: str, what: str) -> str:
    """``value`` itself if it is safe to put in a header; :class:`UnsafeHeaderText` naming ``what`` otherwise."""
    reason = unsafe_reason(value)
    if reason is not None:
        raise UnsafeHeaderText(f"{what} {value!r} {reason}: refused, the reminder is not sent")
    return value


def check_address(value: str) -> str:
    """The address as it goes on the wire if it is one plain ``local@domain`` (an internationalised domain in its
    ASCII form); :class:`InvalidAddress` saying why otherwise."""
    if not isinstance(value, str) or not value:
        raise InvalidAddress("empty email address")
    if UNSAFE.search(value):
        raise InvalidAddress(f"email address {value!r} contains a control character (CR, LF, …): refused")
    local, at, domain = value.rpartition("@")
    if at and not local.isascii():
        raise InvalidAddress(
            f"{value!r} has a non-ASCII local part, which needs SMTPUTF8; relance sends plain SMTP: ask for an ASCII "
            "address"
        )
    if at and not domain.isascii():
        # An internationalised domain (IDNA 2008, as the contract's email-validator reads it) travels as its ASCII
        # form: the header and the envelope carry ``xn--…``, which every mail server understands.
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidAddress(f"{value!r} has a domain that is not a valid internationalised name: {exc}") from None
        value = f"{local}@{domain}"
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
    """The reminder as the exact bytes to hand to SMTP DATA, checked by :func:`verify` before it is returned."""
    checked = tuple(check_address(r) for r in recipients)
    if not checked:
        raise InvalidAddress("the reminder has no recipient")
    check_address(sender)
    subject = check_header_text(" ".join(rendered.subject.split(" ")).strip(" "), "the subject")
    if not subject:
        raise UnsafeHeaderText("the subject is empty: refused, the reminder is not sent")
    ident = message_id(command_id, domain)
    head = [
        f"From: {sender}",
        _fold("To:", [f"{r}," for r in checked[:-1]] + [checked[-1]]),
        "Subject: " + encode_subject(subject),
        "Date: " + format_datetime((date or datetime.now(UTC)).astimezone(UTC)),
        f"Message-ID: {ident}",
    ]
    # Derived from the content, so the content cannot contain it (it would need its own hash in it).
    try:
        content = "\x1f".join((command_id, rendered.text, rendered.html)).encode("utf-8")
        body = mime_body("=_" + hashlib.sha256(content).hexdigest()[:40], rendered.text, rendered.html)
    except (ValueError, TypeError) as exc:  # e.g. lone surrogates in the body
        raise MimeError(f"cannot build the message: {exc}") from exc
    data = "\r\n".join(head).encode("ascii") + b"\r\n" + body
    built = Built(ident, sender, checked, subject, data, rendered.text, rendered.html)
    verify(data, built)
    return built


def mime_body(boundary: str, text: str, html: str) -> bytes:
    """The MIME-Version and Content-Type fields, a blank line, then the multipart/alternative body: the plain text
    and the HTML, each quoted-printable UTF-8 under its fixed part header (:data:`PART_HEADERS`).

    Byte for byte what ``EmailMessage(policy=SMTP)`` writes for ``set_content(text, cte="quoted-printable")`` then
    ``add_alternative(html, ...)`` (tests/unit/notifier/test_mime.py holds the two side by side), with the encoding
    done by the email package's own quoted-printable encoder, without building and generating a message object.
    """
    lines = [f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n']
    for subtype, content in (("plain", text), ("html", html)):
        encoded = quoprimime.body_encode(b"\n".join(content.encode("utf-8").splitlines()).decode("latin-1") + "\n", 78)
        lines += [f"--{boundary}", PART_HEADERS[subtype], "", encoded.replace("\n", "\r\n")]
    lines.append(f"--{boundary}--\r\n")
    return "\r\n".join(lines).encode("ascii")


def encode_subject(subject: str) -> str:
    """The Subject field body: folded plain ASCII when it is printable ASCII, else RFC 2047 ``Q`` encoded words.

    The encoding is done here, character by character (a character's UTF-8 bytes never straddle two words), so no
    policy of the email package decides what the header line becomes.
    """
    words = subject.split(" ")
    if subject.isascii() and subject.isprintable() and all(len(w) <= _LINE - len("Subject: ") for w in words):
        return _fold("Subject:", words)[len("Subject: ") :]
    encoded: list[str] = []
    chunk = ""
    for char in subject:
        piece = "".join(
            chr(byte) if byte in _Q_SAFE else "_" if byte == 0x20 else f"={byte:02X}" for byte in char.encode()
        )
        if len(chunk) + len(piece) > _Q_PAYLOAD:
            encoded.append(f"=?utf-8?q?{chunk}?=")
            chunk = ""
        chunk += piece
    encoded.append(f"=?utf-8?q?{chunk}?=")
    return "\r\n ".join(encoded)


def _fold(name: str, words: Sequence[str]) -> str:
    """``name`` and the words on lines of at most 78 characters where the words allow, continuation lines indented."""
    lines = [name]
    for word in words:
        if len(lines[-1]) + 1 + len(word) > _LINE and lines[-1] != name:
            lines.append("")
        lines[-1] += " " + word
    return "\r\n".join(lines)


# ------------------------------------------------------------------------------------------------ verification
def verify(data: bytes, built: Built, *, earlier: bool = False) -> str:
    """The subject ``data`` reads back; :class:`RefusedMessage` unless it says exactly what ``built`` meant to say.

    Checked on the raw bytes (7-bit, CRLF only, the header section's field names), then the header section through
    the stdlib parser under ``compat32`` and under ``default`` (the policy whose header parsing and folding
    CVE-2024-6923 was about): both must read exactly the intended header fields, From, To, Subject and Message-ID,
    and the same multipart boundary. The body is split at that boundary as any MIME parser splits it (a line opening
    with it), and must be exactly the text/plain then the text/html part, with the part headers relance writes
    (:data:`PART_HEADERS`, which read the same under any policy) and content decoding to the rendered text. A
    message that either policy would read differently (an extra header, another recipient, a body starting early),
    or whose body is not exactly that, is refused before SMTP sees it; the body is not run through the stdlib's
    parser, which compiles a pattern per boundary, that is per message.

    ``earlier``: ``data`` was built by an earlier attempt (stored, and the bytes every attempt sends), possibly with
    templates or a customer name since changed: its subject must then read the same under both policies and be safe
    text, and its body must be the two intended parts, rather than equal this attempt's rendering. Headers, From, To
    (the envelope this attempt uses) and Message-ID must still be exactly the intended ones.
    """
    problems = _raw_problems(data)
    subjects: list[str] = []
    if not problems:
        end = data.index(b"\r\n\r\n") + 4
        heads = [BytesHeaderParser(policy=policy).parsebytes(data[:end]) for policy in (compat32, _default_once())]
        for name, parsed in zip(("compat32", "default policy"), heads, strict=True):
            found, subject = _header_problems(parsed, built, earlier)
            problems += [f"{name}: {p}" for p in found]
            subjects.append(subject)
        boundaries = {(parsed.get_content_type(), parsed.get_boundary()) for parsed in heads}
        if len(boundaries) > 1:
            problems.append(f"the two policies read the body differently: {boundaries}")
        problems += _body_problems(data[end:], *boundaries.pop(), built, earlier)
    if earlier and not problems:
        if len(set(subjects)) > 1:
            problems.append(f"its Subject reads differently under the two policies: {subjects}")
        elif unsafe_reason(subjects[0]) is not None:
            problems.append(f"its Subject {subjects[0]!r} {unsafe_reason(subjects[0])}")
    if problems:
        raise RefusedMessage("the built message does not say what was intended: " + "; ".join(problems))
    return subjects[0]


def _raw_problems(data: bytes) -> list[str]:
    if not data.isascii():
        return ["it contains 8-bit bytes"]
    if data.count(b"\r") != data.count(b"\r\n") or data.count(b"\n") != data.count(b"\r\n"):
        return ["it contains a bare CR or LF"]
    head, separator, _ = data.partition(b"\r\n\r\n")
    if not separator:
        return ["it has no blank line ending the headers"]
    lines = head.split(b"\r\n")
    if any(len(line) > 998 for line in lines):
        return ["a header line is longer than 998 characters"]
    names = [line.split(b":", 1)[0].decode() for line in lines if line and line[:1] not in (b" ", b"\t")]
    if tuple(names) != HEADERS:
        return [f"its header fields are {names}, expected {list(HEADERS)}"]
    return []


def _header_problems(parsed: Message, built: Built, earlier: bool) -> tuple[list[str], str]:
    """What differs from the intent in the header fields as ``parsed`` reads them, and the subject it read."""
    problems: list[str] = []
    if tuple(parsed.keys()) != HEADERS:
        problems.append(f"header fields {parsed.keys()}, expected {list(HEADERS)}")
    if parsed.defects:
        problems.append(f"defects {[type(d).__name__ for d in parsed.defects]}")
    if _addresses(parsed, "From") != [built.sender]:
        problems.append(f"From reads {_addresses(parsed, 'From')}, expected {built.sender!r}")
    if _addresses(parsed, "To") != list(built.recipients):
        problems.append(f"To reads {_addresses(parsed, 'To')}, expected {list(built.recipients)}")
    subject = str(parsed["Subject"])  # the default policy unfolds and decodes; compat32 gives the raw field body
    if parsed.policy is compat32:
        subject = str(make_header(decode_header(_UNFOLD.sub("", subject))))
    if subject != built.subject and not earlier:
        problems.append(f"Subject reads {subject!r}, expected {built.subject!r}")
    if str(parsed["Message-ID"]).strip() != built.message_id:
        problems.append(f"Message-ID reads {parsed['Message-ID']!r}, expected {built.message_id!r}")
    return problems, subject


def _body_problems(body: bytes, content_type: str, boundary: str | None, built: Built, earlier: bool) -> list[str]:
    """What differs from the intent in ``body``, split at the boundary both policies read: exactly the text/plain
    then the text/html part, each with its fixed part header (:data:`PART_HEADERS`) and no other line opening with
    the boundary (which any MIME parser would take for one), decoding to the rendered text."""
    marker = f"--{boundary}".encode("ascii")
    opening, closing, between = marker + b"\r\n", b"\r\n" + marker + b"--\r\n", b"\r\n" + marker + b"\r\n"
    inner = body[len(opening) : -len(closing)]
    parts = inner.split(between)
    if (
        content_type != "multipart/alternative"
        or not boundary
        or not body.startswith(opening)
        or not body.endswith(closing)
        or len(parts) != 2
        or any(line.startswith(marker) for part in parts for line in part.split(b"\r\n"))
    ):
        return [f"body is not multipart/alternative of text/plain and text/html alone ({content_type})"]
    problems: list[str] = []
    for part, subtype, intended in zip(parts, ("plain", "html"), (built.text, built.html), strict=True):
        header, _, content = part.partition(b"\r\n\r\n")
        if header != PART_HEADERS[subtype].encode("ascii"):
            problems.append(f"the text/{subtype} part has the header fields {header!r}, expected its own")
        elif not earlier and (_decoded(content) or "").splitlines() != intended.splitlines():
            problems.append(f"the text/{subtype} part does not decode to the rendered text")
    return problems


def _addresses(parsed: Message, name: str) -> list[str]:
    """The addresses of a header as the parser reads them; a display name makes the entry ``name <address>``."""
    values = [str(v) for v in parsed.get_all(name) or []]
    return [address if not display else f"{display} <{address}>" for display, address in getaddresses(values)]


def _decoded(content: bytes) -> str | None:
    """A part's quoted-printable UTF-8 content as text (decoded by :mod:`binascii`, not by the encoder that wrote
    it); None if it is not UTF-8."""
    try:
        return binascii.a2b_qp(content).decode("utf-8")
    except UnicodeDecodeError:
        return None


class _ParsedOnce(HeaderRegistry):
    """The default policy's headers, each distinct field parsed once: the parser and the checks fetch a message's
    fields again and again (Content-Type a dozen times per message), and each fetch would parse the field anew into
    an equal header object."""

    def __init__(self) -> None:
        super().__init__()
        self._parsed: dict[tuple[str, str], Any] = {}

    def __call__(self, name: str, value: str) -> Any:
        key = (name.lower(), value)
        found = self._parsed.get(key)
        if found is None:
            found = self._parsed[key] = super().__call__(name, value)
        return found


def _default_once() -> email_policy.Policy:
    """The ``default`` policy for reading one message (its parsed fields are kept for that message only)."""
    return email_policy.default.clone(header_factory=_ParsedOnce())
