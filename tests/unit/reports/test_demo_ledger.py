"""The demo's ledger, summed here from its events, equals the reports' figures in every currency, and every format
writes the same figures (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from html.parser import HTMLParser

import pytest

from services.cli.demo.generator import generate
from services.ingest.service import Delivery, Ingestor
from services.reports.aging import aged_balance
from services.reports.committee import Timeline, build
from services.reports.dso import Method, PeriodLength, dso_report
from services.reports.formats import read_csv_blocks, render
from services.reports.tables import aged_page, dso_page
from services.reports.walk import end_of, tenant_states, tenant_states_at
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger

SAMPLE = generate(customers=40, months=5, seed=5)
AS_OF = SAMPLE.as_of
EARLIER = date(2026, 9, 30)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    engine = make_engine(ledger_url)
    ledger = Ledger(engine)
    ingestor = Ingestor(ledger)
    messages = list(SAMPLE.messages)
    for start in range(0, len(messages), 500):
        ingestor.process([Delivery(body=m.body, tag=i) for i, m in enumerate(messages[start : start + 500])])
    yield ledger
    engine.dispose()


def independent_net(day: date) -> dict[tuple[str, str, str], Decimal]:
    """(tenant, customer, currency) -> invoiced and not cancelled, less every payment and credit note, from the
    messages the ingest applied that occurred by the end of ``day``: no fold, no allocation."""
    applied = [json.loads(m.body) for m in SAMPLE.messages if m.expect == "applied"]
    applied = [e for e in applied if datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")) <= end_of(day)]
    cancelled = {(e["tenant"], e["data"]["invoice_id"]) for e in applied if e["event_type"] == "invoice.cancelled"}
    net: dict[tuple[str, str, str], Decimal] = {}
    for e in applied:
        data, sign = e["data"], Decimal(0)
        if e["event_type"] == "invoice.issued" and (e["tenant"], data["invoice_id"]) not in cancelled:
            sign = Decimal(1)
        elif e["event_type"] in ("payment.received", "credit_note.issued"):
            sign = Decimal(-1)
        if sign:
            key = (e["tenant"], e["customer_id"], data["currency"])
            net[key] = net.get(key, Decimal(0)) + sign * Decimal(data["amount"])
    return net


def by_currency(net: dict[tuple[str, str, str], Decimal], tenant: str) -> dict[str, Decimal]:
    result: dict[str, Decimal] = {}
    for (t, _, currency), amount in net.items():
        if t == tenant:
            result[currency] = result.get(currency, Decimal(0)) + amount
    return result


@pytest.mark.parametrize("day", [AS_OF, EARLIER])
def test_the_aged_balance_equals_the_events_summed_independently(ledger: Ledger, day: date) -> None:
    expected = independent_net(day)
    for tenant in sorted({t for t, _, _ in expected}):
        # When the aged balance of the tenant is read as of the day
        balance = aged_balance(tenant, tenant_states(ledger, tenant, day), day, "customer")
        # Then each currency's net is what was invoiced less what was paid and credited (no claims: no escalation)
        assert {c: r.net for c, r in balance.totals.items()} == {
            c: v for c, v in by_currency(expected, tenant).items() if v
        }, tenant
        # And each customer's too
        for row in balance.rows:
            assert row.net == expected[(tenant, row.key, row.currency)], (tenant, row.key)
        for total in balance.totals.values():
            assert total.net == total.principal + total.disputed - total.unapplied
            assert total.principal == sum(total.buckets, Decimal(0))
    # And the demo's sample has something in every bucket, disputes and unapplied credit, as of its day
    if day == AS_OF:
        balance = aged_balance("acme-fr", tenant_states(ledger, "acme-fr", day), day, "currency")
        eur = balance.totals["EUR"]
        assert all(b > 0 for b in eur.buckets) and eur.disputed > 0


def independent_buckets(day: date) -> dict[tuple[str, str, str], tuple[list[Decimal], Decimal]]:
    """For the customers who had paid nothing and received no credit note by the end of ``day``: (tenant, customer,
    currency) -> each bucket's invoices by their due date, and the disputed ones apart, from the messages alone."""
    applied = [json.loads(m.body) for m in SAMPLE.messages if m.expect == "applied"]
    applied = [e for e in applied if datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")) <= end_of(day)]
    applied.sort(key=lambda e: e["occurred_at"])
    credited = {
        (e["tenant"], e["customer_id"])
        for e in applied
        if e["event_type"] in ("payment.received", "credit_note.issued")
    }
    cancelled = {(e["tenant"], e["data"]["invoice_id"]) for e in applied if e["event_type"] == "invoice.cancelled"}
    disputed: dict[tuple[str, str], bool] = {}  # the latest dispute statement decides
    for e in applied:
        if e["event_type"] in ("invoice.disputed", "invoice.dispute_resolved"):
            disputed[(e["tenant"], e["data"]["invoice_id"])] = e["event_type"] == "invoice.disputed"
    limits = (0, 30, 60, 90)  # days past due: <= 0 not yet due, <= 30, <= 60, <= 90, more
    result: dict[tuple[str, str, str], tuple[list[Decimal], Decimal]] = {}
    for e in applied:
        data, key = e["data"], (e["tenant"], e["data"].get("invoice_id", ""))
        if e["event_type"] != "invoice.issued" or (e["tenant"], e["customer_id"]) in credited or key in cancelled:
            continue
        row = result.setdefault((e["tenant"], e["customer_id"], data["currency"]), ([Decimal(0)] * 5, Decimal(0)))
        amount = Decimal(data["amount"])
        if disputed.get(key):
            result[(e["tenant"], e["customer_id"], data["currency"])] = (row[0], row[1] + amount)
            continue
        late = (day - date.fromisoformat(data["due_date"])).days
        row[0][sum(1 for limit in limits if late > limit)] += amount
    return result


@pytest.mark.parametrize("day", [AS_OF, EARLIER])
def test_customers_who_paid_nothing_have_each_invoice_in_the_bucket_of_its_due_date(ledger: Ledger, day: date) -> None:
    expected = independent_buckets(day)
    assert len(expected) >= 3  # the sample's customers who never pay, and those with nothing due yet
    for tenant in sorted({t for t, _, _ in expected}):
        balance = aged_balance(tenant, tenant_states(ledger, tenant, day), day, "customer")
        rows = {(tenant, r.key, r.currency): r for r in balance.rows}
        for key, (buckets, disputed) in expected.items():
            if key[0] == tenant:
                assert (rows[key].buckets, rows[key].disputed, rows[key].unapplied) == (
                    buckets,
                    disputed,
                    Decimal(0),
                ), key


class Cells(HTMLParser):
    """The text of every cell of every table of a page, by table key: rows of the body, rows of the foot."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list[list[str]]]] = {}
        self.table: str | None = None
        self.part = "tbody"
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.table = dict(attrs).get("data-table") or ""
            self.tables[self.table] = {"thead": [], "tbody": [], "tfoot": []}
        elif tag in ("thead", "tbody", "tfoot"):
            self.part = tag
        elif tag == "tr" and self.table is not None:
            self.tables[self.table][self.part].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.table is not None:
            self.tables[self.table][self.part][-1].append("".join(self.cell))
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def number(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def parsed_table(text: str) -> list[list[str]]:
    """The totals rows of an aligned table: the lines after its last rule, split on runs of two spaces or more."""
    lines = text.splitlines()
    last_rule = max(i for i, line in enumerate(lines) if re.fullmatch(r"\s*[- ]+", line) and "-" in line)
    return [re.split(r"\s{2,}", line.strip()) for line in lines[last_rule + 1 :] if line.strip()]


def test_table_csv_json_and_html_write_the_same_figures(ledger: Ledger) -> None:
    tenant = "acme-fr"
    page = aged_page(aged_balance(tenant, tenant_states(ledger, tenant, AS_OF), AS_OF, "customer"))
    columns = [c.label for c in page.tables[0].columns]
    money = [c.label for c in page.tables[0].columns if c.kind == "money"]
    # JSON: valid, money as decimal strings
    document = json.loads(render(page, "json"))
    table = document["tables"]["aged_balance"]
    keys = {c["label"]: c["key"] for c in table["columns"]}
    from_json = [{label: row[keys[label]] for label in columns} for row in table["rows"] + table["totals"]]
    # CSV: parses with the csv module, the same rows then the totals
    from_csv = list(csv.DictReader(io.StringIO(render(page, "csv"))))
    # HTML: the cells of the page's table
    cells = Cells()
    cells.feed(render(page, "html"))
    html = cells.tables["aged_balance"]
    assert html["thead"][0] == columns
    from_html = [dict(zip(columns, row, strict=True)) for row in html["tbody"] + html["tfoot"]]
    assert len(from_json) == len(from_csv) == len(from_html) > 2
    for j, c, h in zip(from_json, from_csv, from_html, strict=True):
        assert j["customer"] == c["customer"] == h["customer"]
        assert j["name"] == c["name"] == h["name"]
        for label in money:
            assert Decimal(j[label]) == Decimal(c[label]) == number(h[label]), (j["customer"], label)
    # The aligned table: its totals rows, one per currency
    from_table = parsed_table(render(page, "table"))
    totals = [row for row in from_json if row["customer"] == "total"]
    assert len(from_table) == len(totals) == 2  # EUR and USD
    for text_row, json_row in zip(from_table, totals, strict=True):
        # no name in a totals row: the customer column then the currency
        assert text_row[0] == "total" and text_row[2] == json_row["currency"]
        assert [number(t) for t in text_row[3 : 3 + len(money)]] == [Decimal(json_row[m]) for m in money]


def test_the_committee_pack_writes_the_same_figures_in_csv_json_and_html(ledger: Ledger) -> None:
    tenant = "acme-fr"
    timeline = Timeline.of(AS_OF, 4)
    histories = [states for _, states in tenant_states_at(ledger, tenant, timeline.days)]
    report = build(tenant, timeline, histories)
    document = json.loads(render(report, "json"))
    blocks = read_csv_blocks(render(report, "csv"))
    cells = Cells()
    cells.feed(render(report, "html"))
    assert set(document["tables"]) == set(blocks) >= {"aged_balance", "aging_trend", "dso_trend", "top_overdue"}
    # (the page says "None." for an empty table: the demo ran no escalation, so no claims nor hand-overs here)
    assert set(cells.tables) == {k for k, t in document["tables"].items() if t["rows"] or t["totals"]}
    for key, table in document["tables"].items():
        labels = [c["label"] for c in table["columns"]]
        rows = table["rows"] + table["totals"]
        html = cells.tables.get(key, {"tbody": [], "tfoot": []})
        html_rows = html["tbody"] + html["tfoot"]
        assert len(rows) == len(blocks[key]) == len(html_rows), key
        for row, csv_row, html_row in zip(rows, blocks[key], html_rows, strict=True):
            for column, label, html_cell in zip(table["columns"], labels, html_row, strict=True):
                value = row[column["key"]]
                shown = "" if value is None else str(value)
                if column["kind"] == "money" and value is not None:
                    assert Decimal(value) == Decimal(csv_row[label]) == number(html_cell), (key, label)
                elif column["kind"] == "days":
                    assert (shown or "n/a") == csv_row[label] == html_cell, (key, label)
                else:
                    assert shown == csv_row[label].replace(",", "") == html_cell.replace(",", ""), (key, label)
    # The trend holds one row per month end and currency, and its last month is the aged balance of the day
    trend = [r for r in document["tables"]["aging_trend"]["rows"] if r["month_end"] == AS_OF.isoformat()]
    assert {r["key"]: r["net"] for r in trend} == {
        r["key"]: r["net"] for r in document["tables"]["aged_balance"]["totals"]
    }
    expected = by_currency(independent_net(AS_OF), tenant)
    assert {r["key"]: Decimal(r["net"]) for r in trend} == {c: v for c, v in expected.items() if v}
    previous = [r for r in document["tables"]["aging_trend"]["rows"] if r["month_end"] == "2026-09-30"]
    earlier = by_currency(independent_net(date(2026, 9, 30)), tenant)
    assert {r["key"]: Decimal(r["net"]) for r in previous} == {c: v for c, v in earlier.items() if v}


@pytest.mark.parametrize("method", ["simple", "countback"])
def test_the_dso_is_the_same_in_table_csv_json_and_html(ledger: Ledger, method: Method) -> None:
    tenant = "acme-fr"
    report = dso_report(
        tenant, tenant_states(ledger, tenant, AS_OF), AS_OF, PeriodLength.parse("3m"), method, "segment"
    )
    page = dso_page(report)
    labels = [c.label for c in page.tables[0].columns]
    table = json.loads(render(page, "json"))["tables"]["dso"]
    from_json = [[row[c["key"]] for c in table["columns"]] for row in table["rows"] + table["totals"]]
    from_csv = list(csv.reader(io.StringIO(render(page, "csv"))))
    cells = Cells()
    cells.feed(render(page, "html"))
    from_html = cells.tables["dso"]["tbody"] + cells.tables["dso"]["tfoot"]
    text = render(page, "table").splitlines()
    header = next(i for i, line in enumerate(text) if line.strip().startswith("segment"))
    from_table = [re.split(r"\s{2,}", line.strip()) for line in text[header + 2 :] if line.strip() and "--" not in line]
    assert from_csv[0] == cells.tables["dso"]["thead"][0] == labels
    assert (
        len(from_json) == len(from_csv) - 1 == len(from_html) == len(from_table) == len(report.rows) + 2
    )  # the totals of EUR and USD last
    for j, c, h, t in zip(from_json, from_csv[1:], from_html, from_table, strict=True):
        segment, currency, receivables, sales, days, dso, customers = j
        assert [segment, currency] == c[:2] == h[:2] == t[:2]
        assert Decimal(receivables) == Decimal(c[2]) == number(h[2]) == number(t[2])
        assert Decimal(sales) == Decimal(c[3]) == number(h[3]) == number(t[3])
        assert str(days) == c[4] == h[4] == t[4] == "92"  # 21 August to 20 November
        assert (dso or "n/a") == c[5] == h[5] == t[5]
        assert str(customers) == c[6] == h[6] == t[6]
    # And the tenant's line per currency is receivables / sales x days, as the module says (simple)
    if method == "simple":
        for row in from_json[-2:]:
            expected = (Decimal(row[2]) / Decimal(row[3]) * 92).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
            assert Decimal(row[5]) == expected
