"""The four formats: CSV the csv module reads, valid JSON, an HTML page that is self-contained and shows ERP text as
text (a customer named like a script stays a name)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date
from decimal import Decimal

from services.reports.aging import aged_balance
from services.reports.committee import Timeline, build
from services.reports.formats import money, render
from services.reports.tables import aged_page
from shared.ledger.state import CustomerState
from tests.factories import TENANT, customer, dispute, fold, invoice, payment

AS_OF = date(2026, 11, 30)
HOSTILE = "<script>alert(1)</script>"


def hostile_states() -> list[CustomerState]:
    first = fold(
        [
            customer(HOSTILE, segment="sme"),
            invoice("I-1", "1234.50", issue_date="2026-08-01", due_date="2026-08-31"),
            invoice("I-2", "99.99", issue_date="2026-11-01"),
            dispute("I-2", reason='<img src=x onerror="alert(2)">'),
            payment("P-1", "0.50", received_on="2026-11-05"),
        ]
    )
    second = fold(
        [customer('Quincaillerie "L\'Étoile" & Fils'), invoice("J-1", "10.00", currency="USD")], customer_id="C-2"
    )
    return [first, second]


def test_csv_parses_and_json_is_valid_with_money_as_decimal_strings() -> None:
    page = aged_page(aged_balance(TENANT, hostile_states(), AS_OF, "customer"))
    rows = list(csv.DictReader(io.StringIO(render(page, "csv"))))
    assert [r["customer"] for r in rows] == ["C-0042", "C-2", "total", "total"]
    assert rows[0]["name"] == HOSTILE  # data, as it was given
    # 30 + 31 + 30 = 91 days late, less the 0.50 paid; no thousands separator in CSV
    assert rows[0]["> 90 days"] == "1234.00"
    document = json.loads(render(page, "json"))
    (eur_total, usd_total) = document["tables"]["aged_balance"]["totals"]
    assert (eur_total["currency"], eur_total["net"], eur_total["disputed"]) == ("EUR", "1333.99", "99.99")
    assert (usd_total["currency"], usd_total["net"]) == ("USD", "10.00")


def test_html_escapes_every_erp_text_and_loads_nothing() -> None:
    states = hostile_states()
    pages = [
        render(aged_page(aged_balance(TENANT, states, AS_OF, "customer")), "html"),
        render(build(TENANT, Timeline.of(AS_OF, 3), [[s, s, s, s] for s in states]), "html"),
    ]
    for html in pages:
        # the names and the dispute's reason are text, escaped
        assert "<script" not in html.lower()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<img" not in html
        assert "Quincaillerie &#34;L&#39;Étoile&#34; &amp; Fils" in html
        # one self-contained page: no script, no external resource of any kind
        assert not re.search(r"\s(src|href|action)=\"", html)  # (an escaped name cannot write a quote)
        assert "http://" not in html and "https://" not in html and "url(" not in html
        assert "@page { size: A4 landscape" in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in pages[1]  # the dispute's reason, by reason
    assert pages[1].count("<svg") == 4  # aging and DSO, for EUR and USD


def test_money_keeps_its_currency_s_decimals_and_every_digit_it_holds() -> None:
    assert money(Decimal("1234.5"), "EUR") == "1,234.50"
    assert money(Decimal("1234.567"), "EUR") == "1,234.567"  # never rounded away
    assert money(Decimal("1234"), "JPY") == "1,234"
    assert money(Decimal("-5"), "EUR", grouped=False) == "-5.00"
