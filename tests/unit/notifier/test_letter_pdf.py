"""A reminder by letter becomes a stored PDF with its hash in the log: read back with pypdf, redelivered, refused
without an address, and hostile ERP text kept as text. On SQLite and PostgreSQL (``ledger_url``)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from services.escalation.agenda import build_agenda
from services.notifier import delivery
from services.notifier.letters import LettersUnavailable, check_libraries
from shared.config import load_settings
from shared.ledger import letters
from shared.ledger.db import make_engine
from shared.ledger.schema import letters as letters_table
from tests.factories import CUSTOMER, TENANT, customer, invoice
from tests.unit.notifier.test_service import DUE, Desk

ADDRESS: dict[str, Any] = {
    "lines": ["Boulangeries Martin SAS", "Service comptabilité", "12 rue des Lilas"],
    "postal_code": "69003",
    "city": "Lyon",
    "country": "FR",
}
NOTICE_DAY = DUE + timedelta(days=31)


@pytest.fixture
def desk(ledger_url: str, tmp_path: Path) -> Iterator[Desk]:
    rates = tmp_path / "rates.csv"
    rates.write_text("2026-07-01,2.15\n", encoding="utf-8")
    engine = make_engine(ledger_url)
    yield Desk(engine, load_settings(database_url=ledger_url, mail_from="ar@example.com", rates_file=rates))
    engine.dispose()


def formal_notice(desk: Desk, address: dict[str, Any] | None = ADDRESS, **profile: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {**profile} if address is None else {**profile, "postal_address": address}
    name = str(extra.pop("name", "Boulangeries Martin SAS"))
    desk.erp(
        customer(name, **extra),
        invoice("INV-1", "2000.00", due_date=DUE, number="F-2026-0042"),
        invoice("INV-2", "350.50", due_date=DUE, number="F-2026-0043"),
    )
    notice = desk.escalate(NOTICE_DAY)[-1]
    assert (notice["level"], notice["channel"]) == ("formal_notice", "letter")
    return notice


def stored_rows(desk: Desk) -> int:
    with desk.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(letters_table)).scalar_one())


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_a_formal_notice_is_one_stored_pdf_whose_hash_the_log_holds(desk: Desk) -> None:
    # Given a customer with a postal address and a formal notice decided
    notice = formal_notice(desk)
    # When the notifier handles the command
    assert desk.handle(notice).status == "sent"  # its e-mail copy
    # Then one letter is stored, and letter.rendered holds its SHA-256 and page count
    [rendered] = desk.data("letter.rendered")
    kept = letters.get(desk.engine, TENANT, rendered["letter_id"])
    assert kept is not None and kept.customer_id == CUSTOMER and kept.kind == "reminder"
    assert rendered["sha256"] == hashlib.sha256(kept.pdf).hexdigest() == kept.sha256
    reader = PdfReader(io.BytesIO(kept.pdf))
    assert rendered["pages"] == kept.pages == len(reader.pages) >= 1
    assert reader.pages[0].mediabox.width == pytest.approx(595.28, abs=1)  # A4
    # And the letter_requested fact is in the same stream; its task names the letter
    [requested] = desk.data("reminder.letter_requested")
    assert requested.get("refusal") is None and "sha256" not in requested  # an e-mail's hash, never the PDF's
    [task] = [t for t in desk.data("task.created") if t["kind"] == "send_letter"]
    assert kept.letter_id in task["note"] and f"relance letters show --tenant {TENANT} --letter" in task["note"]
    # And the folded state knows the letter as rendered
    folded = desk.ledger.state(TENANT, CUSTOMER).letters[kept.letter_id]
    assert (folded["status"], folded["sha256"], folded["level"]) == ("rendered", kept.sha256, "formal_notice")


def test_the_pdf_states_the_address_the_invoices_the_amounts_and_the_legal_mentions(desk: Desk) -> None:
    desk.handle(formal_notice(desk))
    [rendered] = desk.data("letter.rendered")
    kept = letters.get(desk.engine, TENANT, rendered["letter_id"])
    assert kept is not None
    text = " ".join(pdf_text(kept.pdf).split())
    for line in (*ADDRESS["lines"], "69003 Lyon"):
        assert line in text, line
    assert "F-2026-0042" in text and "F-2026-0043" in text, text
    assert "2 000,00 €" in text.replace("\u202f", " ").replace("\xa0", " ")
    assert "Lettre recommandée avec accusé de réception" in text
    assert "mise en demeure" in text.lower() and "L441-10" in text and "D441-5" in text and "1344" in text
    assert "Objet : Mise en demeure" in text
    assert kept.letter_id in text  # on every page's foot and in the reference line
    assert "FRANCE" not in text  # a letter within the sender's country prints no country


def test_an_english_customer_gets_an_english_letter(desk: Desk) -> None:
    abroad = {**ADDRESS, "country": "GB", "postal_code": "SW1A 1AA", "city": "London"}
    desk.handle(formal_notice(desk, abroad, language="en"))
    [rendered] = desk.data("letter.rendered")
    kept = letters.get(desk.engine, TENANT, rendered["letter_id"])
    assert kept is not None
    text = " ".join(pdf_text(kept.pdf).split())
    assert "Subject:" in text and "formal notice" in text.lower()
    assert "LONDON SW1A 1AA" in text and "UNITED KINGDOM" in text  # the post town, then the postcode; abroad


def test_a_redelivered_command_renders_and_stores_nothing_new(desk: Desk) -> None:
    notice = formal_notice(desk)
    desk.handle(notice)
    version = desk.ledger.state(TENANT, CUSTOMER).version
    # When the same command comes again
    assert desk.handle(notice).status.startswith("already_")
    # Then nothing more is stored or recorded
    assert stored_rows(desk) == 1
    assert len(desk.data("letter.rendered")) == 1
    assert desk.ledger.state(TENANT, CUSTOMER).version == version


def test_a_letter_stored_before_a_crash_is_the_one_recorded_when_the_command_comes_again(desk: Desk) -> None:
    # Given a letter stored for the command whose facts never committed (the worker died between)
    notice = formal_notice(desk)
    first = letters.store(
        desk.engine,
        tenant=TENANT,
        customer_id=CUSTOMER,
        command_id=notice["command_id"],
        kind="reminder",
        pdf=b"%PDF-1.7 the first rendering",
        pages=1,
    )
    # When the command is handled
    desk.handle(notice)
    # Then the first bytes stay, and the log names their hash
    [rendered] = desk.data("letter.rendered")
    assert (rendered["letter_id"], rendered["sha256"]) == (first.letter_id, first.sha256)
    assert stored_rows(desk) == 1


def test_no_postal_address_means_no_pdf_and_an_agenda_item_saying_so(desk: Desk) -> None:
    # Given a customer the ERP gave no postal address
    notice = formal_notice(desk, address=None)
    # When the formal notice is handled
    desk.handle(notice)
    # Then no PDF, and the fact says why
    assert stored_rows(desk) == 0 and desk.data("letter.rendered") == []
    [requested] = desk.data("reminder.letter_requested")
    assert requested["refusal"] == delivery.NO_POSTAL_ADDRESS
    # And the agenda shows the missing address with a clear title
    [task] = [t for t in desk.data("task.created") if t["kind"] == delivery.POSTAL_ADDRESS_MISSING]
    assert "no postal address" in task["note"] and "postal_address" in task["note"]
    state = desk.ledger.state(TENANT, CUSTOMER)
    [item] = [i for i in build_agenda([state], NOTICE_DAY) if i.kind == delivery.POSTAL_ADDRESS_MISSING]
    assert "no postal address" in item.title


def test_hostile_erp_text_is_text_in_the_pdf_and_stays_in_its_line(desk: Desk) -> None:
    # Given an address with markup, a line at the contract's limit and right-to-left overrides
    long_line = "Très longue ligne " + "x" * 82
    hostile = {
        **ADDRESS,
        "lines": ["<script>alert(1)</script> & <b>Martin</b>", long_line, "\u202eevil\u202c 12 rue des Lilas"],
    }
    desk.handle(formal_notice(desk, hostile, name="<img src=x onerror=alert(1)> Martin"))
    [rendered] = desk.data("letter.rendered")
    kept = letters.get(desk.engine, TENANT, rendered["letter_id"])
    assert kept is not None
    text = pdf_text(kept.pdf)
    flat = " ".join(text.split())
    # Then the markup is printed as the characters it is, not interpreted
    assert "<script>alert(1)</script> & <b>Martin</b>" in flat
    assert "<img src=x onerror=alert(1)> Martin" in flat
    # And the long line is not cut (it fits the window, wrapped), and the override does not reach the next line
    assert "x" * 40 in flat.replace(" ", "")
    assert "69003 Lyon" in flat
    assert b"<script>" not in kept.pdf  # no HTML inside the PDF's bytes: text only


def test_missing_libraries_stop_the_notifier_naming_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.notifier import letters as rendering

    def missing() -> Any:
        raise OSError("cannot load library 'libpango-1.0-0': libpango-1.0-0: cannot open shared object file")

    monkeypatch.setattr(rendering, "_weasyprint", missing)
    with pytest.raises(LettersUnavailable) as caught:
        check_libraries()
    assert "libpango-1.0-0 libpangoft2-1.0-0" in str(caught.value) and "fonts-dejavu-core" in str(caught.value)
    assert "apt-get install" in str(caught.value)


def test_the_fold_closes_the_task_the_notifier_left_with_the_letter() -> None:
    command_id = "esc-0123"
    assert letters.task_id(command_id) == delivery.fact_id(command_id, "task/letter")
