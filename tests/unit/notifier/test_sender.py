"""The placeholder sender company never signs real reminders unnoticed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.notifier.sender import SHIPPED_SENDER, refuse_placeholder
from shared.config import ConfigurationError

OWN = """\
default:
  company: Boulangeries Martin SA
  address: [3 place du Marché, 33000 Bordeaux]
  iban: FR76 3000 4000 0500 0012 3456 789
tenants:
  acme-uk: {company: Acme UK Ltd, iban: GB33 BUKB 2020 1555 5555 55}
"""


def _refused(path: Path | None) -> str:
    with pytest.raises(ConfigurationError) as refused:
        refuse_placeholder(path)
    return str(refused.value)


def test_the_shipped_placeholder_is_refused_saying_what_to_provide() -> None:
    message = _refused(None)
    assert f"the default sender in the shipped placeholder {SHIPPED_SENDER} (RELANCE_SENDER_FILE is unset)" in message
    assert "placeholder company, iban and signatory" in message
    assert "Point RELANCE_SENDER_FILE to a YAML file" in message and "RELANCE_ALLOW_PLACEHOLDER_SENDER=true" in message


def test_an_unchanged_copy_of_the_placeholder_is_refused_too(tmp_path: Path) -> None:
    copy = tmp_path / "sender.yaml"
    shutil.copy(SHIPPED_SENDER, copy)
    assert f"the default sender in {copy} still has the placeholder company" in _refused(copy)


def test_a_company_with_the_placeholder_bank_details_is_refused(tmp_path: Path) -> None:
    half = tmp_path / "sender.yaml"
    half.write_text(SHIPPED_SENDER.read_text(encoding="utf-8").replace("Exemple Distribution SAS", "Martin SA"))
    assert "still has the placeholder iban" in _refused(half)


def test_a_tenant_left_with_the_placeholder_is_named(tmp_path: Path) -> None:
    path = tmp_path / "sender.yaml"
    path.write_text(OWN + "  acme-fr: {company: Exemple Distribution SAS}\n", encoding="utf-8")
    assert "the sender of tenant 'acme-fr'" in _refused(path)


def test_the_company_s_own_details_pass(tmp_path: Path) -> None:
    path = tmp_path / "sender.yaml"
    path.write_text(OWN, encoding="utf-8")
    refuse_placeholder(path)
