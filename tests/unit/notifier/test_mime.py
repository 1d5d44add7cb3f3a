"""MIME building: byte-exact, deterministic, and closed to header injection."""

from __future__ import annotations

import email
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.policy import compat32, default

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_an_internationalised_domain_travels_in_its_ascii_form_in_the_header_and_the_envelope() -> None:
    # Given a customer address whose domain is internationalised (the contract accepts it)
    built = build(recipients=["compta@münchen.de", "jane@example.org"])
    # Then the To header and the recipients SMTP is given carry the xn-- form, which the check reads back
    assert built.recipients == ("compta@xn--mnchen-3ya.de", "jane@example.org")
    assert email.message_from_bytes(built.data, policy=default)["To"] == "compta@xn--mnchen-3ya.de, jane@example.org"


def test_a_non_ascii_local_part_is_refused_saying_it_needs_smtputf8() -> None:
    with pytest.raises(mime.InvalidAddress, match="SMTPUTF8"):
        build(recipients=["andré@example.org"])


def test_a_subject_with_crlf_is_refused_not_folded() -> None:
    with pytest.raises(mime.UnsafeHeaderText, match="U\\+000D"):
        build(Rendered(subject="{{ 7*7 }} <script>\r\nBcc: x@example.com"))


def test_message_id_falls_back_to_a_hash_for_unsafe_command_ids() -> None:
    assert mime.message_id("esc-abc", "mail.example.com") == "<esc-abc@mail.example.com>"
    odd = mime.message_id("a b<c>", "mail.example.com")
    assert odd.startswith("<h-") and odd == mime.message_id("a b<c>", "mail.example.com")


