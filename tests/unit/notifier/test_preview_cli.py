"""``relance preview`` on a SQLite ledger: the exact parts of the reminder a customer would receive."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from services.cli import main
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from tests.factories import CUSTOMER, TENANT, customer, incoming, invoice, payment

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


def test_preview_of_a_recorded_reminder_is_the_letter_to_post_less_what_was_paid_since(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.escalation.policy import PolicyLibrary
    from services.escalation.service import evaluate
    from services.escalation.worker import real_rules
    from shared.config import load_settings

    # Given a customer's formal notice for L-1 (due 2 March, 32 days late), a younger invoice listed apart
    engine = make_engine(database_url)
    ledger = Ledger(engine)
    who = "C-LETTER"
    history = [
        customer("Boulangeries Martin"),
        invoice("L-1", "1234.56", issue_date="2026-02-01", due_date="2026-03-02", number="F-0001"),
        invoice("L-3", "80.00", issue_date="2026-02-20", due_date="2026-03-20", number="F-0003"),
    ]
    ledger.record([incoming(ev, customer_id=who) for ev in history])
    at = datetime(2026, 4, 3, 9, tzinfo=UTC)
    evaluate(ledger, PolicyLibrary.load(None).for_tenant(TENANT), TENANT, who, at, rules=real_rules(load_settings()))
    stream = ledger.read_stream(TENANT, who)
    [notice] = [e.data for e in stream if e.event_type == "reminder.requested" and e.data["level"] == "formal_notice"]
    assert [line["invoice_id"] for line in notice["lines"]] == ["L-1"]
    assert [line["invoice_id"] for line in notice["also"]] == ["L-3"]
    # When it is previewed by its reminder id, as the send_letter task says
    args = ["preview", "--tenant", TENANT, "--customer", who, "--reminder", notice["reminder_id"]]
    assert main([*args, "--out", str(tmp_path), "--database-url", database_url]) == 0
    text = (tmp_path / f"{who}-{notice['reminder_id']}-fr-EUR" / "body.txt").read_text(encoding="utf-8")
    # Then it is that letter: registered, its reference, what it demands, the rate, and L-3 listed apart
    assert text.startswith("Lettre recommandée avec accusé de réception")
    assert f"Réf. : {notice['reminder_id']}" in text and "Taux appliqué" in text
    demanded, apart = text.split("Par ailleurs")
    assert "F-0001" in demanded and "F-0003" not in demanded and "F-0003" in apart
    # And once L-1 is paid, there is nothing left to post
    paid = payment("P-1", "1234.56", received_on="2026-04-04", allocations={"L-1": "1234.56"})
    ledger.record([incoming(paid, customer_id=who)])
    engine.dispose()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "again"), "--database-url", database_url]) == 1
    assert "has nothing left to demand (L-1 paid): do not post it" in capsys.readouterr().err


def test_preview_of_an_unknown_reminder_says_so(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["preview", "--tenant", TENANT, "--customer", CUSTOMER, "--reminder", "esc-nope"]
    assert main([*args, "--out", str(tmp_path), "--database-url", database_url]) == 1
    assert f"customer {CUSTOMER} has no reminder 'esc-nope'" in capsys.readouterr().err
