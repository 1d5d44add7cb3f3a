"""``relance preview`` on a SQLite ledger: the exact parts of the reminder a customer would receive."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path

import pytest

from services.cli import main
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from tests.factories import CUSTOMER, TENANT, customer, incoming, invoice

NNBSP, NBSP = "\u202f", "\xa0"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    engine = make_engine(url)
    events = [
        customer("Boulangeries <Martin>", contact_name="Claire Martin"),
        invoice("I-1", "1234.56", issue_date="2026-09-01", due_date="2026-10-01", number="F-0001"),
        invoice("I-2", "50.00", issue_date="2026-11-20", due_date="2026-12-20"),  # not yet due: not listed
    ]
    Ledger(engine).record([incoming(ev) for ev in events])
    engine.dispose()
    return url


def test_preview_writes_the_exact_parts(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a customer with one invoice 31 days late
    out = tmp_path / "out"
    # When previewing its second reminder
    args = ["preview", "--tenant", TENANT, "--customer", CUSTOMER, "--level", "reminder_2"]
    code = main([*args, "--date", "2026-11-01", "--out", str(out), "--database-url", database_url])
    # Then the four files are written where it says, in the customer's language, with the ledger's figures
    assert code == 0
    folder = out / f"{CUSTOMER}-reminder_2-fr-EUR"
    assert str(folder) in capsys.readouterr().out
    subject = (folder / "subject.txt").read_text(encoding="utf-8")
    text = (folder / "body.txt").read_text(encoding="utf-8")
    html = (folder / "body.html").read_text(encoding="utf-8")
    assert subject.startswith("Second rappel") and "Boulangeries <Martin>" in subject
    assert f"montant 1{NNBSP}234,56{NBSP}€" in text and f"31{NBSP}jours de retard" in text and "F-I-2" not in text
    assert "Boulangeries &lt;Martin&gt;" in html
    message = message_from_bytes((folder / "message.eml").read_bytes(), policy=policy.default)
    assert message["To"] == "compta@martin.fr" and message["Subject"] == subject.strip()
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_preview_in_english(database_url: str, tmp_path: Path) -> None:
    args = ["preview", "--tenant", TENANT, "--customer", CUSTOMER, "--level", "formal_notice", "--lang", "en"]
    assert main([*args, "--date", "2026-11-01", "--out", str(tmp_path), "--database-url", database_url]) == 0
    text = (tmp_path / f"{CUSTOMER}-formal_notice-en-EUR" / "body.txt").read_text(encoding="utf-8")
    assert "formal notice" in text and "€1,234.56" in text


@pytest.mark.parametrize(
    ("customer_id", "level", "message"),
    [
        ("NOBODY", "reminder_1", "no customer 'NOBODY'"),
        (CUSTOMER, "phone_call", "not a written level"),
        (CUSTOMER, "nonsense", "choose one of courtesy, reminder_1"),
    ],
)
def test_preview_says_clearly_what_is_wrong(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], customer_id: str, level: str, message: str
) -> None:
    args = ["preview", "--tenant", TENANT, "--customer", customer_id, "--level", level, "--out", str(tmp_path)]
    assert main([*args, "--database-url", database_url]) == 1
    assert message in capsys.readouterr().err


def test_preview_of_a_name_that_could_forge_headers_says_why_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a customer whose name in the ledger carries an encoded word (written past the ERP contract)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    engine = make_engine(url)
    hostile = customer("Acme =?utf-8?q?=0D=0ABcc:_spy@attacker.example?=")
    late = invoice("I-1", "10.00", issue_date="2026-09-01", due_date="2026-10-01")
    Ledger(engine).record([incoming(hostile), incoming(late)])
    engine.dispose()
    out = tmp_path / "out"
    # When it is previewed, Then relance says why in one line and writes no file
    args = ["preview", "--tenant", TENANT, "--customer", CUSTOMER, "--level", "reminder_1", "--out", str(out)]
    assert main([*args, "--date", "2026-11-01", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert "cannot preview this reminder: the customer's name" in err and "encoded word" in err
    assert not out.exists()
