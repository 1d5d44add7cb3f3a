"""``relance letters``: the day's print batch, the listing, a letter's PDF, and its posting, delivery and return, on
letters the notifier rendered (SQLite here, PostgreSQL too under integration)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader

from services.cli import main
from shared.config import load_settings
from shared.ledger import letters
from shared.ledger.db import make_engine
from shared.ledger.show import render_stream
from shared.ledger.tasks import task_views
from tests.factories import TENANT, customer, invoice
from tests.unit.notifier.test_letter_pdf import ADDRESS, NOTICE_DAY
from tests.unit.notifier.test_service import DUE, Desk

CUSTOMERS = ("C-1", "C-2")
POSTED_ON = NOTICE_DAY.isoformat()


@pytest.fixture
def desk(ledger_url: str, tmp_path: Path) -> Iterator[Desk]:
    """Given two customers whose formal notices the notifier rendered on NOTICE_DAY."""
    rates = tmp_path / "rates.csv"
    rates.write_text("2026-07-01,2.15\n", encoding="utf-8")
    engine = make_engine(ledger_url)
    desk = Desk(engine, load_settings(database_url=ledger_url, mail_from="ar@example.com", rates_file=rates))
    for n, customer_id in enumerate(CUSTOMERS):
        desk.erp(
            customer(f"Client {n}", postal_address=ADDRESS),
            invoice(f"INV-{n}", "1500.00", due_date=DUE),
            customer_id=customer_id,
        )
        desk.handle(desk.escalate(NOTICE_DAY, customer_id)[-1])
    yield desk
    engine.dispose()


def run(ledger_url: str, *args: str) -> int:
    return main([*args, "--database-url", ledger_url])


def letter_of(desk: Desk, customer_id: str) -> letters.StoredLetter:
    [found] = letters.listed(desk.engine, TENANT, customer_id=customer_id)
    kept = letters.get(desk.engine, TENANT, found.letter_id)
    assert kept is not None
    return kept


def test_the_print_batch_is_an_index_then_each_letter_in_order_and_only_once(
    desk: Desk, ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "batch.pdf"
    # When the day's batch is made
    assert run(ledger_url, "letters", "batch", "--tenant", TENANT, "--date", POSTED_ON, "--out", str(out)) == 0
    said = capsys.readouterr()
    assert "2 letter(s)" in said.out and "2/2 letters in the batch" in said.err
    # Then it is an index page, then each letter's pages in the index's order, unchanged
    batch = PdfReader(io.BytesIO(out.read_bytes()))
    first, second = (letter_of(desk, c) for c in CUSTOMERS)
    ordered = sorted([first, second], key=lambda letter: (letter.created_at, letter.customer_id, letter.letter_id))
    assert len(batch.pages) == 1 + first.pages + second.pages
    index = batch.pages[0].extract_text()
    assert index.index(ordered[0].letter_id) < index.index(ordered[1].letter_id)
    assert f"{ordered[1].letter_id} {TENANT} {ordered[1].customer_id} formal_notice {ordered[1].pages} " in " ".join(
        index.split()
    )
    page = 1
    for letter in ordered:
        alone = PdfReader(io.BytesIO(letter.pdf))
        for n, original in enumerate(alone.pages):
            assert batch.pages[page + n].extract_text() == original.extract_text()
        page += len(alone.pages)
    # And each letter is recorded as handed to print, with the batch's id and hash
    for customer_id in CUSTOMERS:
        [printed] = desk.data("letter.handed_to_print", customer_id)
        assert printed["printed_on"] == POSTED_ON and printed["batch_id"].startswith("B-")
        assert printed["batch_sha256"] and printed["batch_sha256"] in said.out
        assert desk.ledger.state(TENANT, customer_id).letters[printed["letter_id"]]["status"] == "printed"
    # When it is run again, nothing new is batched; with --again, the same letters are
    again = tmp_path / "again.pdf"
    assert run(ledger_url, "letters", "batch", "--tenant", TENANT, "--date", POSTED_ON, "--out", str(again)) == 0
    assert "no letter to print" in capsys.readouterr().out and not again.exists()
    assert len(desk.data("letter.handed_to_print", CUSTOMERS[0])) == 1
    assert run(ledger_url, "letters", "batch", "--date", POSTED_ON, "--out", str(again), "--again") == 0
    assert len(PdfReader(str(again)).pages) == len(batch.pages)


def test_show_writes_the_stored_bytes_checked_against_the_log(
    desk: Desk, ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    letter = letter_of(desk, CUSTOMERS[0])
    out = tmp_path / "letter.pdf"
    assert run(ledger_url, "letters", "show", "--tenant", TENANT, "--letter", letter.letter_id, "--out", str(out)) == 0
    assert out.read_bytes() == letter.pdf and "matches the log" in capsys.readouterr().out
    # Another tenant's id, or an unknown one, is not found
    assert run(ledger_url, "letters", "show", "--tenant", "other", "--letter", letter.letter_id, "--out", str(out)) == 1
    assert "tenant other has no letter" in capsys.readouterr().err


def test_posted_delivered_returned_record_the_proof_and_refuse_what_makes_no_sense(
    desk: Desk, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    letter = letter_of(desk, CUSTOMERS[0])
    ident = ["--tenant", TENANT, "--letter", letter.letter_id]
    # Delivered before it was posted: refused
    assert run(ledger_url, "letters", "delivered", *ident, "--on", POSTED_ON, "--author", "claire") == 1
    assert "was not posted yet" in capsys.readouterr().err
    # Posted, with its tracking number
    posting = ["--posted-on", POSTED_ON, "--tracking-number", "1A 234 567 8901 2", "--carrier", "La Poste"]
    assert run(ledger_url, "letters", "posted", *ident, *posting, "--author", "claire") == 0
    assert "tracking number 1A 234 567 8901 2" in capsys.readouterr().out
    [posted] = desk.data("letter.posted", CUSTOMERS[0])
    assert (posted["author"], posted["tracking_number"], posted["carrier"]) == (
        "claire",
        "1A 234 567 8901 2",
        "La Poste",
    )
    [event] = [e for e in desk.ledger.read_stream(TENANT, CUSTOMERS[0]) if e.event_type == "letter.posted"]
    assert (event.metadata["source"], event.metadata["author"]) == ("cli", "claire")
    # The same command again records nothing more; a second, different posting is refused
    assert run(ledger_url, "letters", "posted", *ident, *posting, "--author", "claire") == 0
    assert "nothing more recorded" in capsys.readouterr().out
    assert run(ledger_url, "letters", "posted", *ident, "--posted-on", POSTED_ON, "--author", "marc") == 1
    assert "already posted" in capsys.readouterr().err
    # Posting closed the letter's send_letter task, as "letter posted"
    state = desk.ledger.state(TENANT, CUSTOMERS[0])
    task_id = state.letters[letter.letter_id]["task_id"]
    [view] = [view for view in task_views(state, NOTICE_DAY) if view.task_id == task_id]
    assert (view.status, view.cause) == ("done", "letter posted by claire")
    # Delivered before its posting: refused; on the day: recorded
    before = "2026-11-29"
    assert run(ledger_url, "letters", "delivered", *ident, "--on", before, "--author", "claire") == 1
    assert "it was posted on" in capsys.readouterr().err
    assert run(ledger_url, "letters", "delivered", *ident, "--on", POSTED_ON, "--author", "claire") == 0
    # Returned after delivery: refused
    returning = ["--on", POSTED_ON, "--reason", "unknown at this address", "--author", "claire"]
    assert run(ledger_url, "letters", "returned", *ident, *returning) == 1
    assert "already recorded delivered" in capsys.readouterr().err
    # And ledger show and the listing show the proof
    state = desk.ledger.state(TENANT, CUSTOMERS[0])
    shown = render_stream(desk.ledger.read_stream(TENANT, CUSTOMERS[0]), state)
    assert f"posted on {POSTED_ON}, tracking 1A 234 567 8901 2" in shown and f"delivered on {POSTED_ON}" in shown
    assert run(ledger_url, "letters", "list", "--tenant", TENANT, "--status", "delivered") == 0
    listed = capsys.readouterr().out
    assert letter.letter_id in listed and letter_of(desk, CUSTOMERS[1]).letter_id not in listed


def test_an_unknown_letter_and_a_returned_letter(
    desk: Desk, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--tenant", TENANT, "--letter", "L-NOPE", "--posted-on", POSTED_ON, "--author", "claire"]
    assert run(ledger_url, "letters", "posted", *args) == 1
    assert "has no letter 'L-NOPE'" in capsys.readouterr().err
    letter = letter_of(desk, CUSTOMERS[1])
    ident = ["--tenant", TENANT, "--letter", letter.letter_id, "--author", "marc"]
    assert run(ledger_url, "letters", "posted", *ident, "--posted-on", POSTED_ON) == 0
    assert run(ledger_url, "letters", "returned", *ident, "--on", POSTED_ON, "--reason", "not collected") == 0
    folded = desk.ledger.state(TENANT, CUSTOMERS[1]).letters[letter.letter_id]
    assert (folded["status"], folded["return_reason"]) == ("returned", "not collected")
