"""MIME building: byte-exact, deterministic, and closed to header injection."""

from __future__ import annotations

import email
from dataclasses import dataclass
from datetime import UTC, datetime
from email.policy import default

import pytest

from services.notifier import mime

AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Rendered:
    subject: str = "Relance : facture F-1"
    text: str = "Montant : 1 234,56 €\n.\n"
    html: str = "<p>Montant : 1&nbsp;234,56&nbsp;€</p>"
    template_name: str = "reminder_1"
    template_version: str = "v1"


def build(
    rendered: Rendered = Rendered(), recipients: list[str] | None = None, command_id: str = "esc-1"
) -> mime.Built:
    return mime.build(
        rendered,
        sender="billing@example.com",
        recipients=recipients or ["jane@example.org"],
        command_id=command_id,
        domain="mail.example.com",
        date=AT,
    )


def test_multipart_alternative_with_both_parts_and_headers() -> None:
    built = build()

    parsed = email.message_from_bytes(built.data, policy=default)

    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["From"] == "billing@example.com" and parsed["To"] == "jane@example.org"
    assert parsed["Subject"] == "Relance : facture F-1" and parsed["Message-ID"] == "<esc-1@mail.example.com>"
    assert parsed["Date"] == "Mon, 23 Nov 2026 09:00:00 +0000"
    assert b"\r\n" in built.data and b"\n" not in built.data.replace(b"\r\n", b"")


def test_same_inputs_same_bytes_and_hash() -> None:
    assert build().data == build().data and build().sha256 == mime.sha256(build().data)
    assert build(command_id="esc-2").data != build().data


@pytest.mark.parametrize(
    "address",
    ["jane@example.org\r\nBcc: x@example.com", "jane@example.org\nBcc: x@example.com", "Jane <jane@example.org>",
     "jane@example.org, x@example.com", "no-at-sign", ""],
)  # fmt: skip
def test_a_hostile_or_malformed_recipient_is_refused(address: str) -> None:
    with pytest.raises(mime.InvalidAddress):
        build(recipients=[address])


def test_a_subject_with_crlf_cannot_add_a_header() -> None:
    built = build(Rendered(subject="{{ 7*7 }} <script>\r\nBcc: x@example.com"))

    parsed = email.message_from_bytes(built.data, policy=default)

    assert parsed["Bcc"] is None and parsed["Subject"] == "{{ 7*7 }} <script> Bcc: x@example.com"


def test_message_id_falls_back_to_a_hash_for_unsafe_command_ids() -> None:
    assert mime.message_id("esc-abc", "mail.example.com") == "<esc-abc@mail.example.com>"
    odd = mime.message_id("a b<c>", "mail.example.com")
    assert odd.startswith("<h-") and odd == mime.message_id("a b<c>", "mail.example.com")
