"""The sender file: refused at start-up when a value could forge an e-mail header."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.notifier.sender import load_sender
from shared.config import ConfigurationError


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ('default: {company: "Acme =?utf-8?q?=0D=0ABcc:_spy@attacker.example?="}\n', "default.company"),
        ('default: {company: "Acme\\u2028Bcc: spy@attacker.example"}\n', "default.company"),
        ('default: {company: A, address: ["1 rue X", "Lyon\\x85Bcc: x"]}\n', "default.address"),
        ('default: {company: A, iban: "FR76 =?UTF-8?B?DQpCY2M6IHNweUBhdHRhY2tlci5leGFtcGxl?="}\n', "default.iban"),
        ('default: {company: A}\ntenants: {t2: {company: "B\\r\\nReply-To: x@y.example"}}\n', "tenants.t2.company"),
        ('default: {company: "A\\x9b"}\n', "default.company"),
    ],
)  # fmt: skip
def test_a_sender_value_that_could_forge_a_header_stops_the_start_up_naming_the_field(
    tmp_path: Path, document: str, where: str
) -> None:
    # Given a sender file with an encoded word, a Unicode line break or a control in one value (any tenant's)
    path = tmp_path / "sender.yaml"
    path.write_text(document, encoding="utf-8")
    # When it is loaded, even for another tenant, Then start-up stops naming the file and the field
    with pytest.raises(ConfigurationError, match=rf"{path}: {where} .* relance refuses them"):
        load_sender(path, "t1")


def test_a_sender_with_accents_and_dashes_loads(tmp_path: Path) -> None:
    path = tmp_path / "sender.yaml"
    path.write_text('default: {company: "Société Générale — Ça va", iban: "FR76 1234"}\n', encoding="utf-8")
    assert load_sender(path).company == "Société Générale — Ça va"
    assert load_sender(None).company  # the shipped placeholder