# --------------------------------------------------------------------------------- header injection (issue 8.1)
# What CPython's email package before 3.11.10 / 3.12.5 (CVE-2024-6923) turns into real header lines, and the Unicode
# line breaks and controls that some mail software treats as one.
HOSTILE = [
    "Acme =?utf-8?q?=0D=0ABcc:_spy@attacker.example?=",
    "Acme =?utf-8?q?=0D=0AReply-To:_spy@attacker.example?=",
    "Acme =?utf-8?q?=0D=0A=0D=0APAY_TO_IBAN_FR76_6666_6666?=",
    "Acme =?utf-8?b?DQpCY2M6IHNweUBhdHRhY2tlci5leGFtcGxl?=",
    "Acme =?UTF-8?B?DQpSZXBseS1Ubzogc3B5QGF0dGFja2VyLmV4YW1wbGUNCg0KUEFZIFRPIElCQU4gRlI3NiA2NjY2?=",
    "Acme =?UTF-8?Q?=0D=0ABcc:_spy@attacker.example?=",
    "Acme =?iso-8859-1*en?q?=0D=0ABcc:_spy@attacker.example?=",
    "Acme =? utf-8 ?q ?=0D=0ABcc:_spy@attacker.example?=",
    "Acme =?utf-8?\tQ?=0D=0ABcc:_spy@attacker.example?=",
    "Acme\r\nBcc: spy@attacker.example",
    "Acme\nBcc: spy@attacker.example",
    "Acme\u2028Bcc: spy@attacker.example",
    "Acme\u2029Bcc: spy@attacker.example",
    "Acme\x85Bcc: spy@attacker.example",
    "Acme\x0bBcc: spy@attacker.example",
    "Acme\x0cBcc: spy@attacker.example",
    "Acme\x9bBcc: spy@attacker.example",
    "Acme\x00",
    "Acme\x7f",
    "Acme \u202eelpmaxe.rekcatta",
    "\ufeffAcme",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_subject_with_an_encoded_word_a_line_break_or_a_control_is_refused(text: str) -> None:
    # Given a subject that carries one of the attacks, When the message is built, Then it is refused, never cleaned
    with pytest.raises(mime.UnsafeHeaderText, match="refused, the reminder is not sent"):
        build(Rendered(subject=f"Rappel : factures échues — {text}"))


@pytest.mark.parametrize("text", ["Acme =?x", "SARL ?= Dupont", "Prix = ? (q?)", "a=?b", "Q&A ?b? =?"])
def test_text_that_only_looks_like_the_start_of_an_encoded_word_is_accepted(text: str) -> None:
    assert mime.unsafe_reason(text) is None


def test_a_non_ascii_subject_is_encoded_by_relance_and_round_trips_under_both_policies() -> None:
    # Given a subject with accents, a cedilla and an em dash
    subject = "Rappel : factures échues — Société Générale — Ça va"
    # When it is built
    built = build(Rendered(subject=subject))
    # Then the header section is 7-bit, the subject is RFC 2047 Q encoded words, and both parsers read it back
    head = built.data.split(b"\r\n\r\n")[0].decode("ascii")
    assert "Subject: =?utf-8?q?Rappel_=3A_factures_=C3=A9chues_=E2=80=94_" in head
    assert all(len(line) <= 76 for line in head.splitlines() if "=?utf-8?q?" in line)
    assert str(email.message_from_bytes(built.data, policy=default)["Subject"]) == subject
    raw = email.message_from_bytes(built.data, policy=compat32)["Subject"].replace("\r\n", "")
    assert str(make_header(decode_header(raw))) == subject


def test_a_long_ascii_subject_is_folded_at_spaces_and_reads_back_whole() -> None:
    subject = " ".join(["Relance"] + [f"F-2026-{n:04d}" for n in range(20)])
    built = build(Rendered(subject=subject))
    head = built.data.split(b"\r\n\r\n")[0].decode("ascii")
    assert all(len(line) <= 78 for line in head.split("\r\n")) and "Subject: Relance F-2026-0000" in head
    assert email.message_from_bytes(built.data, policy=default)["Subject"] == subject


def test_only_the_intended_headers_are_written_each_once() -> None:
    built = build(recipients=["jane@example.org", "ap@example.org"])
    parsed = email.message_from_bytes(built.data, policy=default)
    assert parsed.keys() == list(mime.HEADERS)
    assert parsed["To"] == "jane@example.org, ap@example.org"


@given(st.text(max_size=120))
@settings(max_examples=300, deadline=None)
def test_any_subject_is_either_refused_or_reads_back_exactly_with_no_other_header(subject: str) -> None:
    # Given any text as the subject (hypothesis tries controls, separators, surrogates, encoded-word pieces)
    try:
        built = build(Rendered(subject=f"Relance {subject}"))
    except mime.MimeError:
        return  # refused before anything could be sent
    # Then what was built names exactly the intended headers and recipient, and its subject is the one asked for
    for policy in (default, compat32):
        parsed = email.message_from_bytes(built.data, policy=policy)
        assert parsed.keys() == list(mime.HEADERS) and parsed.get_all("To") == ["jane@example.org"]
    assert str(email.message_from_bytes(built.data, policy=default)["Subject"]) == built.subject
    assert built.subject == " ".join(f"Relance {subject}".split(" ")).strip(" ")


# ------------------------------------------------------------------------------ the built bytes, checked again
def _forged(head: str) -> bytes:
    """A message whose header section is ``head`` and whose body is the genuine one."""
    genuine = build().data
    return head.replace("\n", "\r\n").encode() + genuine[genuine.index(b"\r\nMIME-Version:") :]


GENUINE_HEAD = (
    "From: billing@example.com\nTo: jane@example.org\nSubject: Relance : facture F-1\n"
    "Date: Mon, 23 Nov 2026 09:00:00 +0000\nMessage-ID: <esc-1@mail.example.com>"
)


def test_the_genuine_bytes_pass_the_check() -> None:
    built = build()
    assert _forged(GENUINE_HEAD) == built.data
    mime.verify(built.data, built)


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (GENUINE_HEAD.replace("F-1\n", "F-1 \nBcc: spy@attacker.example\n"), "header fields"),
        (GENUINE_HEAD.replace("F-1\n", "F-1\nReply-To: spy@attacker.example\n"), "header fields"),
        (GENUINE_HEAD.replace("F-1\n", "F-1\n\nPAY TO IBAN FR76 6666\n"), "header fields"),
        (GENUINE_HEAD.replace("F-1\n", "F-1\nSubject: second\n"), "header fields"),
        (GENUINE_HEAD.replace("jane@example.org", "jane@example.org, spy@attacker.example"), "To reads"),
        (GENUINE_HEAD.replace("jane@example.org", "Jane <spy@attacker.example>"), "To reads"),
        (GENUINE_HEAD.replace("F-1", "F-2"), "Subject reads"),
        (GENUINE_HEAD.replace("F-1", "=?utf-8?q?F-1=0D=0ABcc:_spy@attacker.example?="), "Subject reads"),
        (GENUINE_HEAD.replace("From: billing@example.com", "From: spy@attacker.example"), "From reads"),
        (GENUINE_HEAD.replace("esc-1@", "esc-2@"), "Message-ID reads"),
        (GENUINE_HEAD.replace("F-1\n", "F-1\rBcc: spy@attacker.example\n"), "bare CR"),
        (GENUINE_HEAD.replace("F-1", "F-1 é"), "8-bit"),
    ],
)  # fmt: skip
def test_bytes_that_read_back_otherwise_than_intended_are_refused(head: str, why: str) -> None:
    # Given bytes as a vulnerable email package (or an altered stored copy) would hand to SMTP
    forged = _forged(head)
    # When they are checked against what the reminder was meant to say, Then they are refused, saying why
    with pytest.raises(mime.RefusedMessage, match=why):
        mime.verify(forged, build())


def test_a_body_that_differs_from_the_rendered_text_is_refused() -> None:
    genuine = build()
    forged = genuine.data.replace(b"Montant : 1 234,56", b"Montant : 9 999,99")
    with pytest.raises(mime.RefusedMessage, match="text/plain part does not decode"):
        mime.verify(forged, genuine)


def test_an_earlier_attempts_bytes_may_carry_an_older_subject_and_text_but_not_other_headers() -> None:
    # Given bytes stored by a first attempt, before the customer's name and the templates changed
    first = build(Rendered(subject="Relance : facture F-1 — Dupont", text="Ancien texte\n"))
    now = build(Rendered(subject="Relance : facture F-1 — Dupont SA"))
    # Then they are accepted as the bytes to send, and say which subject they carry
    assert mime.verify(first.data, now, earlier=True) == "Relance : facture F-1 — Dupont"
    # But not with an extra header, another recipient, or a subject that decodes to a line break
    with pytest.raises(mime.RefusedMessage, match="header fields"):
        mime.verify(first.data.replace(b"\r\nDate:", b"\r\nBcc: spy@attacker.example\r\nDate:"), now, earlier=True)
    with pytest.raises(mime.RefusedMessage, match="To reads"):
        mime.verify(first.data, build(recipients=["other@example.org"]), earlier=True)
    forged = _forged(GENUINE_HEAD.replace("F-1", "=?utf-8?q?F-1=0D=0ABcc:_spy@attacker.example?="))
    with pytest.raises(mime.RefusedMessage, match="U\\+000D"):
        mime.verify(forged, build(), earlier=True)
