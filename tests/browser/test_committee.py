"""The committee pack's page in a real browser: self-contained (nothing fetched, no script), ERP text inert, its
charts drawn, no wider than A4 landscape, and printable to PDF. Screenshots land in .browser-screenshots/."""

from __future__ import annotations

import io
from pathlib import Path

from playwright.sync_api import Page, ViewportSize
from pypdf import PdfReader

from services.cli.demo.generator import generate
from services.ingest.service import Delivery, Ingestor
from services.reports.committee import committee_pack
from services.reports.formats import write_committee
from shared.ledger.db import make_engine
from shared.ledger.migrate import upgrade
from shared.ledger.store import Ledger
from tests.browser.conftest import HOSTILE_NAME, Shots, envelope
from tests.factories import T0

A4_LANDSCAPE = ViewportSize(width=1123, height=794)  # CSS pixels at 96 dpi


def pack(folder: Path) -> Path:
    """The demo's sample (ingested, no escalation) plus a customer with a hostile name, as the pack of acme-fr."""
    url = f"sqlite:///{folder / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        ledger = Ledger(engine)
        sample = generate(customers=40, months=6, seed=5)
        bodies = [m.body for m in sample.messages]
        hostile = {"name": HOSTILE_NAME, "emails": ["x@example.org"], "language": "fr", "segment": "sme"}
        bodies.append(envelope("acme-fr", "C-HOSTILE", "hostile-1", "customer.upserted", hostile, T0))
        issued = {"invoice_id": "H-1", "number": "<b>H-1</b>", "issue_date": "2026-08-01", "due_date": "2026-08-31"}
        bodies.append(
            envelope(
                "acme-fr",
                "C-HOSTILE",
                "hostile-2",
                "invoice.issued",
                {**issued, "currency": "EUR", "amount": "99999.00"},
                T0,
            )
        )
        ingestor = Ingestor(ledger)
        for start in range(0, len(bodies), 500):
            ingestor.process([Delivery(body=b, tag=i) for i, b in enumerate(bodies[start : start + 500])])
        report = committee_pack(ledger, "acme-fr", sample.as_of, 6)
    finally:
        engine.dispose()
    (html,) = write_committee(report, folder / "pack", ["html"])
    return html


def test_the_committee_page_is_self_contained_inert_and_fits_a4_landscape(
    page: Page, shot: Shots, tmp_path: Path
) -> None:
    html = pack(tmp_path)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.set_viewport_size(A4_LANDSCAPE)
    page.goto(html.as_uri())
    shot("committee-a4-landscape")
    # Nothing but the page itself is fetched, and nothing runs in it
    assert requested == [html.as_uri()]
    assert errors == []
    assert page.locator("script").count() == 0
    assert page.evaluate("() => window.__pwned === undefined")
    # The hostile name is shown as text, in the top overdue accounts
    assert page.locator("#top_overdue td", has_text="<script>window.__pwned=1</script>").count() == 1
    assert page.locator("#top_overdue b").count() == 0
    # The charts are drawn: the aging trend as stacked bars, DSO as lines, for EUR and USD
    assert page.locator("svg").count() == 4
    assert page.locator("svg rect").count() > 10
    assert page.locator("svg polyline").count() >= 2
    # Nothing is wider than an A4 landscape page
    assert page.evaluate("() => document.documentElement.scrollWidth") <= A4_LANDSCAPE["width"]
    # And it prints: a PDF on A4 landscape pages
    pdf = PdfReader(io.BytesIO(page.pdf(format="A4", landscape=True, print_background=True)))
    assert len(pdf.pages) >= 2
    box = pdf.pages[0].mediabox
    assert float(box.width) > float(box.height)  # landscape
    assert "Credit committee pack" in pdf.pages[0].extract_text()
    page.set_viewport_size(ViewportSize(width=1280, height=900))
    shot("committee-wide")
