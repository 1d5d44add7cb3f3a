"""Rendering reminders: every level in every language, exact formatting, no injection, overrides, broken files."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from services.notifier import mime
from services.notifier.mime import UnsafeHeaderText
from services.notifier.render import (
    LANGUAGES,
    LEVEL_TEMPLATES,
    SHIPPED_DIR,
    load_templates,
    render,
    sample_reminder,
)
from services.notifier.sender import Sender, load_sender
from shared.config import ConfigurationError

SENDER = Sender(
    company="Fournitures Durand SA", address=("3 quai Est", "69002 Lyon"), iban="FR76 1234", email="ar@d.fr"
)
PROFILE: dict[str, Any] = {"name": "Boulangeries Martin SAS", "contact_name": "Claire Martin", "language": "fr"}
NNBSP, NBSP = "\u202f", "\xa0"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", LEVEL_TEMPLATES)
@pytest.mark.parametrize("charges", [True, False])
def test_every_level_and_language_renders_all_parts(template: str, language: str, charges: bool) -> None:
    # Given a reminder at this level, with or without interest and fee
    data = sample_reminder(template, charges=charges)
    # When it is rendered (StrictUndefined: any undefined variable raises)
    rendered = render(data, PROFILE, SENDER, language, load_templates())
    # Then every part is there, names and invoices included, and the charges only when present
    assert rendered.subject and "\n" not in rendered.subject and "Boulangeries Martin SAS" in rendered.subject
    for part in (rendered.text, rendered.html):
        assert "Claire Martin" in part and "F-2026-0001" in part and "Fournitures Durand SA" in part
        assert ("12,34" in part or "12.34" in part) is charges
    assert rendered.html.lstrip().startswith("<!DOCTYPE html>")
    assert rendered.template_name == template and rendered.language == language
    assert re.fullmatch(r"[0-9a-f]{64}", rendered.template_version)
    if template != "courtesy":
        assert "L441-10" in rendered.text and "D441-5" in rendered.text


def test_french_money_and_dates_are_formatted_exactly() -> None:
    # Given an invoice of 1234.56 EUR due on 31 October 2026, with 12.34 of interest and the 40 EUR fee
    rendered = render(sample_reminder("formal_notice"), PROFILE, SENDER, "fr")
    # Then Babel's French formatting is used: narrow no-break space for thousands, no-break space before €
    assert f"montant 1{NNBSP}234,56{NBSP}€" in rendered.text
    assert f"Total à régler : 1{NNBSP}286,90{NBSP}€" in rendered.text
    assert f"pénalités de retard 12,34{NBSP}€, indemnité forfaitaire 40,00{NBSP}€" in rendered.text
    assert "du 1er octobre 2026, échéance le 31 octobre 2026" in rendered.text
    assert "mise en demeure au sens de l'article 1344 du Code civil" in rendered.text


def test_english_money_and_dates() -> None:
    rendered = render(sample_reminder("reminder_1"), PROFILE, SENDER, "en")
    assert "dated 1 October 2026, due 31 October 2026: amount €1,234.56" in rendered.text
    assert "Total to pay: €1,286.90" in rendered.text


def test_unknown_language_falls_back_to_english() -> None:
    assert render(sample_reminder("reminder_1"), PROFILE, SENDER, "de-DE").language == "en"
    assert render(sample_reminder("reminder_1"), PROFILE, SENDER, "fr-FR").language == "fr"


def test_erp_data_cannot_inject_markup_or_template_code() -> None:
    # Given a customer name and an invoice number carrying template code and markup
    profile = {"name": "{{ 7*7 }} <script>alert(1)</script> Bcc: x@example.com", "contact_name": "{% if 1 %}X"}
    data = sample_reminder("reminder_2")
    data["lines"][0]["number"] = "<b>F-1</b>{{ 7*7 }}"
    # When the reminder is rendered
    rendered = render(data, profile, SENDER, "fr")
    # Then nothing is evaluated, HTML is escaped, the text keeps it literally, and no header comes of it
    for part in (rendered.subject, rendered.text, rendered.html):
        assert "49" not in part
    assert "<script>" not in rendered.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "&lt;b&gt;F-1&lt;/b&gt;{{ 7*7 }}" in rendered.html
    assert "{{ 7*7 }} <script>alert(1)</script>" in rendered.text and "{% if 1 %}X" in rendered.text
    built = mime.build(rendered, sender=SENDER.email, recipients=["a@b.fr"], command_id="c-1", domain="d.fr")
    message = message_from_bytes(built.data, policy=policy.default)
    assert message["Bcc"] is None and message["To"] == "a@b.fr"
    assert "{{ 7*7 }} <script>" in str(message["Subject"])


def test_subject_is_folded_even_when_a_template_emits_line_breaks(tmp_path: Path) -> None:
    # Given a tenant subject template that puts raw line breaks and the name on separate lines
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "reminder_1.subject.txt").write_text("Relance\r\nBcc: x@example.com\n{{ customer.name }}\n")
    # When rendered, Then the subject is one clean line
    rendered = render(sample_reminder("reminder_1"), PROFILE, SENDER, "fr", load_templates(tmp_path))
    assert rendered.subject == "Relance Bcc: x@example.com Boulangeries Martin SAS"


def test_a_tenant_override_wins_and_changes_the_version(tmp_path: Path) -> None:
    # Given an override for every tenant and another for tenant "acme" only
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "reminder_1.subject.txt").write_text("Commun {{ customer.name }}\n")
    (tmp_path / "acme" / "fr").mkdir(parents=True)
    (tmp_path / "acme" / "fr" / "reminder_1.subject.txt").write_text("Acme {{ customer.name }}\n")
    data = sample_reminder("reminder_1")
    shipped = render(data, PROFILE, SENDER, "fr", load_templates())
    # When rendered for acme, for another tenant, and with the shipped set
    acme = render(data, PROFILE, SENDER, "fr", load_templates(tmp_path, "acme"))
    other = render(data, PROFILE, SENDER, "fr", load_templates(tmp_path, "other"))
    # Then the most specific file wins, the other parts stay shipped, and the version tells them apart
    assert acme.subject == "Acme Boulangeries Martin SAS"
    assert other.subject == "Commun Boulangeries Martin SAS"
    assert shipped.subject.startswith("Rappel")
    assert acme.text == shipped.text
    assert len({acme.template_version, other.template_version, shipped.template_version}) == 3


def test_a_broken_template_fails_at_start_up_naming_file_and_line(tmp_path: Path) -> None:
    # Given an override whose third line has a syntax error
    (tmp_path / "en").mkdir()
    broken = tmp_path / "en" / "reminder_2.txt"
    broken.write_text('{% extends "en/_layout.txt" %}\n{% block intro %}\n{% if x %}\n{% endblock %}\n')
    # When the templates are loaded, Then start-up fails naming the file and the line
    with pytest.raises(ConfigurationError, match=rf"{re.escape(str(broken))}:\d+: template syntax error"):
        load_templates(tmp_path)


def test_an_undefined_variable_fails_at_start_up_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "fr").mkdir()
    path = tmp_path / "fr" / "hand_over.subject.txt"
    path.write_text("Dossier\n{{ customer.nickname }}\n")
    with pytest.raises(ConfigurationError, match=rf"{re.escape(str(path))}:2: UndefinedError"):
        load_templates(tmp_path)


@pytest.mark.parametrize(
    ("subject", "error"),
    [
        # the sandbox refuses Python internals
        ("{{ customer.__class__.__mro__ }}\n", r"courtesy\.subject\.txt:1: SecurityError"),
        # an encoded-word opening glued by the template to a harmless value makes an unsafe subject
        ("=?utf-8?q?{{ customer.contact_name }}?=\n", r"fr/courtesy\.subject\.txt: the subject .* encoded word"),
    ],
)
def test_a_subject_template_that_is_unsafe_stops_the_start_up(tmp_path: Path, subject: str, error: str) -> None:
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "courtesy.subject.txt").write_text(subject)
    with pytest.raises(ConfigurationError, match=error):
        load_templates(tmp_path)


def test_shipped_templates_and_sender_load() -> None:
    assert load_templates().directories == [SHIPPED_DIR]
    assert load_sender().company


def test_sender_file_per_tenant_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "sender.yaml"
    path.write_text(
        "default: {company: A, address: [l1, l2], pay_url: 'https://pay/{customer}?a={amount}'}\n"
        "tenants: {t1: {company: B}}\n"
    )
    assert load_sender(path, "t1") == Sender(
        company="B", address=("l1", "l2"), pay_url="https://pay/{customer}?a={amount}"
    )
    assert load_sender(path, "t2").company == "A"
    data = sample_reminder("reminder_1")
    data["customer_id"] = "C/1 &x"
    rendered = render(data, PROFILE, load_sender(path), "en")
    assert "https://pay/C%2F1%20%26x?a=1286.90" in rendered.text
    assert 'href="https://pay/C%2F1%20%26x?a=1286.90"' in rendered.html
    path.write_text("default: {company: A, colour: red}\n")
    with pytest.raises(ConfigurationError, match="colour"):
        load_sender(path)
    path.write_text("default: {company: A, pay_url: 'https://pay/{who}'}\n")
    with pytest.raises(ConfigurationError, match="pay_url"):
        load_sender(path)


@pytest.mark.parametrize(
    "name",
    ["Acme =?utf-8?q?=0D=0ABcc:_spy@attacker.example?=", "Acme =?UTF-8?B?DQpCY2M6IHNweUBhdHRhY2tlci5leGFtcGxl?=",
     "Acme\r\nBcc: spy@attacker.example", "Acme\u2028Bcc: spy@attacker.example", "Acme\x85Bcc: x", "Acme\x9b"],
)  # fmt: skip
def test_a_customer_name_that_could_forge_headers_is_refused_not_tidied(name: str) -> None:
    # Given a name in the ledger carrying an encoded word, a line break or a control (an older ERP, a direct write)
    profile = {**PROFILE, "name": name}
    # When the reminder is rendered, Then it is refused naming the field, whatever the subject template
    with pytest.raises(UnsafeHeaderText, match="the customer's name"):
        render(sample_reminder("reminder_1"), profile, SENDER, "fr")


def test_an_invoice_number_that_could_forge_headers_is_refused() -> None:
    data = sample_reminder("reminder_1")
    data["lines"][0]["number"] = "F-1 =?utf-8?q?=0D=0AReply-To:_spy@attacker.example?="
    with pytest.raises(UnsafeHeaderText, match="the number of invoice INV-1"):
        render(data, PROFILE, SENDER, "fr")


def test_a_normal_non_ascii_name_renders_into_the_subject_unchanged() -> None:
    profile = {**PROFILE, "name": "Société Générale — Ça va"}
    rendered = render(sample_reminder("reminder_1"), profile, SENDER, "fr")
    assert rendered.subject == "Rappel : factures échues — Société Générale — Ça va"
