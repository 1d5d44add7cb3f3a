"""The cheap parse-back check still refuses what the full one refused, and the body is the email package's own."""

from __future__ import annotations

import email
import hashlib
from email.message import EmailMessage
from email.policy import SMTP, compat32, default

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier import mime
from tests.unit.notifier.test_mime import Rendered, build


def _stdlib_body(boundary: str, text: str, html: str) -> bytes:
    """The body as the email package writes it (what relance built with until it assembled the body itself)."""
    body = EmailMessage(policy=SMTP)
    body.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    body.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in body.iter_parts():
        del part["MIME-Version"]
    body.set_boundary(boundary)
    return body.as_bytes(policy=SMTP)


@given(st.text(), st.text())
@settings(max_examples=300, deadline=None)
def test_the_body_is_byte_for_byte_the_email_packages(text: str, html: str) -> None:
    try:
        expected = _stdlib_body("=_" + "0" * 40, text, html)
    except (ValueError, TypeError):
        with pytest.raises(ValueError):
            mime.mime_body("=_" + "0" * 40, text, html)
        return
    assert mime.mime_body("=_" + "0" * 40, text, html) == expected


@pytest.mark.parametrize(
    "text",
    ["Montant : 1 234,56 €\n", "x" * 300 + "\n", "=" * 200, " trailing \n\t\n", "a\r\nb\rc\n", "\u202eevil\u2066\n"],
)
def test_a_built_message_reads_back_under_both_policies_whole(text: str) -> None:
    built = build(Rendered(text=text, html=f"<p>{text}</p>"))
    for policy in (compat32, default):
        parsed = email.message_from_bytes(built.data, policy=policy)
        parts = list(parsed.walk())[1:]
        assert not parsed.defects and [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        plain = parts[0].get_payload(decode=True)
        assert isinstance(plain, bytes) and plain.decode("utf-8").splitlines() == text.splitlines()


def _boundary(data: bytes) -> bytes:
    return data.split(b'boundary="', 1)[1].split(b'"', 1)[0]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        # a part whose header says something else than the fixed part header
        (lambda d: d.replace(b'text/plain; charset="utf-8"', b'text/plain; charset="koi8-r"', 1), "part has"),
        (lambda d: d.replace(b"quoted-printable", b"base64", 1), "part has"),
        (lambda d: d.replace(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n", b"\r\n", 1), "part has"),
        # a boundary line smuggled into the text ends its part early: an extra part, or a part that decodes otherwise
        (lambda d: d.replace(b"Montant", b"--" + _boundary(d) + b"--\r\nMontant", 1), "body is|does not decode"),
        # a body that never closes, or a boundary the two policies would read otherwise
        (lambda d: d.replace(b"--" + _boundary(d) + b"--", b"", 1), "body is"),
        (lambda d: d.replace(b' boundary="', b' boundary*0="x"; boundary="', 1), "defects|differently|body is"),
        # the HTML part changed (a link replaced) while the text part is intact
        (lambda d: d.replace(b"<p>", b"<p><a href=3D\"https://attacker.example\">", 1), "text/html part does not"),
    ],
)  # fmt: skip
def test_a_body_altered_after_building_is_refused(change: object, why: str) -> None:
    genuine = build()
    forged = change(genuine.data)  # type: ignore[operator]  # each case is a bytes -> bytes function
    assert forged != genuine.data
    with pytest.raises(mime.RefusedMessage, match=why):
        mime.verify(forged, genuine)


@pytest.mark.parametrize(
    "subject",
    [
        "Relance Dupont\r\nBcc: spy@attacker.example",  # CR/LF in a name
        "Relance Dupont\u2028Bcc: spy@attacker.example",  # a Unicode line break
        "Relance \u202eDupont",  # an RTL override
        "Relance =?utf-8?q?=0D=0ABcc:_spy@attacker.example?=",  # an encoded word
    ],
)
def test_hostile_subjects_are_still_refused(subject: str) -> None:
    with pytest.raises(mime.UnsafeHeaderText):
        build(Rendered(subject=subject))


@pytest.mark.parametrize("subject", ["Relance : facture F-1 — Société Générale", "Relance " + "F-2026-0001 " * 30])
def test_non_ascii_and_long_subjects_read_back_whole_under_both_policies(subject: str) -> None:
    built = build(Rendered(subject=subject))
    assert mime.verify(built.data, built) == built.subject
    assert str(email.message_from_bytes(built.data, policy=default)["Subject"]) == built.subject


def test_the_boundary_is_derived_from_the_content() -> None:
    built = build()
    content = "\x1f".join(("esc-1", Rendered().text, Rendered().html)).encode()
    assert _boundary(built.data).decode() == "=_" + hashlib.sha256(content).hexdigest()[:40]
