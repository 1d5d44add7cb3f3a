"""The aged balance and the DSO as :class:`~services.reports.formats.Report` tables, for every format alike."""

from __future__ import annotations

from services.reports.aging import BUCKET_KEYS, BUCKETS, AgedBalance, AgedRow
from services.reports.dso import DsoReport, DsoRow
from services.reports.formats import Cell, Column, Report, Table

AGED_MEANING = [
    "principal by days past due (as of the end of the day); disputed invoices apart, not in the buckets",
    "net = principal + disputed - unapplied credit; interest and fees are claims owed besides principal",
    "amounts per currency, never summed across currencies",
]


def aged_columns(by: str) -> list[Column]:
    first = {"customer": "customer", "segment": "segment", "currency": "currency"}[by]
    columns = [Column("key", first)]
    if by == "customer":
        columns.append(Column("name", "name"))
    if by != "currency":
        columns.append(Column("currency", "currency"))
    columns += [Column(key, label, "money") for key, label in zip(BUCKET_KEYS, BUCKETS, strict=True)]
    columns += [
        Column("principal", "principal", "money"),
        Column("disputed", "disputed", "money"),
        Column("unapplied", "unapplied credit", "money"),
        Column("net", "net", "money"),
        Column("interest", "interest", "money"),
        Column("fees", "fees", "money"),
        Column("customers", "customers", "count"),
    ]
    return columns


def aged_cells(row: AgedRow, key: str | None = None) -> dict[str, Cell]:
    cells: dict[str, Cell] = {"key": key or row.key, "name": row.name, "currency": row.currency}
    cells.update(zip(BUCKET_KEYS, row.buckets, strict=True))
    cells.update(
        principal=row.principal,
        disputed=row.disputed,
        unapplied=row.unapplied,
        net=row.net,
        interest=row.interest,
        fees=row.fees,
        customers=len(row.customers),
    )
    return cells


def aged_table(balance: AgedBalance, key: str = "aged_balance", title: str = "") -> Table:
    by_currency = balance.by == "currency"
    return Table(
        key,
        title or f"Aged balance by {balance.by}",
        aged_columns(balance.by),
        [aged_cells(row) for row in balance.rows] if not by_currency else [],
        [aged_cells(balance.totals[c], c if by_currency else "total") for c in balance.currencies()],
    )


def aged_page(balance: AgedBalance) -> Report:
    return Report("aged_balance", "Aged balance", balance.tenant, balance.as_of, [aged_table(balance)], AGED_MEANING)


def dso_columns(by: str) -> list[Column]:
    columns = [Column("key", by)]
    if by == "customer":
        columns.append(Column("name", "name"))
    return [
        *columns,
        Column("currency", "currency"),
        Column("receivables", "receivables", "money"),
        Column("sales", "sales of the period", "money"),
        Column("days", "days", "count"),
        Column("dso", "DSO (days)", "days"),
        Column("customers", "customers", "count"),
    ]


def dso_cells(report: DsoReport, row: DsoRow, key: str | None = None) -> dict[str, Cell]:
    return {
        "key": key or row.key,
        "name": row.name,
        "currency": row.currency,
        "receivables": row.receivables,
        "sales": row.sales,
        "days": report.period.days,
        "dso": report.dso(row),
        "customers": len(row.customers),
    }


def dso_page(report: DsoReport) -> Report:
    period = report.period
    table = Table(
        "dso",
        f"DSO, {report.method} method, {report.length} ({period.first} to {period.last})",
        dso_columns(report.by),
        [dso_cells(report, row) for row in report.rows],
        [] if report.by == "tenant" else [dso_cells(report, row, "total") for _, row in sorted(report.totals.items())],
    )
    lines = [
        "receivables = open principal at the end of the day, net of unapplied credit (claims excluded)",
        "sales = invoices issued in the period (tax included, not cancelled) less credit notes issued in it",
        SIMPLE if report.method == "simple" else COUNTBACK,
    ]
    return Report("dso", "Days sales outstanding", report.tenant, report.as_of, [table], lines)


SIMPLE = "simple: DSO = receivables / sales of the period x days of the period; no sales: n/a"
COUNTBACK = (
    "countback: walk back month by month from the day, taking each month's sales off the receivables and counting "
    "its days; the month that covers the rest counts remaining / its sales x its days; '>=' when the period's "
    "sales do not cover the receivables; no sales: n/a"
)
